"""One builder at a time for a cached folder that several test processes may ask for at once (test hosts side by side,
scripts/test.sh): the others wait for it, then find the folder complete."""
from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def building(root: Path):
    """Hold the exclusive lock of ``root`` (``<root>.lock`` beside it) for as long as the block runs."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.with_name(root.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
