"""Convert a saved (UI-format) ComfyUI workflow into the API prompt format, the way the frontend does.

The mapping of ``widgets_values`` onto input names comes from the live server's ``/object_info``:
widget inputs in ``input_order``; a seed with ``control_after_generate`` carries one extra value; an
image input with ``image_upload`` carries the upload widget's value. Notes and reroutes are resolved;
muted nodes (mode 2) are dropped, bypassed nodes (mode 4) pass their first matching input through.
"""
from __future__ import annotations

from typing import Any

VIRTUAL_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def _is_widget(spec: list) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _extra_values(spec: list) -> int:
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    extra = 0
    if options.get("control_after_generate"):
        extra += 1
    if options.get("image_upload") or options.get("video_upload") or options.get("audio_upload"):
        extra += 1
    return extra


def widget_names(node_info: dict) -> list[tuple[str, int]]:
    """(input name, values consumed) for each widget of a node type, in widgets_values order."""
    spec_all = {**node_info["input"].get("required", {}), **node_info["input"].get("optional", {})}
    order = node_info.get("input_order") or {
        "required": list(node_info["input"].get("required", {})),
        "optional": list(node_info["input"].get("optional", {})),
    }
    names = []
    for name in [*order.get("required", []), *order.get("optional", [])]:
        spec = spec_all[name]
        if _is_widget(spec):
            names.append((name, 1 + _extra_values(spec)))
    return names


def to_api(workflow: dict, object_info: dict) -> dict[str, dict[str, Any]]:
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = {link[0]: link for link in workflow["links"]}  # id, origin, origin_slot, target, target_slot, type

    def source(link_id: int) -> list | None:
        """Follow reroutes and bypassed nodes back to a real output: [node id, slot]."""
        link = links[link_id]
        origin = nodes[link[1]]
        if origin["type"] == "Reroute":
            upstream = origin["inputs"][0].get("link")
            return source(upstream) if upstream is not None else None
        if origin.get("mode") == 4:
            out_type = origin["outputs"][link[2]]["type"]
            for inp in origin.get("inputs", []):
                if inp.get("link") is not None and inp["type"] == out_type:
                    return source(inp["link"])
            return None
        return [str(origin["id"]), link[2]]

    prompt: dict[str, dict[str, Any]] = {}
    for node in workflow["nodes"]:
        if node["type"] in VIRTUAL_NODES or node.get("mode") in (2, 4):
            continue
        info = object_info.get(node["type"])
        if info is None:
            raise KeyError(f"node {node['id']} has type {node['type']!r}, which the server does not know")
        inputs: dict[str, Any] = {}
        values = list(node.get("widgets_values") or [])
        position = 0
        for name, consumed in widget_names(info):
            if position < len(values):
                inputs[name] = values[position]
            position += consumed
        for inp in node.get("inputs", []):
            if inp.get("link") is not None:
                src = source(inp["link"])
                if src is not None:
                    inputs[inp["name"]] = src
                else:
                    inputs.pop(inp["name"], None)
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs,
                                   "_meta": {"title": node.get("title", node["type"])}}
    return prompt
