"""Model folders: ``models/infiniteyou/`` (ours) and ``models/infinite_you/`` (the official pack's).

Both are registered under one ComfyUI folder name, so users keep their files where they are.
"""
from __future__ import annotations

import os

from . import host
from .names import ModelNameError, contained_join, inside

FOLDER_NAME = "infiniteyou"
"""The ComfyUI folder name the pack looks models up in (``folder_paths.get_full_path``)."""
SUBFOLDERS = ("infiniteyou", "infinite_you")
"""Folders under ``models/`` that are searched, in order: ours, then the official pack's."""
MODEL_EXTENSIONS = {".safetensors", ".sft", ".bin", ".pt", ".pth", ".json"}
DIFFUSERS_FOLDER = "InfuseNetModel"


def register_model_folders() -> list[str]:
    """Register ``models/infiniteyou`` and ``models/infinite_you`` under :data:`FOLDER_NAME`.

    Idempotent. Folders added by the user in ``extra_model_paths.yaml`` under ``infiniteyou`` stay.
    Returns the folder list now registered.
    """
    for sub in SUBFOLDERS:
        host.add_model_folder(FOLDER_NAME, os.path.join(host.models_dir(), sub))
    return list(add_extensions(FOLDER_NAME, MODEL_EXTENSIONS))


def add_extensions(folder_name: str, extensions) -> list[str]:
    """Give ``folder_name`` its own extension set holding ``extensions`` too; returns its folders.

    The registered collection is never changed in place: another pack may have registered a list, or
    ComfyUI's shared ``supported_pt_extensions`` set, which every other folder uses too."""
    paths, current = host.model_folder_entry(folder_name)
    current = set(current or ())
    if not set(extensions) <= current:
        host.set_model_folder_entry(folder_name, paths, current | set(extensions))
    return paths


def _is_projection_name(name: str) -> bool:
    base = os.path.basename(name).lower()
    return "image_proj" in base or "resampler" in base or "id_proj" in base


def list_infusenet_models() -> list[str]:
    """InfuseNet choices: single weight files and ``.../InfuseNetModel`` diffusers folders.

    Names are relative to the registered folders, with ``/`` separators, like ComfyUI's lists.
    """
    names = set()
    for name in host.model_filenames(FOLDER_NAME):
        norm = name.replace(os.sep, "/")
        parts = norm.split("/")
        if DIFFUSERS_FOLDER in parts[:-1]:
            names.add("/".join(parts[: parts.index(DIFFUSERS_FOLDER) + 1]))
        elif norm.endswith((".safetensors", ".sft")) and not _is_projection_name(norm):
            names.add(norm)
    return sorted(names)


def list_projection_models() -> list[str]:
    """Identity projection (Resampler) files: ``image_proj_model.bin`` and safetensors equivalents."""
    out = []
    for name in host.model_filenames(FOLDER_NAME):
        norm = name.replace(os.sep, "/")
        if DIFFUSERS_FOLDER in norm.split("/")[:-1]:
            continue
        if _is_projection_name(norm) and norm.endswith((".bin", ".pt", ".pth", ".safetensors", ".sft")):
            out.append(norm)
    return sorted(out)


def resolve_model_path(name: str) -> str:
    """Path of a listed name (file or ``InfuseNetModel`` folder) inside one of the registered folders.

    ``name`` is relative, with ``/`` separators, as listed; the path returned is the folder joined with
    it and lies inside that folder (lexically: symlinked model folders are fine). Absolute paths, ``..``
    and other ways out raise ModelNameError; a name found nowhere raises FileNotFoundError naming the
    folders searched."""
    roots = host.model_folder_paths(FOLDER_NAME)
    for root in roots:
        candidate = contained_join(root, name, "InfiniteYou model")
        if os.path.exists(candidate):
            return candidate
    raise FileNotFoundError(f"'{name}' was not found in the InfiniteYou model folders ({', '.join(roots)}).")


PROJECTION_FILES = ("image_proj_model.bin", "image_proj_model.safetensors")


def projection_beside(name: str) -> str | None:
    """``image_proj_model.bin`` (or .safetensors) in the folder of the listed InfuseNet ``name``, as
    InfiniteYou lays them out; only inside the registered folder that holds the InfuseNet."""
    path = resolve_model_path(name)
    for root in host.model_folder_paths(FOLDER_NAME):
        if not inside(root, path):
            continue
        folder = os.path.dirname(os.path.normpath(path))
        for file in PROJECTION_FILES:
            candidate = os.path.join(folder, file)
            if (inside(root, candidate)) and os.path.isfile(candidate):
                return candidate
        return None
    return None

