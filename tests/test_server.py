"""The real ComfyUI test host: the pack imports, all its nodes are listed, a workflow runs over HTTP."""
from __future__ import annotations

import shutil

import pytest

from tests.conftest import missing_pack_nodes, start_server
from tests.expected_nodes import PACK_NODE_IDS
from devtools.server import ComfyServer


def test_every_pack_node_is_listed(comfy_server):
    info = comfy_server.object_info()
    assert missing_pack_nodes(info) == []
    for node_id in PACK_NODE_IDS:
        assert info[node_id]["category"] == "InfiniteYou"
        assert info[node_id]["description"], f"{node_id} has no description"


def test_start_log_names_the_comfyui_version_and_that_it_was_tested(comfy_server):
    from devtools.comfy_env import comfyui_version

    log = comfy_server.log()
    assert f"InfiniteYou: ComfyUI {comfyui_version()}: tested with this pack." in log, log[-3000:]
    assert "ComfyUI internals this pack relies on changed" not in log


def test_every_input_and_output_has_a_tooltip(comfy_server):
    info = comfy_server.object_info()
    for node_id in PACK_NODE_IDS:
        node = info[node_id]
        for group in ("required", "optional"):
            for name, spec in node["input"].get(group, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert all(node["output_tooltips"]), f"{node_id} has an output without tooltip"


def test_pack_import_failure_fails_the_check(tmp_path):
    """A broken copy of the pack: its nodes are missing, and the server fixture's check says so."""
    from devtools.comfy_env import PACK_ROOT

    broken = tmp_path / "pack"
    shutil.copytree(PACK_ROOT, broken, ignore=shutil.ignore_patterns(".venv", ".host", ".git", "__pycache__"))
    init = broken / "__init__.py"
    init.write_text("raise ImportError('deliberately broken for the test')\n" + init.read_text())
    with pytest.raises(AssertionError, match="failed to import") as failure:
        start_server(tmp_path / "base", pack_dir=broken)
    assert "deliberately broken for the test" in str(failure.value)


def test_server_still_runs_stock_nodes_with_a_broken_pack(tmp_path):
    """ComfyUI itself keeps serving when a pack fails to import: the node check is what catches it."""
    from devtools.comfy_env import PACK_ROOT

    broken = tmp_path / "pack"
    shutil.copytree(PACK_ROOT, broken, ignore=shutil.ignore_patterns(".venv", ".host", ".git", "__pycache__"))
    (broken / "nodes" / "face.py").write_text("import a_module_that_does_not_exist\n")
    server = ComfyServer(tmp_path / "base")
    server.prepare_base(pack_dir=broken)
    server.start()
    try:
        info = server.object_info()
        assert "KSampler" in info
        assert set(missing_pack_nodes(info)) == set(PACK_NODE_IDS)
        assert "IMPORT FAILED" in server.log()
    finally:
        server.stop()


def test_node_ids_inputs_and_outputs_are_stable(comfy_server):
    """Saved workflows refer to node ids, input names and output slots: the shipped ones never change.
    New optional inputs may be added at the end; nothing listed in tests/node_api.json may go or move."""
    import json

    from devtools.comfy_env import PACK_ROOT

    shipped = json.loads((PACK_ROOT / "tests" / "node_api.json").read_text())
    info = comfy_server.object_info()
    for node_id, api in shipped.items():
        live = info[node_id]
        for group in ("required", "optional"):
            names = live["input_order"].get(group, [])
            assert names[: len(api["inputs"].get(group, []))] == api["inputs"].get(group, []), (node_id, group)
        assert live["output_name"][: len(api["outputs"])] == api["outputs"], node_id
        assert live["output"][: len(api["output_types"])] == api["output_types"], node_id
