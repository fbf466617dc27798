"""Checks of the values a node receives, shared by ``validate_inputs`` and ``execute``.

ComfyUI 0.3.75 does not check a V3 combo value against its options, lets NaN and Infinity through the
prompt JSON, and skips its own min/max check for inputs a node validates itself. Linked inputs are
None at validation time: each check passes on None there, and ``execute`` runs the same checks again
once every value is known.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

from ..infusenet.names import name_problem
from .errors import InfiniteYouNodeError

SHOWN_OPTIONS = 20


def one_of(name: str, value, options: Sequence, what: str = "listed values") -> str | None:
    """None when ``value`` is one of ``options`` (or not known yet); otherwise what to choose."""
    if value is None or value in options:
        return None
    shown = ", ".join(repr(o) for o in list(options)[:SHOWN_OPTIONS])
    more = f" (and {len(options) - SHOWN_OPTIONS} more)" if len(options) > SHOWN_OPTIONS else ""
    why = name_problem(value) if isinstance(value, str) and what != "listed values" else None
    refused = f"refused ({why}); " if why else ""
    return f"{name} {value!r} is not one of the {what}: {refused}choose one of: {shown}{more}."


def plain_names(*values) -> bool:
    """Whether every value is a plain relative model name (``a/b/c``: no absolute path, no ``..``)."""
    return all(isinstance(v, str) and name_problem(v) is None for v in values)


def finite_between(name: str, value, low: float, high: float) -> str | None:
    """None when ``value`` is a finite number in [low, high] (or not known yet)."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return f"{name} must be a finite number between {low} and {high}; got {value!r}."
    if not math.isfinite(number) or not low <= number <= high:
        return f"{name} must be a finite number between {low} and {high}; got {value!r}."
    return None


def verdict(node_name: str, problems: Iterable[str | None]) -> bool | str:
    """What ``validate_inputs`` returns: True, or the first problem with the node's name in front."""
    for problem in problems:
        if problem:
            return f"{node_name}: {problem}"
    return True


def require(node_name: str, problems: Iterable[str | None]) -> None:
    """In ``execute``: raise the first problem as the node's error."""
    result = verdict(node_name, problems)
    if result is not True:
        raise InfiniteYouNodeError(result)
