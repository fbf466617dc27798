"""Hostile inputs sent through a running ComfyUI: each is refused with the node's name, the input and
the fix, nothing outside the model folders is read, and the next good prompt succeeds.

ComfyUI 0.3.75 does not check a V3 combo value against its options, accepts NaN and Infinity in the
prompt JSON, and passes linked inputs to ``validate_inputs`` as None: the pack checks all of it itself.
"""
from __future__ import annotations

import json
import math

import pytest

from devtools.server import PromptRejected
from tests.test_workflows import api_prompt, expect_failure, node_of, photos, run_ok  # noqa: F401 (fixture)

LOADER = "InfiniteYou InfuseNet Loader"
FACE_LOADER = "InfiniteYou Face Encoder Loader"
IDENTITY = "InfiniteYou Identity From Images"
POSE = "InfiniteYou Pose Image"
APPLY = "Apply InfiniteYou"
MASK = "InfiniteYou Face Mask"


def copy(prompt: dict) -> dict:
    return json.loads(json.dumps(prompt))


def with_input(prompt: dict, class_type: str, **values) -> dict:
    changed = copy(prompt)
    node_of(changed, class_type)[1]["inputs"].update(values)
    return changed


def rejected(server, prompt: dict, *fragments: str) -> str:
    """The prompt is refused at validation (HTTP 400), with every fragment in the message."""
    with pytest.raises(PromptRejected) as refusal:
        server.submit(prompt)
    message = " ".join(refusal.value.messages())
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


@pytest.fixture(scope="module")
def good(comfy_server, photos):  # noqa: F811
    return api_prompt(comfy_server, "02_pose_control.json")


def hostile_paths(base_dir) -> list[tuple[str, str, dict]]:
    models = base_dir / "models"
    return [
        ("InfU_InfuseNetLoader", LOADER, {"infusenet_name": "../../secret.safetensors"}),
        ("InfU_InfuseNetLoader", LOADER, {"infusenet_name": "aes_stage2/../../../../etc/hostname"}),
        ("InfU_InfuseNetLoader", LOADER,
         {"infusenet_name": str(models / "infiniteyou" / "infu_flux_v1.0" / "aes_stage2" / "InfuseNetModel")}),
        ("InfU_InfuseNetLoader", LOADER, {"infusenet_name": "aes_stage2\\..\\..\\secret.safetensors"}),
        ("InfU_InfuseNetLoader", LOADER, {"infusenet_name": "..%2f..%2fsecret.safetensors"}),
        ("InfU_InfuseNetLoader", LOADER, {"infusenet_name": "C:/Windows/secret.safetensors"}),
        ("InfU_InfuseNetLoader", LOADER, {"projection": "/etc/hostname"}),
        ("InfU_InfuseNetLoader", LOADER, {"projection": "../../aes_stage2/image_proj_model.bin"}),
        ("InfU_FaceEncoderLoader", FACE_LOADER, {"detector_pack": str(models / "insightface" / "models" / "antelopev2")}),
        ("InfU_FaceEncoderLoader", FACE_LOADER, {"detector_pack": "../../../insightface/models/antelopev2"}),
        ("InfU_FaceEncoderLoader", FACE_LOADER, {"arcface": str(models / "insightface" / "recognition_arcface_ir_se50.pth")}),
        ("InfU_FaceEncoderLoader", FACE_LOADER, {"arcface": "../insightface/recognition_arcface_ir_se50.pth"}),
    ]


def test_paths_outside_the_model_folders_are_refused(comfy_server, good):
    for class_type, node, values in hostile_paths(comfy_server.base_dir):
        name, value = next(iter(values.items()))
        message = rejected(comfy_server, with_input(good, class_type, **values), node, name, "choose one of")
        assert "refused" in message or "not one of" in message, message
    assert comfy_server.alive()
    run_ok(comfy_server, good)


UNKNOWN_ENUMS = [
    ("InfU_InfuseNetLoader", LOADER, "weight_dtype", "fp4", "fp8_e4m3fn"),
    ("InfU_FaceEncoderLoader", FACE_LOADER, "providers", "TPU", "CUDA"),
    ("InfU_IdentityFromImages", IDENTITY, "face_select", "biggest", "size_rank"),
    ("InfU_IdentityFromImages", IDENTITY, "det_size", "999", "640"),
    ("InfU_PoseImage", POSE, "face_select", "leftmost", "left_to_right"),
    ("InfU_ApplyInfiniteYou", APPLY, "window", "sigmas", "steps (reference)"),
    ("InfU_ApplyInfiniteYou", APPLY, "apply_to", "negative", "positive and negative"),
]


@pytest.mark.parametrize("class_type,node,name,value,allowed", UNKNOWN_ENUMS, ids=[f"{c[0]}.{c[2]}" for c in UNKNOWN_ENUMS])
def test_unknown_choices_are_refused_with_the_allowed_values(comfy_server, good, class_type, node, name, value, allowed):
    rejected(comfy_server, with_input(good, class_type, **{name: value}), node, name, repr(value), "choose one of", allowed)


NON_FINITE = [
    ("strength", math.nan), ("strength", math.inf), ("infusenet_guidance", math.nan),
    ("infusenet_guidance", math.inf), ("start", math.nan), ("end", -math.inf),
]


@pytest.mark.parametrize("name,value", NON_FINITE, ids=[f"{n}={v}" for n, v in NON_FINITE])
def test_non_finite_numbers_are_refused(comfy_server, good, name, value):
    rejected(comfy_server, with_input(good, "InfU_ApplyInfiniteYou", **{name: value}), APPLY, name, "finite number")


def test_non_finite_face_mask_grow_is_refused(comfy_server, photos):  # noqa: F811
    prompt = api_prompt(comfy_server, "07_recraft_face_inpaint.json")
    rejected(comfy_server, with_input(prompt, "InfU_FaceMask", grow=math.nan), MASK, "grow", "finite number")


def primitive_float(prompt: dict, node_id: str, value: float) -> list:
    prompt[node_id] = {"class_type": "PrimitiveFloat", "inputs": {"value": value}}
    return [node_id, 0]


def test_linked_start_and_end_are_checked_when_known(comfy_server, good):
    linked = copy(good)
    apply = node_of(linked, "InfU_ApplyInfiniteYou")[1]
    apply["inputs"]["start"] = primitive_float(linked, "900", 0.0)
    apply["inputs"]["end"] = primitive_float(linked, "901", 1.0)
    run_ok(comfy_server, linked)  # validation sees None for both: no crash

    backwards = copy(linked)
    backwards["900"]["inputs"]["value"] = 0.9
    backwards["901"]["inputs"]["value"] = 0.2
    expect_failure(comfy_server, backwards, APPLY, "start (0.9) is after end (0.2)")

    half = copy(good)  # one linked, one known: what is known is still checked at validation
    node_of(half, "InfU_ApplyInfiniteYou")[1]["inputs"].update(start=primitive_float(half, "900", 0.5), end=math.nan)
    rejected(comfy_server, half, APPLY, "end", "finite number")

    nan_strength = copy(good)
    node_of(nan_strength, "InfU_ApplyInfiniteYou")[1]["inputs"]["strength"] = primitive_float(nan_strength, "902", math.nan)
    expect_failure(comfy_server, nan_strength, APPLY, "strength", "finite number")
    run_ok(comfy_server, good)


def similarity_prompt(infusenet_name) -> dict:
    """Identity from a photo through a (possibly linked) InfuseNet name, scored against the same photo."""
    return {
        "1": {"class_type": "InfU_InfuseNetLoader", "inputs": {
            "infusenet_name": infusenet_name, "projection": "auto (image_proj_model beside the InfuseNet)",
            "weight_dtype": "default"}},
        "2": {"class_type": "InfU_FaceEncoderLoader", "inputs": {
            "detector_pack": "antelopev2", "arcface": "recognition_arcface_ir_se50.pth", "providers": "auto"}},
        "3": {"class_type": "LoadImage", "inputs": {"image": "face.png"}},
        "4": {"class_type": "InfU_IdentityFromImages", "inputs": {
            "face_encoder": ["2", 0], "infusenet": ["1", 0], "images": ["3", 0], "face_select": "largest",
            "face_index": 0, "det_size": "auto"}},
        "5": {"class_type": "InfU_IdentitySimilarity", "inputs": {
            "face_encoder": ["2", 0], "identity": ["4", 0], "images": ["3", 0]}},
    }


def test_linked_infusenet_name_is_checked_at_execution(comfy_server):
    """A loader's choice linked from another pack's node (the test server's ``InfUTest_ComboSource``, tests/conftest.py)
    reaches validation as None: the loader checks it when it runs."""
    from tests.test_workflows import save_photo

    server = comfy_server
    save_photo(server.base_dir / "input" / "face.png", (256, 256), [(72, 56, 184, 200)], 1)

    def linked(value: str) -> dict:
        prompt = similarity_prompt(["9", 0])
        prompt["9"] = {"class_type": "InfUTest_ComboSource", "inputs": {"value": value}}
        return prompt

    result = run_ok(server, linked("aes_stage2/infusenet_aes_bf16.safetensors"))
    assert "image 0:" in result.output("5")["text"][0]
    expect_failure(server, linked("../../secret.safetensors"), LOADER, "infusenet_name", "choose one of")
    expect_failure(server, linked(str(server.base_dir / "models" / "infiniteyou" / "aes_stage2" /
                                      "infusenet_aes_bf16.safetensors")), LOADER, "infusenet_name")
    assert server.alive()
    run_ok(server, similarity_prompt("aes_stage2/infusenet_aes_bf16.safetensors"))


def primitive_int(prompt: dict, node_id: str, value: int) -> list:
    prompt[node_id] = {"class_type": "PrimitiveInt", "inputs": {"value": value}}
    return [node_id, 0]


def test_linked_whole_numbers_are_checked_when_the_node_runs(comfy_server, good):
    wide = copy(good)
    node_of(wide, "InfU_PoseImage")[1]["inputs"]["width"] = primitive_int(wide, "910", 100000)
    message = expect_failure(comfy_server, wide, POSE, "width must be a whole number between 64 and 16384", "100000")
    assert "cv2" not in message and "resize" not in message, message

    regions = api_prompt(comfy_server, "12_two_people_auto_regions.json")
    node_of(regions, "InfU_FaceRegions")[1]["inputs"]["feather"] = primitive_int(regions, "911", -3)
    expect_failure(comfy_server, regions, "InfiniteYou Face Regions", "feather must be a whole number between 0 and 256",
                   "-3")
    assert comfy_server.alive()


NULL_CHOICES = [
    ("InfU_InfuseNetLoader", LOADER, "weight_dtype", "fp8_e4m3fn"),
    ("InfU_InfuseNetLoader", LOADER, "projection", "auto (image_proj_model beside the InfuseNet)"),
    ("InfU_FaceEncoderLoader", FACE_LOADER, "providers", "CUDA"),
]


@pytest.mark.parametrize("class_type,node,name,allowed", NULL_CHOICES, ids=[f"{c[0]}.{c[2]}" for c in NULL_CHOICES])
def test_a_null_choice_is_refused_at_validation_with_the_allowed_values(comfy_server, good, class_type, node, name,
                                                                         allowed):
    rejected(comfy_server, with_input(good, class_type, **{name: None}), node, name, "null", "choose one of", allowed)


@pytest.mark.parametrize("name", ["detector_pack", "arcface"])
def test_a_very_long_face_model_name_is_refused_without_the_models_path(comfy_server, good, name):
    message = rejected(comfy_server, with_input(good, "InfU_FaceEncoderLoader", **{name: "a" * 5000}), FACE_LOADER,
                       name, "choose one of", "5000 characters")
    assert "Errno" not in message and str(comfy_server.base_dir) not in message, message[:2000]
    assert len(message) < 2000, len(message)
    assert comfy_server.alive()


def test_a_loader_choice_linked_to_the_wrong_type_is_refused(comfy_server, good):
    """The loaders ask ComfyUI which inputs are linked (to tell a link from a null); they then check each
    link's type themselves, as ComfyUI does for other nodes."""
    wrong = copy(good)
    image_node = node_of(wrong, "LoadImage")[0]
    node_of(wrong, "InfU_InfuseNetLoader")[1]["inputs"]["weight_dtype"] = [image_node, 0]
    rejected(comfy_server, wrong, LOADER, "weight_dtype is linked to an output of type IMAGE; it takes COMBO")
