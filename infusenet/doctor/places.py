"""Where model files are: ComfyUI's model folders, safe names inside them, and paths as reports show them.

Paths in reports are relative to ComfyUI's models folder; folders registered elsewhere are named, never shown as
absolute paths. A link is followed only as far as a model file: a link to ``/etc/passwd`` or to a folder outside is
never described, not even by its size.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from .. import host
from ..catalogue import SPECS, ModelSpec

MODEL_FOLDERS = ("infiniteyou", "insightface", "facexlib", "diffusion_models", "vae", "text_encoders")
"""The ComfyUI folders the doctor reports on."""
MODEL_FILE_SUFFIXES = (".safetensors", ".sft", ".bin", ".pt", ".pth", ".onnx", ".json", ".gguf")
"""What a loader of the pack (or of ComfyUI and ComfyUI-GGUF, for FLUX, CLIP and VAE) accepts: only such files are
reported."""


class UnsafePath(ValueError):
    """A requested name leaves the model folders (``..``, an absolute path, an encoded separator)."""


def folder_roots(folder: str) -> list[Path]:
    return [Path(p) for p in host.model_folder_paths(folder)]


def shown_path(path: Path) -> str:
    """``path`` relative to ComfyUI's models folder, "/"-separated; a folder registered elsewhere (extra
    model paths) is named by its ComfyUI folder name and position, never by its absolute path."""
    models = os.path.normpath(host.models_dir())
    norm = os.path.normpath(str(path))
    if norm == models or norm.startswith(models + os.sep):
        return os.path.relpath(norm, models).replace(os.sep, "/")
    for folder in MODEL_FOLDERS:
        for i, root in enumerate(folder_roots(folder)):
            r = os.path.normpath(str(root))
            if norm == r or norm.startswith(r + os.sep):
                rest = os.path.relpath(norm, r).replace(os.sep, "/")
                return f"[{folder} folder {i + 1}]/{rest}"
    return f"[outside the model folders]/{os.path.basename(norm)}"


def safe_relative(name: str) -> str:
    """``name`` as a relative "/"-path that cannot leave a folder, or UnsafePath."""
    if not isinstance(name, str) or not name or len(name) > 512:
        raise UnsafePath("empty or overlong name")
    if "\x00" in name or "%" in name or "\\" in name:
        raise UnsafePath("encoded characters, backslashes or NUL are not allowed in a model name")
    if name.startswith(("/", "~")) or re.match(r"^[A-Za-z]:", name) or os.path.isabs(name):
        raise UnsafePath("absolute paths are not allowed; give a path relative to ComfyUI's models folder")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise UnsafePath("'..', '.' and empty path segments are not allowed")
    return name


def model_file_ok(path: Path) -> bool:
    """Whether the doctor may report on the file ``path``: a regular file whose name, and the name of the
    file a link leads to, end in :data:`MODEL_FILE_SUFFIXES`."""
    if not str(path).lower().endswith(MODEL_FILE_SUFFIXES):
        return False
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):  # a dangling link, a loop of links
        return False
    return target.is_file() and target.name.lower().endswith(MODEL_FILE_SUFFIXES)


def model_folder_ok(root: Path, path: Path) -> bool:
    """Whether the doctor may report on the folder ``path`` under ``root``: one that really lies inside
    ``root``, or an ``InfuseNetModel`` folder (which a loader accepts) wherever a link leads."""
    if path.name == "InfuseNetModel":
        return True
    try:
        real, base = path.resolve(strict=True), root.resolve(strict=True)
    except (OSError, RuntimeError):
        return False
    return real == base or base in real.parents


def size_of(path: Path) -> int:
    """Bytes of a model file, or of the model files in a folder (links to folders are not walked)."""
    if path.is_dir():
        total = 0
        for dirpath, _, filenames in os.walk(path):  # followlinks=False: a linked folder is not entered
            total += sum((Path(dirpath) / n).stat().st_size for n in filenames if model_file_ok(Path(dirpath) / n))
        return total
    return path.stat().st_size


def locate(spec: ModelSpec) -> Path | None:
    """Where ``spec``'s file is, searching its folders in order (ArcFace also under ``<folder>/models/``)."""
    for folder in spec.folders:
        for root in folder_roots(folder):
            for candidate in (root / spec.name, root / "models" / spec.name) if spec.role == "arcface" else (root / spec.name,):
                if candidate.exists():
                    return candidate
    return None


def nested_antelope(roots: list[Path], file: str) -> Path | None:
    """An antelopev2 file one folder too deep (``antelopev2/antelopev2/``), the usual unzip mistake."""
    for root in roots:
        for nested in (root / "models" / "antelopev2" / "antelopev2" / file, root / "antelopev2" / file):
            if nested.is_file():
                return nested
    return None


def extra_files() -> list[tuple[Path, str]]:
    """InfuseNets and projections in the InfiniteYou folders that the catalogue does not name."""
    known = {os.path.normpath(str(root / s.name)) for s in SPECS for f in s.folders for root in folder_roots(f)}
    found: list[tuple[Path, str]] = []

    def listed(path: Path) -> bool:
        return os.path.normpath(str(path)) in known
    for root in folder_roots("infiniteyou"):
        if not root.is_dir():
            continue
        # Links to folders are not walked (a link to / would list the whole disk); files in them still load,
        # and ``?file=`` reports on one by name. A link to a file counts only when it leads to a model file.
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames.sort()
            here = Path(dirpath)
            filenames = [n for n in filenames if model_file_ok(here / n)]
            if here.name == "InfuseNetModel":
                if not listed(here):
                    found.append((here, "infusenet"))
                dirnames[:] = []
                continue
            found.extend((here / d, "infusenet") for d in dirnames  # a linked InfuseNetModel folder loads too
                         if d == "InfuseNetModel" and (here / d).is_symlink() and (here / d).is_dir()
                         and not listed(here / d))
            for name in sorted(filenames):
                p = here / name
                if os.path.normpath(str(p)) in known:
                    continue
                low = name.lower()
                if any(t in low for t in ("image_proj", "resampler", "id_proj")) and low.endswith(
                        (".bin", ".pt", ".pth", ".safetensors", ".sft")):
                    found.append((p, "projection"))
                elif low.endswith((".safetensors", ".sft")):
                    found.append((p, "infusenet"))
            if len(found) > 200:
                break
    return found


def role_for(rest: str) -> str:
    """The role of a file named by the user (a path under a model folder), from its name."""
    low = rest.lower()
    if low.endswith(".onnx"):
        return "face_onnx"
    if low.endswith(".gguf"):
        return "gguf"
    if "arcface" in low:
        return "arcface"
    if any(t in low for t in ("image_proj", "resampler", "id_proj")):
        return "projection"
    if "infusenet" in low or low.endswith("infusenetmodel"):
        return "infusenet"
    return "flux"
