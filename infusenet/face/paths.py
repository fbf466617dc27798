"""Where the face models live: ComfyUI's ``models/insightface`` folder (registered here)."""
from __future__ import annotations

import os
from pathlib import Path

FOLDER_NAME = "insightface"
PACK_NAME = "antelopev2"
DETECTOR_FILE = "scrfd_10g_bnkps.onnx"
ARCFACE_FILE = "recognition_arcface_ir_se50.pth"
ARCFACE_FOLDER_NAMES = ("insightface", "facexlib")


def _register() -> None:
    import folder_paths

    for name in ARCFACE_FOLDER_NAMES:
        default = os.path.join(folder_paths.models_dir, name)
        if name not in folder_paths.folder_names_and_paths:
            folder_paths.add_model_folder_path(name, default)
        exts = folder_paths.folder_names_and_paths[name][1]
        exts.update({".pth", ".pt", ".safetensors", ".onnx"})


def insightface_roots() -> list[Path]:
    """Every folder ComfyUI knows as ``insightface`` (default ``ComfyUI/models/insightface``)."""
    import folder_paths

    _register()
    return [Path(p) for p in folder_paths.get_folder_paths(FOLDER_NAME)]


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
    import folder_paths

    _register()
    dirs: list[Path] = []
    for name in ARCFACE_FOLDER_NAMES:
        for p in folder_paths.get_folder_paths(name):
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
