"""Model folders: ``models/infiniteyou/`` (ours) and ``models/infinite_you/`` (the official pack's).

Both are registered under one ComfyUI folder name, so users keep their files where they are.
"""
from __future__ import annotations

import os

import folder_paths

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
        folder_paths.add_model_folder_path(FOLDER_NAME, os.path.join(folder_paths.models_dir, sub))
    paths, extensions = folder_paths.folder_names_and_paths[FOLDER_NAME]
    if isinstance(extensions, set):
        extensions.update(MODEL_EXTENSIONS)
    return list(paths)


def _is_projection_name(name: str) -> bool:
    base = os.path.basename(name).lower()
    return "image_proj" in base or "resampler" in base or "id_proj" in base


def list_infusenet_models() -> list[str]:
    """InfuseNet choices: single weight files and ``.../InfuseNetModel`` diffusers folders.

    Names are relative to the registered folders, with ``/`` separators, like ComfyUI's lists.
    """
    names = set()
    for name in folder_paths.get_filename_list(FOLDER_NAME):
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
    for name in folder_paths.get_filename_list(FOLDER_NAME):
        norm = name.replace(os.sep, "/")
        if DIFFUSERS_FOLDER in norm.split("/")[:-1]:
            continue
        if _is_projection_name(norm) and norm.endswith((".bin", ".pt", ".pth", ".safetensors", ".sft")):
            out.append(norm)
    return sorted(out)


def resolve_model_path(name: str) -> str:
    """Absolute path of a listed name (file or ``InfuseNetModel`` folder); absolute paths pass through.

    Raises FileNotFoundError naming the folders searched.
    """
    if os.path.isabs(name) and os.path.exists(name):
        return name
    for root in folder_paths.get_folder_paths(FOLDER_NAME):
        candidate = os.path.join(root, *name.split("/"))
        if os.path.exists(candidate):
            return candidate
    searched = ", ".join(folder_paths.get_folder_paths(FOLDER_NAME))
    raise FileNotFoundError(f"'{name}' was not found in the InfiniteYou model folders ({searched}).")
