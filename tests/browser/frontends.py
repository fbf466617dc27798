"""Which ComfyUI frontends the browser tests run against, and where their files are.

``INFU_FRONTENDS`` (comma-separated) chooses them: ``host`` is the frontend the test host's ComfyUI
pins (the package installed beside it; no ``--front-end-root``), a version such as ``1.58.1`` is
installed with ``pip --target`` into ``.host/frontends/<version>`` when missing and served through
``--front-end-root``. Default: ``host`` only. CI runs each host's own frontend and the newest one,
e.g. ``INFU_FRONTENDS=host,1.58.1``.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from devtools.comfy_env import PACK_ROOT

PACKAGE = "comfyui-frontend-package"
NEWEST = "1.58.1"


def frontend_list() -> list[str]:
    raw = os.environ.get("INFU_FRONTENDS", "host")
    return [v.strip() for v in raw.split(",") if v.strip()]


def frontends_root() -> Path:
    return Path(os.environ.get("INFU_FRONTENDS_DIR", PACK_ROOT / ".host" / "frontends"))


def static_dir(version: str) -> Path | None:
    """The ``static/`` folder of frontend ``version`` (installed if missing); None for ``host``."""
    if version == "host":
        return None
    target = frontends_root() / version
    static = target / "comfyui_frontend_package" / "static"
    if not (static / "index.html").is_file():
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                        f"{PACKAGE}=={version}"], check=True)
    if not (static / "index.html").is_file():
        raise RuntimeError(f"{PACKAGE}=={version} installed into {target} has no static/index.html")
    return static


def server_args(version: str) -> list[str]:
    static = static_dir(version)
    return [] if static is None else ["--front-end-root", str(static)]
