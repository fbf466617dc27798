"""What the nodes send the web extension after a run (``ui["infu_report"]``), read from /history.

The self-test workflow uses every kind of report: InfuseNet loader, identity (photo with box and
keypoints, aligned crop), pose image, Apply (identity fingerprint, mask thumbnail), similarity."""
from __future__ import annotations

import json

from PIL import Image
import io as _io

from devtools.comfy_env import PACK_ROOT
from devtools.infusenet_files import FLUX_WIDTH_SINGLE_ONLY_SPEC
from tests.test_workflows import photos, run_ok  # noqa: F401  (photos is a fixture)
from devtools.workflow_api import to_api


def reports_by_type(server, result, prompt) -> dict:
    out = {}
    for node_id, output in result.history["outputs"].items():
        if "infu_report" in output:
            out[prompt[node_id]["class_type"]] = json.loads(output["infu_report"][0])
    return out


def test_self_test_run_reports_what_each_node_did(comfy_server, photos):  # noqa: F811
    workflow = json.loads((PACK_ROOT / "workflows" / "00_self_test_untrained_noise.json").read_text())
    prompt = to_api(workflow, comfy_server.object_info())
    result = run_ok(comfy_server, prompt)
    r = reports_by_type(comfy_server, result, prompt)
    assert set(r) >= {"InfU_InfuseNetLoader", "InfU_IdentityFromImages", "InfU_PoseImage", "InfU_ApplyInfiniteYou",
                      "InfU_IdentitySimilarity"}, sorted(r)
    loader = r["InfU_InfuseNetLoader"]
    spec = FLUX_WIDTH_SINGLE_ONLY_SPEC  # the self-test names link to the fixture set's official-name InfuseNet
    assert "bf16" in loader["precision"] and loader["tokens"] == 8
    assert (loader["double_blocks"], loader["single_blocks"]) == (spec.num_layers, spec.num_single_layers)
    ident = r["InfU_IdentityFromImages"]
    assert len(ident["photos"]) == 1 and len(ident["photos"][0]["keypoints"]) == 5 and len(ident["photos"][0]["box"]) == 4
    face_png = Image.open(_io.BytesIO(comfy_server.view(ident["images"][0])))
    assert face_png.size == (768, 512)  # the photo with box and keypoints, beside the aligned crop
    assert r["InfU_PoseImage"]["width"] == 128 and r["InfU_PoseImage"]["images"]
    apply = r["InfU_ApplyInfiniteYou"]
    assert apply["fingerprint"] == ident["fingerprint"] and apply["control"] is True
    mask = Image.open(_io.BytesIO(comfy_server.view(apply["mask"][0])))
    assert max(mask.size) == 128
    sim = r["InfU_IdentitySimilarity"]
    assert len(sim["rows"]) == 1 and sim["rows"][0]["band"] and sim["rows"][0]["meaning"]
    assert sim["fingerprint"] == ident["fingerprint"]
    assert r["InfU_FaceEncoderLoader"]["providers"] and r["InfU_FaceEncoderLoader"]["device"] == "cpu"


def test_face_mask_reports_its_mask(comfy_server, photos):  # noqa: F811
    """The Face Mask of the recraft workflow (07) as it sets it, with the generation cut away (``face_part``)."""
    from tests.test_workflows import api_prompt, face_part

    prompt = face_part(api_prompt(comfy_server, "07_recraft_face_inpaint.json"), comfy_server.object_info(),
                       {"InfU_FaceMask"})
    assert {n["class_type"] for n in prompt.values()} == {"InfU_FaceEncoderLoader", "LoadImage", "InfU_FaceMask",
                                                          "MaskToImage", "PreviewImage"}
    result = run_ok(comfy_server, prompt)
    r = reports_by_type(comfy_server, result, prompt)
    assert r["InfU_FaceMask"]["grow"] == 0.35 and r["InfU_FaceMask"]["mask"]
    assert max(Image.open(_io.BytesIO(comfy_server.view(r["InfU_FaceMask"]["mask"][0]))).size) == 128
