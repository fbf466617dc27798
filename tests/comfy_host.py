"""Where the test ComfyUI lives, and how to import it in-process.

The suite runs against a real ComfyUI: the one named by ``COMFYUI_DIR`` or, by default, the copy that
``scripts/setup.sh`` prepared under ``.host/ComfyUI``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[1]


def comfyui_dir() -> Path:
    """The ComfyUI checkout the tests run against."""
    env = os.environ.get("COMFYUI_DIR")
    if env:
        path = Path(env).expanduser().resolve()
    else:
        marker = PACK_ROOT / ".host" / "comfyui_dir"
        path = Path(marker.read_text().strip()) if marker.exists() else PACK_ROOT / ".host" / "ComfyUI"
    if not (path / "main.py").is_file() or not (path / "comfy").is_dir():
        raise RuntimeError(
            f"No ComfyUI found at {path} (expected main.py and comfy/). Run scripts/setup.sh, "
            "or set COMFYUI_DIR to your ComfyUI checkout."
        )
    return path


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
