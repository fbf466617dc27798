"""The shipped workflows on a real ComfyUI server: what they offer to download, their links, and the
graphs built from them (strength 0, bad inputs, memory, LoRAs and a ControlNet). Each workflow runs end to
end from the real frontend's own prompt in tests/browser/test_workflows_in_frontend.py, with the
substitutions below.

Test-only substitutions, the same for every workflow (nothing else is changed):
* DualCLIPLoader (CLIP-L + T5-XXL) becomes CLIPLoader with the small CLIP-L: ComfyUI's T5-XXL is
  4.7B parameters, too large for this machine. The FLUX test model takes CLIP-L's 768-wide context.
  Likewise FLUX.2 [klein]'s CLIPLoader (Qwen3-4B, type flux2) loads the small CLIP-L as type
  stable_diffusion; the klein test model takes its 768-wide context (tests/test_workflow_flux2.py).
* Sizes shrink (864 -> 64, 1152 -> 96, 576 -> 48 pixels) and KSampler (or FLUX.2's Flux2Scheduler) runs
  2 steps, so that a random 3072-wide FLUX runs in seconds on a CPU.
* The example photos named by LoadImage are replaced by synthetic faces of the same names, which the test
  detector finds (:func:`write_photos`).
"""
from __future__ import annotations

import io as _io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from devtools.comfy_env import PACK_ROOT
from devtools.face_models import draw_faces
from devtools.workflow_api import to_api
from tests.host_features import newest_host_only

ALL_WORKFLOWS = sorted((PACK_ROOT / "workflows").glob("*.json"))


def uses_other_bases(path: Path) -> bool:
    """Workflows on a GGUF, Fill or Kontext base run on ``bases_server`` (it has ComfyUI-GGUF and those files)."""
    from devtools.bases import WORKFLOW_FILES

    return any(f'"{name}"' in path.read_text() for name in WORKFLOW_FILES)


BASES_WORKFLOWS = [p for p in ALL_WORKFLOWS if uses_other_bases(p)]
SIZE_MAP = {864: 64, 1152: 96, 576: 48}
TEST_STEPS = 2
STATIC = newest_host_only("reads the shipped workflow files and scripts/build_workflows.py; no server")


def save_photo(path: Path, size, boxes, seed) -> None:
    pixels = (draw_faces(size, boxes, texture_seed=seed) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.fixture(scope="module")
def photos(comfy_server):
    return write_photos(comfy_server.base_dir / "input")


@pytest.fixture(scope="module")
def bases_photos(bases_server):
    return write_photos(bases_server.base_dir / "input")


TEST_PHOTOS = (  # name, size, face box, texture seed
    ("infiniteyou_example_eileen_collins.jpg", (256, 256), (72, 56, 184, 200), 1),
    ("infiniteyou_example_eileen_collins_mirrored.jpg", (200, 240), (40, 50, 150, 190), 2),
    ("infiniteyou_example_eileen_collins_small.jpg", (240, 240), (60, 50, 180, 190), 5),
    ("infiniteyou_example_grace_hopper.jpg", (320, 240), (180, 40, 260, 140), 3),
    ("infu_selftest_face.png", (256, 256), (72, 56, 184, 200), 7),
)


def write_photos(folder: Path) -> Path:
    """Synthetic faces under the example photos' names (the test detector does not know real faces)."""
    for name, size, box, seed in TEST_PHOTOS:
        save_photo(folder / name, size, [box], seed)
    pixels = (draw_faces((1152, 864), [(150, 200, 450, 600), (700, 200, 1000, 600)], texture_seed=6) * 255)
    Image.fromarray(pixels.astype(np.uint8)).save(folder / "infiniteyou_example_two_people.jpg")
    Image.fromarray(np.zeros((128, 128, 3), np.uint8)).save(folder / "infiniteyou_no_face.png")
    return folder


def for_test_host(prompt: dict) -> dict:
    """The documented test-only substitutions (module docstring)."""
    prompt = json.loads(json.dumps(prompt))
    for node in prompt.values():
        if node["class_type"] == "DualCLIPLoader":
            node["class_type"] = "CLIPLoader"
            node["inputs"] = {"clip_name": "clip_l.safetensors", "type": "stable_diffusion"}
        if node["class_type"] == "CLIPLoader" and node["inputs"].get("type") == "flux2":
            node["inputs"].update(clip_name="clip_l.safetensors", type="stable_diffusion")
        for key in ("width", "height", "x", "y"):
            value = node["inputs"].get(key)
            if isinstance(value, int) and value in SIZE_MAP:
                node["inputs"][key] = SIZE_MAP[value]
        if node["class_type"] in ("KSampler", "Flux2Scheduler"):
            node["inputs"]["steps"] = min(node["inputs"]["steps"], TEST_STEPS)
    return prompt


def refusal_here(path: Path) -> tuple[str, ...]:
    """What the running ComfyUI answers to a shipped workflow it cannot run (fragments of the message), or ()
    when it runs it: a FLUX.2 [klein] workflow on a ComfyUI without FLUX.2 [klein] is refused with its version."""
    from infusenet import host

    flux2 = any(n["type"] == "EmptyFlux2LatentImage" for n in json.loads(path.read_text())["nodes"])
    if flux2 and host.flux2_klein_lacks():
        return (f"{host.host_label()} cannot load FLUX.2 [klein]",)
    return ()


def api_prompt(server, name: str) -> dict:
    workflow = json.loads((PACK_ROOT / "workflows" / name).read_text())
    return for_test_host(to_api(workflow, server.object_info()))


def face_part(prompt: dict, object_info: dict, face_nodes: set[str]) -> dict:
    """The nodes of ``face_nodes``'s classes in ``prompt`` with everything they read (loaders, photos), each shown by
    a preview where nothing in the part reads it: the graph with the generation cut away, so that only the face
    nodes (as the shipped workflow sets them) run, not a FLUX."""
    keep: set[str] = set()

    def with_inputs(node_id: str) -> None:
        if node_id not in keep:
            keep.add(node_id)
            for value in prompt[node_id]["inputs"].values():
                if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                    with_inputs(value[0])

    for node_id, node in prompt.items():
        if node["class_type"] in face_nodes:
            with_inputs(node_id)
    part = {node_id: json.loads(json.dumps(prompt[node_id])) for node_id in keep}
    read = {v[0] for node in part.values() for v in node["inputs"].values() if isinstance(v, list) and len(v) == 2}
    last = max(int(k) for k in prompt)
    for node_id, node in sorted(part.items()):
        info = object_info[node["class_type"]]
        if node["class_type"] not in face_nodes or node_id in read or info.get("output_node"):
            continue
        outputs = info["output"]
        last += 2
        if "IMAGE" in outputs:
            part[str(last)] = {"class_type": "PreviewImage", "inputs": {"images": [node_id, outputs.index("IMAGE")]}}
        else:
            part[str(last - 1)] = {"class_type": "MaskToImage", "inputs": {"mask": [node_id, outputs.index("MASK")]}}
            part[str(last)] = {"class_type": "PreviewImage", "inputs": {"images": [str(last - 1), 0]}}
    return part


def node_of(prompt: dict, class_type: str) -> tuple[str, dict]:
    matches = [(k, v) for k, v in prompt.items() if v["class_type"] == class_type]
    assert matches, f"no {class_type} in the prompt"
    return matches[0]


def saved_pixels(server, result) -> np.ndarray:
    images = [i for i in result.images() if i.get("type") == "output"]  # SaveImage, not previews
    assert images, f"no image saved: {json.dumps(result.history)[:2000]}"
    return np.asarray(Image.open(_io.BytesIO(server.view(images[0]))))


def run_ok(server, prompt: dict):
    result = server.run(prompt, timeout=600)
    assert result.status == "success", f"{result.error}\n{server.log()[-4000:]}"
    return result


@STATIC
def test_the_shipped_workflows_are_all_here():
    names = [p.name for p in ALL_WORKFLOWS]
    assert len(names) == 16 and names[0].startswith("00_self_test") and names[-1].startswith("15_flux2_klein")
    assert [n[:3] for n in names] == [f"{i:02d}_" for i in range(16)]
    assert [p.name[:2] for p in BASES_WORKFLOWS] == ["08", "09", "10"]  # GGUF, Fill, Kontext


def with_loras_and_controlnet(prompt: dict, lora_strength: float = 0.8, controlnet_strength: float = 0.7) -> dict:
    """The pose workflow with two stacked LoRAs (LoraLoaderModelOnly x 2) before Apply InfiniteYou and a
    FLUX ControlNet (InstantX layout, on the pose image) on the conditioning: all three in one graph."""
    from devtools.bases import CONTROLNET, LORAS

    prompt = json.loads(json.dumps(prompt))
    unet_id, _ = node_of(prompt, "UNETLoader")
    _, apply = node_of(prompt, "InfU_ApplyInfiniteYou")
    sampler_id, sampler = node_of(prompt, "KSampler")
    pose_id, _ = node_of(prompt, "InfU_PoseImage")
    vae_id, _ = node_of(prompt, "VAELoader")
    prompt["60"] = {"class_type": "LoraLoaderModelOnly",
                    "inputs": {"model": [unet_id, 0], "lora_name": LORAS[0], "strength_model": lora_strength}}
    prompt["61"] = {"class_type": "LoraLoaderModelOnly",
                    "inputs": {"model": ["60", 0], "lora_name": LORAS[1], "strength_model": lora_strength}}
    apply["inputs"]["model"] = ["61", 0]
    prompt["62"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": CONTROLNET}}
    prompt["63"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
        "positive": sampler["inputs"]["positive"], "negative": sampler["inputs"]["negative"], "control_net": ["62", 0],
        "image": [pose_id, 0], "strength": controlnet_strength, "start_percent": 0.0, "end_percent": 1.0,
        "vae": [vae_id, 0]}}
    sampler["inputs"]["positive"], sampler["inputs"]["negative"] = ["63", 0], ["63", 1]
    return prompt


def test_stacked_loras_a_flux_controlnet_and_apply_in_one_graph(bases_server, bases_photos):
    """Runs end to end, and each part changes the image (its strength at 0 gives another picture)."""
    pose = api_prompt(bases_server, "02_pose_control.json")
    full = saved_pixels(bases_server, run_ok(bases_server, with_loras_and_controlnet(pose))).astype(int)
    for name, variant in (("LoRAs", with_loras_and_controlnet(pose, lora_strength=0.0)),
                          ("ControlNet", with_loras_and_controlnet(pose, controlnet_strength=0.0))):
        other = saved_pixels(bases_server, run_ok(bases_server, variant)).astype(int)
        assert np.abs(full - other).mean() > 0.5, f"the {name} had no effect"


def keep_for_host_comparison(name: str, pixels: np.ndarray, server=None) -> None:
    """The output of each workflow (same seed, same models on every host) goes to
    ``$INFU_REPORTS/outputs/<host>/``; scripts/test_summary.py compares the hosts' outputs. A FLUX.1 prompt that ran
    on ``server``'s narrow FLUX.1 (tests/conftest.py: ``server_models``) is kept as ``<name>.w<width>.png``: the
    summary lists it without comparing it with another host's 3072-wide run."""
    from tests.fixtures.model_set import NARROW_FLUX_WIDTH, flux_width

    reports = os.environ.get("INFU_REPORTS")
    if reports:
        folder = Path(reports) / "outputs" / os.environ.get("INFU_HOST_NAME", "host")
        folder.mkdir(parents=True, exist_ok=True)
        narrow = server is not None and flux_width(server.base_dir / "models") == NARROW_FLUX_WIDTH
        Image.fromarray(pixels).save(folder / (f"{name}.w{NARROW_FLUX_WIDTH}.png" if narrow else f"{name}.png"))


def trained_by_you(node: dict) -> str | None:
    """The README section telling how to train the model a loader names, when no one publishes it."""
    from scripts.build_workflows import TRAINED_BY_YOU

    return TRAINED_BY_YOU.get(node["widgets_values"][0]) if node["type"] == "InfU_InfuseNetLoader" else None


@STATIC
@pytest.mark.parametrize("path", ALL_WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_model_nodes_offer_downloads(path):
    """Every model loader names its files with an official URL and a folder, for the frontend; a model the user
    trains (a FLUX.2 InfuseNet) offers none, and the README section it points to exists."""
    workflow = json.loads(path.read_text())
    loaders = [n for n in workflow["nodes"] if n["type"] in
               ("UNETLoader", "UnetLoaderGGUF", "DualCLIPLoader", "CLIPLoader", "VAELoader", "InfU_InfuseNetLoader",
                "InfU_FaceEncoderLoader")]
    assert loaders
    readme = (PACK_ROOT / "README.md").read_text()
    for node in loaders:
        if path.name.startswith("00_"):
            continue  # self-test models are generated, never downloaded
        section = trained_by_you(node)
        if section:
            assert "models" not in node["properties"], f"{path.name}: a download offered for a model no one publishes"
            anchor = section.split("#", 1)[1]
            headings = [re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
                        for line in readme.splitlines() if line.startswith("#")]
            assert anchor in headings, f"the README has no section #{anchor}"
            continue
        models = node["properties"].get("models")
        assert models, f"{node['type']} in {path.name} has no properties.models"
        for m in models:
            assert m["url"].startswith("https://") and m["directory"] and m["name"]
            assert m["name"].split("/")[-1] in readme, f"{m['name']} is not in the README's model table"


@STATIC
def test_workflow_links_are_consistent():
    """Links, node inputs and outputs agree, so the frontend has nothing to repair."""
    for path in ALL_WORKFLOWS:
        wf = json.loads(path.read_text())
        nodes = {n["id"]: n for n in wf["nodes"]}
        for link_id, src, src_slot, dst, dst_slot, kind in wf["links"]:
            assert link_id in nodes[src]["outputs"][src_slot]["links"], path.name
            assert nodes[dst]["inputs"][dst_slot]["link"] == link_id, path.name
        assert wf["last_link_id"] == max(link[0] for link in wf["links"])


def without_pack(prompt: dict) -> dict:
    """The same graph with the pack's nodes taken out: KSampler gets the base model."""
    prompt = json.loads(json.dumps(prompt))
    apply_id, apply = node_of(prompt, "InfU_ApplyInfiniteYou")
    stripped = {k: v for k, v in prompt.items() if not v["class_type"].startswith("InfU_")
                and not (v["class_type"] == "PreviewImage" and v["inputs"]["images"][0] not in prompt)}
    stripped = {k: v for k, v in stripped.items()
                if not any(isinstance(i, list) and i[0] in prompt and prompt[i[0]]["class_type"].startswith("InfU_")
                           for i in v["inputs"].values()) or v["class_type"] == "KSampler"}
    _, sampler = node_of(stripped, "KSampler")
    sampler["inputs"]["model"] = apply["inputs"]["model"]
    return stripped


def test_strength_zero_equals_the_graph_without_the_pack(comfy_server, photos):
    prompt = api_prompt(comfy_server, "01_basic.json")
    node_of(prompt, "InfU_ApplyInfiniteYou")[1]["inputs"]["strength"] = 0.0
    with_pack = saved_pixels(comfy_server, run_ok(comfy_server, prompt))
    plain = saved_pixels(comfy_server, run_ok(comfy_server, without_pack(prompt)))
    np.testing.assert_array_equal(with_pack, plain)

    node_of(prompt, "InfU_ApplyInfiniteYou")[1]["inputs"]["strength"] = 1.0
    strong = saved_pixels(comfy_server, run_ok(comfy_server, prompt))
    assert np.abs(strong.astype(int) - plain.astype(int)).mean() > 0.5


def expect_failure(server, prompt: dict, *fragments: str) -> str:
    """The prompt fails (validation or execution) with a message containing every fragment."""
    from devtools.server import PromptRejected

    try:
        result = server.run(prompt, timeout=600)
    except PromptRejected as rejected:
        message = " ".join(rejected.messages())
    else:
        assert result.status == "error", "the prompt was expected to fail"
        message = result.error["exception_message"]
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def test_bad_inputs_fail_clearly_and_the_server_keeps_serving(comfy_server, photos):
    good = api_prompt(comfy_server, "02_pose_control.json")

    no_face = json.loads(json.dumps(good))
    photo_id = no_face[node_of(no_face, "InfU_IdentityFromImages")[0]]["inputs"]["images"][0]
    no_face[photo_id]["inputs"]["image"] = "infiniteyou_no_face.png"
    expect_failure(comfy_server, no_face, "InfiniteYou Identity From Images", "No face found in reference image 1 of 1",
                   "640x640, 320x320, 160x160")

    wrong_file = json.loads(json.dumps(good))
    node_of(wrong_file, "InfU_InfuseNetLoader")[1]["inputs"]["infusenet_name"] = "broken/not_an_infusenet.safetensors"
    expect_failure(comfy_server, wrong_file, "InfiniteYou InfuseNet Loader", "not_an_infusenet.safetensors")

    truncated = json.loads(json.dumps(good))
    node_of(truncated, "InfU_InfuseNetLoader")[1]["inputs"]["infusenet_name"] = "broken/truncated_infusenet.safetensors"
    expect_failure(comfy_server, truncated, "InfiniteYou InfuseNet Loader", "truncated_infusenet.safetensors")

    other_width = json.loads(json.dumps(good))
    node_of(other_width, "InfU_InfuseNetLoader")[1]["inputs"].update(
        infusenet_name="broken/infusenet_hidden64.safetensors", projection="aes_stage2/image_proj_model.bin")
    expect_failure(comfy_server, other_width, "Apply InfiniteYou", "hidden size 64", "3072")

    code = json.loads(json.dumps(good))
    node_of(code, "InfU_InfuseNetLoader")[1]["inputs"]["projection"] = "broken/image_proj_with_code.bin"
    expect_failure(comfy_server, code, "InfiniteYou InfuseNet Loader", "image_proj_with_code.bin")

    other_size = json.loads(json.dumps(good))
    node_of(other_size, "InfU_PoseImage")[1]["inputs"].update(width=96, height=96)
    expect_failure(comfy_server, other_size, "Apply InfiniteYou", "96x96", "64x96")

    backwards = json.loads(json.dumps(good))
    node_of(backwards, "InfU_ApplyInfiniteYou")[1]["inputs"].update(start=0.8, end=0.2)
    expect_failure(comfy_server, backwards, "start (0.8) is after end (0.2)")

    assert comfy_server.alive()
    run_ok(comfy_server, good)


def server_rss_mb(server) -> float:
    import psutil

    return psutil.Process(server.process.pid).memory_info().rss / 2**20


def test_repeating_a_workflow_does_not_grow_memory(comfy_server, photos):
    """Six runs with new seeds: the server's resident memory grows by less than 80 MB (13 MB a run)."""
    prompt = api_prompt(comfy_server, "01_basic.json")
    sampler_id, _ = node_of(prompt, "KSampler")
    run_ok(comfy_server, prompt)
    before = server_rss_mb(comfy_server)
    for seed in range(6):
        prompt[sampler_id]["inputs"]["seed"] = 1000 + seed
        run_ok(comfy_server, prompt)
    grown = server_rss_mb(comfy_server) - before
    print(f"server RSS {before:.0f} MB -> +{grown:.0f} MB after 6 runs")
    assert grown < 80


@STATIC
def test_node_ids_are_unique():
    for path in ALL_WORKFLOWS:
        ids = [n["id"] for n in json.loads(path.read_text())["nodes"]]
        assert len(ids) == len(set(ids)), path.name


@STATIC
def test_workflow_ids_are_distinct_and_the_same_on_every_rebuild():
    from scripts.build_workflows import workflow_id

    ids = [json.loads(p.read_text())["id"] for p in ALL_WORKFLOWS]
    assert len(set(ids)) == len(ids) == 16
    assert ids == [workflow_id(p.name) for p in ALL_WORKFLOWS]


@STATIC
@pytest.mark.parametrize("path", ALL_WORKFLOWS[1:], ids=lambda p: p.stem)
def test_each_workflow_says_what_to_change_first(path):
    """A note names the photo to replace, the pasted-face tip, start and both variants (on FLUX.2: that no official
    InfuseNet exists, and where the README says how to train one); a Load Image is marked."""
    workflow = json.loads(path.read_text())
    text = " ".join(n["widgets_values"][0] for n in workflow["nodes"] if n["type"] == "MarkdownNote")
    own = any(trained_by_you(n) for n in workflow["nodes"])
    variants = (("No official FLUX.2 InfuseNet exists", "*FLUX.2 [klein]: train your own InfuseNet*", "**Your InfuseNet**")
                if own else ("aes_stage2 = better text alignment and aesthetics", "sim_stage1 = higher likeness"))
    for words in ("Your photo", "If the face looks pasted: start 0.1, then strength 0.9", "**start**", *variants):
        assert words in text, f"{path.name}: the notes lack {words!r}"
    titles = [n.get("title", "") for n in workflow["nodes"] if n["type"] == "LoadImage"]
    assert any("your photo" in t for t in titles), titles
    assert {g["title"] for g in workflow["groups"]} >= {"Models", "Identity", "Prompt", "Sampling", "Output"}


@STATIC
@pytest.mark.parametrize("path", ALL_WORKFLOWS, ids=lambda p: p.stem)
def test_saved_layout_keeps_nodes_apart_and_in_their_groups(path):
    """The saved sizes are at least the frontends' measured ones, and the boxes (title bar, what shows on load
    and after a run) overlap nowhere and lie inside a group. tests/browser checks the same in each frontend."""
    from scripts.build_workflows import NODE_SIZES, SHOWN_ON_LOAD, TITLE_HEIGHT, shown_below

    workflow = json.loads(path.read_text())
    boxes = []
    for n in workflow["nodes"]:
        least = NODE_SIZES.get(n["type"])
        if least:
            assert n["size"][0] >= least[0] and n["size"][1] >= least[1], (n["type"], n["size"], least)
        room = TITLE_HEIGHT + n["size"][1] + SHOWN_ON_LOAD.get(n["type"], 0) + shown_below(n, workflow)
        boxes.append((n["id"], (n["pos"][0], n["pos"][1] - TITLE_HEIGHT, n["size"][0], room)))
    for i, (a, box_a) in enumerate(boxes):
        for b, box_b in boxes[i + 1:]:
            w = min(box_a[0] + box_a[2], box_b[0] + box_b[2]) - max(box_a[0], box_b[0])
            h = min(box_a[1] + box_a[3], box_b[1] + box_b[3]) - max(box_a[1], box_b[1])
            assert w <= 0 or h <= 0, f"{path.name}: nodes {a} and {b} overlap"
        assert any(g["bounding"][0] <= box_a[0] and g["bounding"][1] <= box_a[1]
                   and box_a[0] + box_a[2] <= g["bounding"][0] + g["bounding"][2]
                   and box_a[1] + box_a[3] <= g["bounding"][1] + g["bounding"][3] for g in workflow["groups"]), \
            f"{path.name}: node {a} is in no group"
