"""Which ComfyUI the scripts and tests run against, and how to import it in-process.

``COMFYUI_DIR`` names the ComfyUI tree (``scripts/test.sh`` sets it for each test host); without it the
first prepared test host under ``.host/<name>/ComfyUI`` is used (see ``scripts/setup.sh``).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[1]
HOST_NAMES = ("0.3.75", "0.30.0")
"""The test hosts ``scripts/setup.sh`` prepares, oldest first."""


def comfyui_dir() -> Path:
    """The ComfyUI checkout the tests run against."""
    env = os.environ.get("COMFYUI_DIR")
    if env:
        path = Path(env).expanduser().resolve()
    else:
        prepared = [PACK_ROOT / ".host" / n / "ComfyUI" for n in HOST_NAMES]
        path = next((p for p in prepared if (p / "main.py").is_file()), prepared[0])
    if not (path / "main.py").is_file() or not (path / "comfy").is_dir():
        raise RuntimeError(
            f"No ComfyUI found at {path} (expected main.py and comfy/). Run scripts/setup.sh, "
            "or set COMFYUI_DIR to your ComfyUI checkout."
        )
    return path


def comfyui_version(path: Path | None = None) -> str:
    """The version a ComfyUI tree declares in ``comfyui_version.py`` ("unknown" without one)."""
    version_file = (path or comfyui_dir()) / "comfyui_version.py"
    if version_file.is_file():
        for line in version_file.read_text().splitlines():
            if line.startswith("__version__"):
                return line.split("=", 1)[1].strip().strip("\"'")
    return "unknown"


def enable_in_process_comfy() -> Path:
    """Make ``import comfy`` work in this process, on the CPU, without touching the host's files."""
    path = comfyui_dir()
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    if str(PACK_ROOT.parent) not in sys.path:
        sys.path.append(str(PACK_ROOT.parent))
    import comfy.cli_args  # noqa: E402  (must precede comfy.model_management)

    comfy.cli_args.args.cpu = True
    return path


def comfy_core_nodes():
    """ComfyUI's own ``nodes`` module (KSampler, VAEDecode...), never this pack's ``nodes/`` package, whichever of
    the two folders stands first on ``sys.path`` (pytest may put the pack's root before ComfyUI's)."""
    import importlib.util

    path = enable_in_process_comfy() / "nodes.py"
    loaded = sys.modules.get("nodes")
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() == path.resolve():
        return loaded
    spec = importlib.util.spec_from_file_location("nodes", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["nodes"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop("nodes", None)
        raise
    return module
