"""Model names that come from the API: lexical checks that keep them inside a model folder.

Containment is lexical (``os.path.normpath`` of the joined path), not ``realpath``: users and the
tests link model folders into ``ComfyUI/models``, so a file may legitimately resolve elsewhere through
a symlink. What a name may not do is leave the folder by itself: absolute paths, ``..`` or empty
components, backslashes, percent-encoded characters and drive letters are refused.
"""
from __future__ import annotations

import os
import re

_DRIVE = re.compile(r"^[A-Za-z]:")


class ModelNameError(ValueError):
    """A model name that is not a plain relative name inside a model folder."""


def name_problem(name) -> str | None:
    """Why ``name`` is not a plain relative model name (``a/b/c``), or None when it is one."""
    if not isinstance(name, str) or not name:
        return "the name is empty"
    if "\x00" in name:
        return "the name contains a NUL character"
    if "\\" in name:
        return "the name contains a backslash (use the name as listed, with / separators)"
    if "%" in name:
        return "the name contains a percent-encoded character"
    if _DRIVE.match(name):
        return "the name starts with a drive letter"
    if name.startswith("/") or os.path.isabs(name):
        return "the name is an absolute path"
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "the name has an empty, '.' or '..' component"
    return None


def contained_join(root: str | os.PathLike, name: str, what: str = "model") -> str:
    """``root/name`` normalised, guaranteed to lie inside ``root`` (lexically); ModelNameError otherwise."""
    problem = name_problem(name)
    if problem:
        raise ModelNameError(f"{what} {name!r} refused: {problem}. Choose one of the listed names.")
    base = os.path.normpath(os.path.abspath(os.fspath(root)))
    candidate = os.path.normpath(os.path.join(base, *name.split("/")))
    if not candidate.startswith(base.rstrip(os.sep) + os.sep):
        raise ModelNameError(f"{what} {name!r} refused: it leads outside the model folder {base}.")
    return candidate


def inside(root: str | os.PathLike, path: str | os.PathLike) -> bool:
    """Whether ``path`` lies lexically inside ``root``."""
    base = os.path.normpath(os.path.abspath(os.fspath(root)))
    target = os.path.normpath(os.path.abspath(os.fspath(path)))
    return target.startswith(base.rstrip(os.sep) + os.sep)
