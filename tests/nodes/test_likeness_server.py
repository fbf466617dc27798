"""The likeness controls on a real ComfyUI server: Identity Similarity's ranking, best_images and report;
Apply InfiniteYou's presets sent by the API; the likeness blend with the generated sim_stage1 and aes_stage2
InfuseNets; the preset table in /object_info, where the web extension reads it."""
from __future__ import annotations

import io as _io
import json

import numpy as np
import pytest
from PIL import Image

from devtools.face_models import draw_faces

AES = "aes_stage2/infusenet_aes_bf16.safetensors"
SIM = "sim_stage1/infusenet_sim_bf16.safetensors"
PRESETS = {
    "custom": None,
    "reference (strength 1, start 0)": {"strength": 1.0, "start": 0.0, "end": 1.0},
    "less pasted (start 0.1)": {"strength": 1.0, "start": 0.1, "end": 1.0},
    "less pasted, freer (start 0.1, strength 0.9)": {"strength": 0.9, "start": 0.1, "end": 1.0},
}


PHOTOS = {  # name: (size, face box, texture seed); the stand-in detector finds the bright rectangles
    "infu_likeness_identity.png": ((256, 256), (72, 56, 184, 200), 1),
    "infu_likeness_other.png": ((200, 240), (40, 50, 150, 190), 2),
    "infu_likeness_third.png": ((320, 240), (180, 40, 260, 140), 3),
}
NO_FACE = "infu_likeness_no_face.png"


@pytest.fixture(scope="module")
def photos(comfy_server):
    folder = comfy_server.base_dir / "input"
    folder.mkdir(parents=True, exist_ok=True)
    for name, (size, box, seed) in PHOTOS.items():
        Image.fromarray((draw_faces(size, [box], texture_seed=seed) * 255).astype(np.uint8)).save(folder / name)
    Image.fromarray(np.zeros((128, 128, 3), np.uint8)).save(folder / NO_FACE)
    return folder


def with_defaults(prompt: dict, object_info: dict) -> dict:
    """Fill each required widget a node lists but the prompt leaves out with its default (what the frontend
    does for a node added by hand)."""
    for node in prompt.values():
        required = object_info[node["class_type"]]["input"].get("required", {})
        for name, spec in required.items():
            if name in node["inputs"] or len(spec) < 2 or not isinstance(spec[1], dict):
                continue
            options = spec[1].get("options") or (spec[0] if isinstance(spec[0], list) else None)
            if "default" in spec[1]:
                node["inputs"][name] = spec[1]["default"]
            elif options:
                node["inputs"][name] = options[0]
    return prompt


def identity_nodes(infusenet: str = AES) -> dict:
    return {
        "4": {"class_type": "InfU_InfuseNetLoader", "inputs": {"infusenet_name": infusenet}},
        "5": {"class_type": "InfU_FaceEncoderLoader", "inputs": {}},
        "6": {"class_type": "LoadImage", "inputs": {"image": "infu_likeness_identity.png"}},
        "10": {"class_type": "InfU_IdentityFromImages", "inputs": {"face_encoder": ["5", 0], "infusenet": ["4", 0],
                                                                   "images": ["6", 0]}},
    }


def generation(apply_node: dict, extra: dict | None = None) -> dict:
    """FLUX dev (the small test model), 64x96, 2 steps, one identity, ``apply_node`` as node 12."""
    return {
        **identity_nodes(),
        **(extra or {}),
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux1-dev.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": "clip_l.safetensors", "type": "stable_diffusion"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "12": apply_node,
        "20": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": "a portrait"}},
        "21": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["20", 0], "guidance": 3.5}},
        "22": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": ""}},
        "30": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 96, "batch_size": 1}},
        "31": {"class_type": "KSampler", "inputs": {"model": ["12", 0], "positive": ["21", 0], "negative": ["22", 0],
                                                     "latent_image": ["30", 0], "seed": 42, "steps": 2, "cfg": 1.0,
                                                     "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        "32": {"class_type": "VAEDecode", "inputs": {"samples": ["31", 0], "vae": ["3", 0]}},
        "33": {"class_type": "PreviewImage", "inputs": {"images": ["32", 0]}},
    }


def apply_node(strength=1.0, start=0.0, end=1.0, preset=None) -> dict:
    inputs = {"model": ["1", 0], "infusenet": ["4", 0], "identity": ["10", 0], "vae": ["3", 0], "strength": strength,
              "start": start, "end": end, "window": "steps (reference)", "infusenet_guidance": 1.0,
              "follow_model_guidance": False, "apply_to": "positive (reference)"}
    if preset is not None:
        inputs["preset"] = preset
    return {"class_type": "InfU_ApplyInfiniteYou", "inputs": inputs}


def blend_node(likeness: float, sim=("40", 0), aes=("4", 0), preset="custom", strength=1.0) -> dict:
    return {"class_type": "InfU_ApplyLikenessBlend", "inputs": {
        "model": ["1", 0], "infusenet_sim": list(sim), "infusenet_aes": list(aes), "identity": ["10", 0],
        "vae": ["3", 0], "likeness": likeness, "strength": strength, "start": 0.0, "end": 1.0, "preset": preset}}


SIM_LOADER = {"40": {"class_type": "InfU_InfuseNetLoader", "inputs": {"infusenet_name": SIM}}}


def run(server, prompt: dict):
    prompt = with_defaults(json.loads(json.dumps(prompt)), server.object_info())
    result = server.run(prompt, timeout=600)
    assert result.status == "success", f"{result.error}\n{server.log()[-4000:]}"
    return result


def report(result, node_id: str) -> dict:
    return json.loads(result.output(node_id)["infu_report"][0])


def pixels(server, result, node_id: str) -> np.ndarray:
    images = result.images(node_id)
    assert images, json.dumps(result.history)[:2000]
    return np.stack([np.asarray(Image.open(_io.BytesIO(server.view(i)))) for i in images])


def test_the_preset_table_is_in_object_info(comfy_server):
    info = comfy_server.object_info()
    for node_id, group in (("InfU_ApplyInfiniteYou", "optional"), ("InfU_ApplyLikenessBlend", "required")):
        spec = info[node_id]["input"][group]["preset"]
        assert spec[1]["infu_presets"] == PRESETS and spec[1]["default"] == "custom"
        assert info[node_id]["input_order"][group][-1] == "preset"
    apply_widgets = [n for n in info["InfU_ApplyInfiniteYou"]["input_order"]["required"]
                     if n not in ("model", "infusenet", "identity", "vae")]
    assert apply_widgets[-1] == "apply_to"  # preset is the widget right after apply_to
    blend = info["InfU_ApplyLikenessBlend"]
    assert blend["display_name"] == "Apply InfiniteYou (likeness blend)"
    assert blend["input"]["required"]["likeness"][1]["default"] == 0.5
    assert blend["output"] == ["MODEL"]


def test_similarity_ranks_the_batch_and_keeps_the_best(comfy_server, photos):
    prompt = {
        **identity_nodes(),
        "50": {"class_type": "LoadImage", "inputs": {"image": "infu_likeness_other.png"}},
        "51": {"class_type": "LoadImage", "inputs": {"image": NO_FACE}},
        "52": {"class_type": "LoadImage", "inputs": {"image": "infu_likeness_third.png"}},
        # [other, no face, identity, third], all at the first one's size
        "53": {"class_type": "ImageBatch", "inputs": {"image1": ["50", 0], "image2": ["51", 0]}},
        "54": {"class_type": "ImageBatch", "inputs": {"image1": ["53", 0], "image2": ["6", 0]}},
        "55": {"class_type": "ImageBatch", "inputs": {"image1": ["54", 0], "image2": ["52", 0]}},
        "56": {"class_type": "InfU_IdentitySimilarity", "inputs": {"face_encoder": ["5", 0], "identity": ["10", 0],
                                                                   "images": ["55", 0], "keep": 2}},
        "57": {"class_type": "PreviewImage", "inputs": {"images": ["56", 3]}},
        "58": {"class_type": "PreviewImage", "inputs": {"images": ["55", 0]}},
    }
    result = run(comfy_server, prompt)
    shown = report(result, "56")
    rows = shown["rows"]
    scores = [r["score"] for r in rows]
    assert scores[1] is None and all(s is not None for i, s in enumerate(scores) if i != 1)
    assert rows[1]["band"] == "no_face" and rows[1]["rank"] == 4 and rows[1]["kept"] is False
    by_score = sorted((i for i in range(4) if scores[i] is not None), key=lambda i: -scores[i])
    assert [rows[i]["rank"] for i in by_score] == [1, 2, 3]
    assert shown["kept"] == by_score[:2] and shown["best_index"] == by_score[0]
    assert [r["band"] for r in rows if r["score"] is not None] == [
        "same" if s >= 0.45 else "likely" if s >= 0.32 else "unlikely" for s in scores if s is not None]
    # best_images: the two best images of the batch, best first
    batch, best = pixels(comfy_server, result, "58"), pixels(comfy_server, result, "57")
    assert best.shape[0] == 2 and np.array_equal(best, batch[by_score[:2]])
    text = result.output("56")["text"][0]
    assert f"kept: image {by_score[0]}, image {by_score[1]} (best first)" in text
    assert "image 1: no face, rank 4" in text and f"image {by_score[0]}: {scores[by_score[0]]:.4f}" in text


def test_a_preset_sent_by_the_api_runs_its_values(comfy_server, photos):
    preset = "less pasted, freer (start 0.1, strength 0.9)"
    by_preset = run(comfy_server, generation(apply_node(1.0, 0.0, 1.0, preset)))
    assert {k: report(by_preset, "12")[k] for k in ("preset", "strength", "start", "end")} == {
        "preset": preset, "strength": 0.9, "start": 0.1, "end": 1.0}
    by_hand = run(comfy_server, generation(apply_node(0.9, 0.1, 1.0)))
    assert report(by_hand, "12")["preset"] == "custom"  # a prompt without preset runs as before
    assert np.array_equal(pixels(comfy_server, by_preset, "33"), pixels(comfy_server, by_hand, "33"))
    reference = run(comfy_server, generation(apply_node(1.0, 0.0, 1.0, "custom")))
    assert not np.array_equal(pixels(comfy_server, reference, "33"), pixels(comfy_server, by_hand, "33"))


def test_likeness_blend_with_sim_and_aes(comfy_server, photos):
    half = run(comfy_server, generation(blend_node(0.5), SIM_LOADER))
    shown = report(half, "12")
    assert [(b["socket"], b["variant"], b["strength"], b["ran"], b["reprojected"]) for b in shown["branches"]] == [
        ("infusenet_sim", "sim_stage1", 0.5, True, False), ("infusenet_aes", "aes_stage2", 0.5, True, False)]
    assert shown["warnings"] == [] and shown["likeness"] == 0.5
    loader = json.loads(half.output("40")["infu_report"][0])
    assert loader["variant"] == "sim_stage1" and loader["tokens"] == 8
    aes_only = run(comfy_server, generation(blend_node(0.0), SIM_LOADER))
    assert [b["ran"] for b in report(aes_only, "12")["branches"]] == [False, True]
    single = run(comfy_server, generation(apply_node()))
    assert np.array_equal(pixels(comfy_server, aes_only, "33"), pixels(comfy_server, single, "33"))
    assert not np.array_equal(pixels(comfy_server, half, "33"), pixels(comfy_server, single, "33"))
    swapped = run(comfy_server, generation(blend_node(0.5, sim=("4", 0), aes=("40", 0)), SIM_LOADER))
    assert "swapped" in report(swapped, "12")["warnings"][0]


@pytest.mark.parametrize("field,value,expected", [
    ("likeness", 1.5, "likeness must be a finite number between 0.0 and 1.0"),
    ("preset", "less pasted", "preset 'less pasted' is not one of"),
])
def test_blend_refuses_bad_values_by_name(comfy_server, photos, field, value, expected):
    from devtools.server import PromptRejected

    node = blend_node(0.5)
    node["inputs"][field] = value
    prompt = with_defaults(generation(node, SIM_LOADER), comfy_server.object_info())
    with pytest.raises(PromptRejected) as refused:
        comfy_server.submit(prompt)
    messages = " ".join(refused.value.messages())
    assert "Apply InfiniteYou (likeness blend)" in messages and expected in messages, messages
