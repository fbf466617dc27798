"""Where the face models live: ComfyUI's ``models/insightface`` folder (registered here)."""
from __future__ import annotations

import os
from pathlib import Path

from ..names import ModelNameError, contained_join

FOLDER_NAME = "insightface"
PACK_NAME = "antelopev2"
DETECTOR_FILE = "scrfd_10g_bnkps.onnx"
ARCFACE_FILE = "recognition_arcface_ir_se50.pth"
ARCFACE_FOLDER_NAMES = ("insightface", "facexlib")
FACE_EXTENSIONS = {".pth", ".pt", ".safetensors", ".onnx"}


def _register() -> None:
    """Register ``models/insightface`` and ``models/facexlib`` (unless registered already) and give each
    its own extension set: another pack's list, or ComfyUI's shared set, is never changed in place."""
    from .. import host
    from ..paths import add_extensions

    for name in ARCFACE_FOLDER_NAMES:
        if host.model_folder_entry(name) is None:
            host.add_model_folder(name, os.path.join(host.models_dir(), name))
        add_extensions(name, FACE_EXTENSIONS)


def insightface_roots() -> list[Path]:
    """Every folder ComfyUI knows as ``insightface`` (default ``ComfyUI/models/insightface``)."""
    from .. import host

    _register()
    return [Path(p) for p in host.model_folder_paths(FOLDER_NAME)]


def default_pack_dir() -> Path:
    """``<insightface root>/models/antelopev2`` for the first root that has it (else the first root)."""
    roots = insightface_roots()
    for root in roots:
        if (root / "models" / PACK_NAME).is_dir():
            return root / "models" / PACK_NAME
    return roots[0] / "models" / PACK_NAME


def pack_dir_from(path: str | os.PathLike | None) -> Path:
    """The antelopev2 folder for ``path``: the pack folder itself (named antelopev2, holding the detector,
    or any folder directly under a ``models`` folder), or an insightface root holding
    ``models/antelopev2``; ``None`` means ComfyUI's registered ``insightface`` folder."""
    if path is None:
        return default_pack_dir()
    path = Path(path).expanduser()
    if path.name == PACK_NAME and not (path / "models" / PACK_NAME).is_dir():
        return path
    if (path / DETECTOR_FILE).is_file():
        return path
    if path.parent.name == "models" and path.name != FOLDER_NAME and not (path / "models").is_dir():
        return path  # a pack folder under another name (ComfyUI/models/insightface is a root)
    return path / "models" / PACK_NAME


def arcface_search_dirs() -> list[Path]:
    """Folders searched for the ArcFace weights when a bare file name is given."""
    from .. import host

    _register()
    dirs: list[Path] = []
    for name in ARCFACE_FOLDER_NAMES:
        for p in host.model_folder_paths(name):
            dirs += [Path(p), Path(p) / "models"]
    return dirs


def resolve_arcface_path(name_or_path: str | os.PathLike | None) -> tuple[Path, list[Path]]:
    """``(path, searched)``: an existing path is returned as is; a bare name (default
    ``recognition_arcface_ir_se50.pth``) is looked up in ``models/insightface`` and ``models/facexlib``.
    When nothing matches, ``path`` is the first place searched (where the file should go)."""
    name = ARCFACE_FILE if name_or_path is None else name_or_path
    path = Path(name).expanduser()
    if path.is_absolute() or path.exists() or len(path.parts) > 1:
        return path, [path]
    searched = [d / path for d in arcface_search_dirs()]
    for candidate in searched:
        if candidate.is_file():
            return candidate, searched
    return searched[0], searched


def resolve_detector_pack(name: str) -> Path:
    """The pack folder ``<insightface root>/models/<name>`` for a listed pack name (one path component).

    The first root that has it, else the first root (where it should go, for the loader's message).
    Anything that would leave ``<root>/models`` raises ModelNameError."""
    candidates = [Path(contained_join(root / "models", name, "detector_pack")) for root in insightface_roots()]
    if "/" in name:
        raise ModelNameError(f"detector_pack {name!r} refused: a pack is one folder name under models/insightface/models.")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return candidates[0]


def resolve_arcface_name(name: str) -> Path:
    """The ArcFace weights file for a listed name (one path component) in ``models/insightface``,
    ``models/facexlib`` or their ``models/`` subfolders; the first place searched when it is nowhere.
    Anything that would leave those folders raises ModelNameError."""
    dirs = arcface_search_dirs()
    candidates = [Path(contained_join(d, name, "arcface")) for d in dirs]
    if "/" in name:
        raise ModelNameError(f"arcface {name!r} refused: give the file name as listed, without folders.")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return candidates[0]
