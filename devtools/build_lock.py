"""Cached folders that several test processes may ask for at once (test hosts side by side, scripts/test.sh): one
process builds, the others wait for it, then find the folder complete."""
from __future__ import annotations

import fcntl
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable


@contextmanager
def building(root: Path):
    """Hold the exclusive lock of ``root`` (``<root>.lock`` beside it) for as long as the block runs."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.with_name(root.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def cached_folder(root: Path, build: Callable[[Path], None]) -> Path:
    """``root``, built once by ``build(folder)`` into ``<root>.partial`` and renamed when complete; the complete
    folders beside it (older generators') go."""
    if (root / "complete").exists():
        return root
    with building(root):
        if (root / "complete").exists():
            return root
        for old in root.parent.iterdir():
            if old != root and (old / "complete").exists():
                shutil.rmtree(old, ignore_errors=True)
        tmp = root.with_name(root.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        build(tmp)
        (tmp / "complete").write_text("ok")
        tmp.rename(root)
    return root
