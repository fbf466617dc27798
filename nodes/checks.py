"""Checks of the values a node receives, shared by ``validate_inputs`` and ``execute``.

ComfyUI 0.3.75 does not check a V3 combo value against its options, lets NaN and Infinity through the
prompt JSON, and skips its own min/max check for inputs a node validates itself. Linked inputs are
None at validation time: each check passes on None there, and ``execute`` runs the same checks again
once every value is known.
"""
from __future__ import annotations

import math
from typing import Container, Iterable, Iterator, Mapping, Sequence

from ..infusenet.names import name_problem
from .errors import InfiniteYouNodeError

SHOWN_OPTIONS = 20
SHOWN_VALUE_CHARS = 120
"""A refused value longer than this is shown cut, with its length."""


def shown_value(value) -> str:
    """``repr(value)``, cut to :data:`SHOWN_VALUE_CHARS` with the full length added when longer."""
    text = repr(value)
    if len(text) <= SHOWN_VALUE_CHARS:
        return text
    size = f"{len(value)} characters" if isinstance(value, str) else f"{len(text)} characters shown as text"
    return f"{text[:SHOWN_VALUE_CHARS]}... ({size})"


def allowed(options: Sequence) -> str:
    shown = ", ".join(repr(o) for o in list(options)[:SHOWN_OPTIONS])
    more = f" (and {len(options) - SHOWN_OPTIONS} more)" if len(options) > SHOWN_OPTIONS else ""
    return shown + more


def one_of(name: str, value, options: Sequence, what: str = "listed values") -> str | None:
    """None when ``value`` is one of ``options`` (or not known yet); otherwise what to choose."""
    if value is None or value in options:
        return None
    why = name_problem(value) if isinstance(value, str) and what != "listed values" else None
    refused = f"refused ({why}); " if why else ""
    return f"{name} {shown_value(value)} is not one of the {what}: {refused}choose one of: {allowed(options)}."


def given(name: str, value, options: Sequence, linked: Container[str] = ()) -> str | None:
    """None when ``value`` is known or ``name`` is a linked input (its value comes when the node runs).

    A choice sent as JSON null reaches ``validate_inputs`` as None, exactly like a linked input; ComfyUI
    names the linked ones in ``input_types``, so a None that is not among them is a missing value."""
    if value is not None or name in linked:
        return None
    return f"{name} has no value (null): choose one of: {allowed(options)}."


def link_type_problems(node_class, input_types: Mapping[str, object] | None) -> Iterator[str]:
    """The link type check ComfyUI leaves to a node whose ``validate_inputs`` asks for ``input_types``:
    each linked input's received type must fit the input's declared type."""
    from comfy_execution.validation import validate_node_input

    declared = {}
    for section in ("required", "optional"):
        declared.update(node_class.INPUT_TYPES().get(section, {}))
    for name, received in (input_types or {}).items():
        spec = declared.get(name)
        if spec is not None and not validate_node_input(received, spec[0]):
            yield f"{name} is linked to an output of type {received}; it takes {spec[0]}."


def number_problems(node_class, values: Mapping[str, object]) -> Iterator[str | None]:
    """Every INT and FLOAT input of ``node_class`` among ``values``, checked against its schema's range.

    At validation ComfyUI (or the node) checks the values typed into widgets; linked values arrive
    unchecked when the node runs, so ``execute`` checks them here with the same wording."""
    from comfy_api.latest import io

    for spec in node_class.define_schema().inputs:
        if spec.id not in values or not isinstance(spec, (io.Int.Input, io.Float.Input)):
            continue
        value = values[spec.id]
        if value is None and spec.optional:
            continue
        low = -math.inf if spec.min is None else spec.min
        high = math.inf if spec.max is None else spec.max
        if isinstance(spec, io.Int.Input):
            yield whole_between(spec.id, value, low, high)
        else:
            yield finite_between(spec.id, value, low, high)


def whole_between(name: str, value, low: float, high: float) -> str | None:
    """None when ``value`` is a whole number in [low, high] (or not known yet)."""
    if value is None:
        return None
    ok = (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and math.isfinite(value) and value.is_integer())
    if not ok or not low <= value <= high:
        return f"{name} must be a whole number between {low} and {high}; got {shown_value(value)}."
    return None


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
        return f"{name} must be a finite number between {low} and {high}; got {shown_value(value)}."
    if isinstance(value, bool) or not math.isfinite(number) or not low <= number <= high:
        return f"{name} must be a finite number between {low} and {high}; got {shown_value(value)}."
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
