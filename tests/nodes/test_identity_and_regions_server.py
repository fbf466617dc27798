"""Identity From Images' combine modes and photo report, and Face Regions, in a small graph on a running
ComfyUI server; the numbers compared with the same steps run in this process on the same model files."""
from __future__ import annotations

import io as _io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from tests.test_workflows import api_prompt, node_of, photos, run_ok  # noqa: F401  (photos is a fixture)

EILEEN, GRACE, TWO = ("infiniteyou_example_eileen_collins.jpg", "infiniteyou_example_grace_hopper.jpg",
                      "infiniteyou_example_two_people.jpg")
WIDTH, HEIGHT = 768, 576  # the 1152x864 two-people photo fills it exactly (no white padding)


NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def same_report(got: str, expected: str) -> None:
    """The same words and, number by number, the same values (sharpness varies in its last digits between
    processes: the detector's keypoints differ by float rounding, the aligned crop by a few grey levels)."""
    assert NUMBER.sub("#", got) == NUMBER.sub("#", expected)
    assert [float(v) for v in NUMBER.findall(got)] == pytest.approx([float(v) for v in NUMBER.findall(expected)],
                                                                     rel=5e-3, abs=2e-3)


def load_image(folder, name) -> torch.Tensor:
    """What LoadImage gives: RGB float 0..1, [1, H, W, 3]."""
    return torch.from_numpy(np.asarray(Image.open(folder / name).convert("RGB")).astype(np.float32) / 255.0)[None]


@pytest.fixture(scope="module")
def local_encoder(model_dir):
    from infusenet.face.encoder import load_face_encoder

    return load_face_encoder(model_dir / "insightface", model_dir / "insightface" / "recognition_arcface_ir_se50.pth")


def graph(server) -> dict:
    base = api_prompt(server, "03_multi_reference_identity.json")
    encoder_id, encoder = node_of(base, "InfU_FaceEncoderLoader")
    infusenet_id, infusenet = node_of(base, "InfU_InfuseNetLoader")
    ident = {"face_select": "largest", "face_index": 0, "det_size": "auto", "face_encoder": ["1", 0], "infusenet": ["2", 0]}
    return {
        "1": encoder, "2": infusenet,
        "3": {"class_type": "LoadImage", "inputs": {"image": EILEEN}},
        "4": {"class_type": "LoadImage", "inputs": {"image": GRACE}},
        "5": {"class_type": "LoadImage", "inputs": {"image": TWO}},
        "6": {"class_type": "InfU_IdentityFromImages", "inputs": {**ident, "images": ["3", 0], "combine": "mean"}},
        "7": {"class_type": "InfU_IdentityFromImages",  # add_to: both photos, recombined quality weighted
              "inputs": {**ident, "images": ["4", 0], "combine": "quality weighted", "add_to": ["6", 0]}},
        "8": {"class_type": "InfU_IdentityFromImages", "inputs": {**ident, "images": ["4", 0], "combine": "best photo"}},
        "9": {"class_type": "PreviewAny", "inputs": {"source": ["7", 2]}},
        "10": {"class_type": "InfU_FaceRegions", "inputs": {
            "face_encoder": ["1", 0], "layout": ["5", 0], "width": WIDTH, "height": HEIGHT, "people": 2,
            "order": "left to right", "feather": 0, "det_size": "auto", "identity_1": ["7", 0], "identity_2": ["8", 0]}},
        "11": {"class_type": "PreviewAny", "inputs": {"source": ["10", 5]}},
        "12": {"class_type": "MaskToImage", "inputs": {"mask": ["10", 4]}},
        "13": {"class_type": "SaveImage", "inputs": {"images": ["12", 0], "filename_prefix": "infu_regions"}},
        "14": {"class_type": "MaskToImage", "inputs": {"mask": ["10", 2]}},
        "15": {"class_type": "SaveImage", "inputs": {"images": ["14", 0], "filename_prefix": "infu_unused_mask"}},
    }


def test_combine_photo_report_and_regions_through_the_server(comfy_server, photos, local_encoder):  # noqa: F811
    from infusenet.face.identity import identity_from_images, merge_identities, photo_report_lines
    from infusenet.face.regions import face_regions

    result = run_ok(comfy_server, graph(comfy_server))
    outputs = result.history["outputs"]

    # the same steps in this process, on the same files
    first = identity_from_images(local_encoder, load_image(photos, EILEEN), combine_mode="mean")
    second = identity_from_images(local_encoder, load_image(photos, GRACE), combine_mode="quality weighted")
    chained = merge_identities(first, second, "quality weighted")
    best = identity_from_images(local_encoder, load_image(photos, GRACE), combine_mode="best photo")
    regions = face_regions(local_encoder, load_image(photos, TWO), WIDTH, HEIGHT, people=2)

    photo_report = outputs["9"]["text"][0]
    same_report(photo_report, "\n".join(photo_report_lines(chained)))
    assert photo_report.count("\n") == 1 and "weight" in photo_report and "(quality weighted)" in photo_report
    ident = json.loads(outputs["7"]["infu_report"][0])
    assert ident["combine"] == "quality weighted" and len(ident["photos"]) == 2
    q = [p["quality"] for p in ident["photos"]]
    assert [p["weight"] for p in ident["photos"]] == pytest.approx([v / sum(q) for v in q], abs=2e-4)
    assert q == pytest.approx([p.quality for p in chained.qualities], rel=2e-3)
    sizes = [v for p in ident["photos"] for v in p["face_size"]]
    assert sizes == pytest.approx([112, 144, 80, 100], abs=1.5)  # the photos' face boxes (JPEG-soft edges)

    report = outputs["11"]["text"][0].splitlines()
    cosine = float(torch.nn.functional.normalize(chained.embedding, dim=0) @ torch.nn.functional.normalize(best.embedding, dim=0))
    assert report[0] == f"2 regions on {WIDTH}x{HEIGHT} from 2 faces in the layout photo; order left to right; feather 0 px"
    assert report[3] == "mask_3: unused (people = 2), all zero" and report[4] == "mask_4: unused (people = 2), all zero"
    assert report[5] == f"identity_1 vs identity_2: ArcFace cosine {cosine:.3f}"
    # the stand-in ArcFace finds every generated face alike, so these two identities are "the same person"
    assert cosine >= 0.45 and report[6].startswith("WARNING: identity_1 and identity_2 are the same person")
    panel = json.loads(outputs["10"]["infu_report"][0])
    assert panel["kind"] == "regions" and panel["pairs"][0]["cosine"] == pytest.approx(cosine, abs=1e-4)
    assert [g["identity"] for g in panel["regions"]] == ["identity_1", "identity_2"] and panel["warnings"]
    assert f"InfiniteYou Face Regions: identity_1 and identity_2 are the same person to ArcFace (cosine {cosine:.3f}" \
        in comfy_server.log()
    assert Image.open(_io.BytesIO(comfy_server.view(panel["images"][0]))).size == (WIDTH, HEIGHT)

    saved = [np.asarray(Image.open(_io.BytesIO(comfy_server.view(i))))[..., 0] for i in result.images("13")]
    assert len(saved) == 2
    for k in range(2):
        np.testing.assert_array_equal(saved[k], (regions.masks[k].numpy() * 255).astype(np.uint8))
    assert saved[0][HEIGHT // 2, WIDTH // 4] == 255 and saved[1][HEIGHT // 2, 3 * WIDTH // 4] == 255
    unused = np.asarray(Image.open(_io.BytesIO(comfy_server.view(result.images("15")[0]))))
    assert unused.shape[:2] == (HEIGHT, WIDTH) and unused.max() == 0


def test_too_few_faces_is_a_clear_error_from_the_node(comfy_server, photos):  # noqa: F811
    prompt = graph(comfy_server)
    prompt["10"]["inputs"]["people"] = 3
    result = comfy_server.run(prompt, timeout=600)
    assert result.status == "error"
    message = result.error["exception_message"]
    assert message.startswith("InfiniteYou Face Regions: 3 people asked for") and "has 2 faces" in message


@pytest.mark.parametrize("node,name,value,allowed", [
    ("7", "combine", "median", "'mean', 'quality weighted', 'best photo'"),
    ("10", "order", "clockwise", "'left to right', 'right to left', 'largest first', 'top to bottom'"),
])
def test_unknown_choices_are_refused_with_the_allowed_values(comfy_server, photos, node, name, value, allowed):  # noqa: F811
    from devtools.server import PromptRejected

    prompt = graph(comfy_server)
    prompt[node]["inputs"][name] = value
    with pytest.raises(PromptRejected) as refusal:
        comfy_server.submit(prompt)
    message = " ".join(refusal.value.messages())
    title = "InfiniteYou Identity From Images" if node == "7" else "InfiniteYou Face Regions"
    assert f"{title}: {name} {value!r} is not one of the listed values" in message and allowed in message
