"""The example photos the shipped workflows load (``workflows/photos/``), put where ``Load Image`` finds them.

At start every example photo missing from ComfyUI's input folder is copied there; a file of the same name
that is already there (the user's own, or an earlier copy) is never replaced.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger("InfiniteYou")

PHOTOS_DIR = Path(__file__).resolve().parents[1] / "workflows" / "photos"
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def example_photos() -> list[Path]:
    """The shipped example photos, by name."""
    if not PHOTOS_DIR.is_dir():
        return []
    return sorted(p for p in PHOTOS_DIR.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)


def copy_missing_photos(input_dir: str | Path | None = None) -> list[Path]:
    """Copy each example photo missing from ``input_dir`` (default: ComfyUI's input folder) into it.

    Returns the files written. Existing files are left as they are; a folder that cannot be written to is
    logged, not raised: the workflows then ask for the photos by name like any other missing input."""
    if input_dir is None:
        from . import host

        input_dir = host.input_directory()
    folder = Path(input_dir)
    written = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for photo in example_photos():
            target = folder / photo.name
            if target.exists():
                continue
            shutil.copyfile(photo, target)
            written.append(target)
    except OSError as e:
        log.warning("InfiniteYou: could not copy the example photos into %s (%s); the shipped workflows will "
                    "ask for them by name", folder, e)
    if written:
        log.info("InfiniteYou: example photos for the shipped workflows copied into %s: %s", folder,
                 ", ".join(p.name for p in written))
    return written
