"""Every INT and FLOAT input of every node is checked when the node runs, as typed values are at
validation: a linked value arrives unchecked, so ``execute`` refuses one outside the input's range with
the node's name, the input and the range, before any work is done."""
from __future__ import annotations

import math
from importlib import import_module

import pytest
from comfy_api.latest import io

from tests.nodes.conftest import import_pack


def number_inputs() -> list[tuple[type, object]]:
    nodes = import_pack()
    return [(node, spec) for node in nodes.NODES for spec in node.define_schema().inputs
            if isinstance(spec, (io.Int.Input, io.Float.Input))]


NUMBER_INPUTS = number_inputs()


def defaults(node) -> dict:
    """Every input at its widget default; sockets (models, images, identities) as None."""
    return {spec.id: getattr(spec, "default", None) for spec in node.define_schema().inputs}


def bad_values(spec) -> list:
    values = [spec.max + 1, spec.min - 1]
    if isinstance(spec, io.Float.Input):
        values += [math.nan, math.inf]
    else:
        values += [spec.min + 0.5]  # not a whole number
    return values


def test_every_number_input_of_the_pack_is_covered():
    names = {(node.define_schema().display_name, spec.id) for node, spec in NUMBER_INPUTS}
    assert ("InfiniteYou Pose Image", "width") in names and ("InfiniteYou Face Regions", "feather") in names
    assert len(names) == 20, sorted(names)


@pytest.mark.parametrize("node,spec", NUMBER_INPUTS,
                         ids=[f"{n.define_schema().node_id}.{s.id}" for n, s in NUMBER_INPUTS])
def test_a_linked_number_out_of_range_is_refused_when_the_node_runs(node, spec):
    error = import_module(f"{import_pack().__name__}.errors").InfiniteYouNodeError
    display = node.define_schema().display_name
    for value in bad_values(spec):
        inputs = defaults(node)
        inputs[spec.id] = value
        with pytest.raises(error) as refused:
            node.execute(**inputs)
        message = str(refused.value)
        assert message.startswith(f"{display}: {spec.id} must be a "), message
        assert f"between {spec.min}" in message and f"and {spec.max}" in message, message
