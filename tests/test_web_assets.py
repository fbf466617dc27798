"""The files the frontend fetches from the pack: node help pages (with their pictures) and template cards."""
from __future__ import annotations

import re

from devtools.comfy_env import PACK_ROOT
from tests.expected_nodes import PACK_NODE_IDS
from devtools.server import PACK_LINK_NAME


def test_every_node_has_a_help_page_with_its_picture(comfy_server):
    for node_id in PACK_NODE_IDS:
        # the frontend's node help: /extensions/<custom node folder>/docs/<node id>.md
        status, body = comfy_server.request(f"/extensions/{PACK_LINK_NAME}/docs/{node_id}.md")
        assert status == 200, node_id
        text = body.decode()
        assert text.startswith("# ") and "## Input" in text, node_id
        pictures = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", text)
        assert pictures, f"{node_id} help has no picture"
        for picture in pictures:
            status, data = comfy_server.request(f"/extensions/{PACK_LINK_NAME}/docs/{picture}")
            assert status == 200 and data[:3] == b"\xff\xd8\xff", picture


def test_every_template_has_a_thumbnail_and_a_card_line(comfy_server):
    from infusenet.catalogue import TEMPLATE_LINES

    templates = comfy_server.get_json("/api/workflow_templates")[PACK_LINK_NAME]
    assert sorted(templates) == sorted(TEMPLATE_LINES) == sorted(p.stem for p in (PACK_ROOT / "workflows").glob("*.json"))
    for name in templates:
        # what the frontend's template browser loads for a custom node's card
        status, data = comfy_server.request(f"/api/workflow_templates/{PACK_LINK_NAME}/{name}.jpg")
        assert status == 200 and data[:3] == b"\xff\xd8\xff", name
        assert TEMPLATE_LINES[name] and "\n" not in TEMPLATE_LINES[name]
    # the lines the page writes under each card's title
    assert comfy_server.get_json("/infiniteyou/templates") == TEMPLATE_LINES


def test_help_pages_fit_the_side_panel_and_list_every_input(comfy_server):
    """The side panel that shows a node's help is about 400 px wide: a table of inputs there runs off its edge
    (the frontend does not wrap table cells it cannot shrink). The pages list inputs one per line instead, each
    input the node has, by the name the node shows."""
    info = comfy_server.object_info()
    for node_id in PACK_NODE_IDS:
        text = comfy_server.request(f"/extensions/{PACK_LINK_NAME}/docs/{node_id}.md")[1].decode()
        tables = [line for line in text.splitlines() if line.lstrip().startswith("|")]
        assert tables == [], f"{node_id} help has table rows: {tables[:2]}"
        spec = info[node_id]["input"]
        inputs = [*spec.get("required", {}), *spec.get("optional", {})]
        listed = set(re.findall(r"^- `([a-z_0-9]+)`", text, flags=re.M)) | {
            name for line in re.findall(r"^- (`[a-z_0-9]+`(?:, `[a-z_0-9]+`)*)", text, flags=re.M)
            for name in re.findall(r"`([a-z_0-9]+)`", line)}
        assert set(inputs) <= listed, f"{node_id} help does not list {sorted(set(inputs) - listed)}"
