"""What a running ComfyUI with this pack answers: a refused prompt names each of the pack's validation problems
once per node (ComfyUI alone files a node's message once per input its validation takes), other nodes' errors
as ComfyUI made them; and /object_info marks Apply InfiniteYou's expert inputs advanced. No model is needed:
validation refuses before anything loads."""
from __future__ import annotations

import pytest

from devtools.server import PromptRejected

APPLY_EXPERT = {"start", "end", "window", "infusenet_guidance", "follow_model_guidance", "apply_to"}
"""Folded away as advanced; strength, the preset, the pose image, the mask and the sockets stay in view."""
BACKWARDS = "Apply InfiniteYou: start (0.9) is after end (0.2): the InfuseNet would never run"


@pytest.fixture(scope="module")
def server(bare_server):
    """The run's ComfyUI without model files (tests/conftest.py)."""
    return bare_server


def refused_prompt() -> dict:
    """Apply with start after end, an identity node with an unknown detection size, loaders of files that are not
    there, and core nodes refused by ComfyUI itself."""
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "no_such_flux.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "InfU_InfuseNetLoader", "inputs": {
            "infusenet_name": "aes_stage2/no_such_infusenet.safetensors",
            "projection": "auto (image_proj_model beside the InfuseNet)", "weight_dtype": "default"}},
        "3": {"class_type": "InfU_FaceEncoderLoader", "inputs": {
            "detector_pack": "antelopev2", "arcface": "recognition_arcface_ir_se50.pth", "providers": "auto"}},
        "4": {"class_type": "LoadImage", "inputs": {"image": "no_such_photo.png"}},
        "5": {"class_type": "InfU_IdentityFromImages", "inputs": {
            "face_encoder": ["3", 0], "images": ["4", 0], "face_select": "largest", "face_index": 0, "det_size": "999",
            "combine": "mean"}},
        "6": {"class_type": "VAELoader", "inputs": {"vae_name": "no_such_vae.safetensors"}},
        "7": {"class_type": "InfU_ApplyInfiniteYou", "inputs": {
            "model": ["1", 0], "infusenet": ["2", 0], "identity": ["5", 0], "vae": ["6", 0], "strength": 1.0,
            "start": 0.9, "end": 0.2, "window": "steps (reference)", "infusenet_guidance": 1.0,
            "follow_model_guidance": False, "apply_to": "positive (reference)", "preset": "custom"}},
        "8": {"class_type": "PreviewAny", "inputs": {"source": ["7", 0]}},
    }


def node_errors(server) -> dict:
    with pytest.raises(PromptRejected) as refusal:
        server.submit(refused_prompt())
    return refusal.value.node_errors


def test_each_validation_message_of_the_pack_comes_once_per_node(server):
    errors = node_errors(server)
    apply = errors["7"]["errors"]
    assert [(e["type"], e["extra_info"]["input_name"], e["details"]) for e in apply] == [
        ("custom_validation_failed", "start", f"start - {BACKWARDS}")]
    (identity,) = errors["5"]["errors"]
    assert identity["extra_info"]["input_name"] == "det_size"
    assert identity["details"].startswith("det_size - InfiniteYou Identity From Images: det_size '999' is not one of")
    for loader, name in (("2", "InfiniteYou InfuseNet Loader"), ("3", "InfiniteYou Face Encoder Loader")):
        (message,) = errors[loader]["errors"]  # every file problem in one message, filed once
        assert f" - {name}: " in message["details"] and message["details"].count(f"{name}:") == 1, message
    assert server.alive()
    assert "ComfyUI internals this pack relies on changed" not in server.log()  # the middleware hook included


def test_other_nodes_errors_are_left_as_comfyui_made_them(server):
    errors = node_errors(server)
    assert errors["1"]["class_type"] == "UNETLoader"
    assert [e["type"] for e in errors["1"]["errors"]] == ["value_not_in_list"]
    assert errors["4"]["errors"] and all("no_such_photo.png" in e["details"] for e in errors["4"]["errors"])


def test_apply_shows_what_a_person_changes_and_folds_away_the_rest(server):
    apply = server.object_info()["InfU_ApplyInfiniteYou"]["input"]
    inputs = {**apply["required"], **apply.get("optional", {})}
    marked = {name for name, spec in inputs.items() if len(spec) > 1 and spec[1].get("advanced") is True}
    assert marked == APPLY_EXPERT
    assert {"model", "infusenet", "identity", "vae", "strength", "control_image", "mask", "preset"} <= set(inputs)
    identity = server.object_info()["InfU_IdentityFromImages"]["input"]
    assert "infusenet" not in identity["required"] and identity["optional"]["infusenet"][1]["advanced"] is True


def loader_check(server, **query) -> tuple[int, dict]:
    import json
    import urllib.parse

    status, body = server.request("/infiniteyou/loader-check?" + urllib.parse.urlencode(query))
    return status, json.loads(body)


LOADERS = {"2": "InfiniteYou InfuseNet Loader", "3": "InfiniteYou Face Encoder Loader"}


def test_a_loader_check_says_before_a_run_what_the_run_would_refuse(server):
    """What the page asks when a workflow opens: the loaders' own validation, word for word the run's message."""
    refused = node_errors(server)
    for node_id, name in LOADERS.items():
        node = refused_prompt()[node_id]
        status, answer = loader_check(server, node=node["class_type"], **node["inputs"])
        (error,) = refused[node_id]["errors"]
        assert status == 200 and answer["ok"] is False, answer
        assert error["details"].endswith(answer["message"]) and answer["message"].startswith(f"{name}: "), answer
    assert "image_proj_model.bin" in loader_check(server, **{"node": "InfU_InfuseNetLoader",
                                                           **refused_prompt()["2"]["inputs"]})[1]["message"]
    assert "recognition_arcface_ir_se50.pth" in loader_check(server, **{"node": "InfU_FaceEncoderLoader",
                                                                      **refused_prompt()["3"]["inputs"]})[1]["message"]


def test_a_loader_check_refuses_what_is_no_loader_and_the_server_keeps_serving(server):
    assert loader_check(server, node="UNETLoader", unet_name="x")[0] == 400
    assert loader_check(server, node="InfU_InfuseNetLoader", infusenet_name="x" * 5000)[0] == 400
    status, answer = loader_check(server, node="InfU_InfuseNetLoader", infusenet_name="../../etc/passwd",
                                  projection="auto (image_proj_model beside the InfuseNet)", weight_dtype="default")
    assert status == 200 and answer["ok"] is False, answer  # refused as a name, before any file is looked up
    assert server.alive()


def test_a_loader_check_of_files_in_place_is_ok(comfy_server):
    node = refused_prompt()["2"]
    inputs = {**node["inputs"], "infusenet_name": "aes_stage2/infusenet_aes_bf16.safetensors"}
    assert loader_check(comfy_server, node="InfU_InfuseNetLoader", **inputs) == (200, {"ok": True})
    assert loader_check(comfy_server, node="InfU_FaceEncoderLoader", **refused_prompt()["3"]["inputs"]) == (200, {"ok": True})
