"""Workflow 15, FLUX.2 [klein] 4B with an InfuseNet the user trained, on a real ComfyUI server; the small FLUX.2
files it runs on here; the model doctor's entries for its files; and the refusal on a ComfyUI that cannot load
FLUX.2 [klein].

Test-only substitutions, the documented ones of tests/test_workflows.py (nothing else is changed):
* The CLIPLoader of Qwen3-4B (type flux2) loads the small random CLIP-L as type stable_diffusion instead:
  Qwen3-4B has 4B parameters, too large for this machine, and a workflow test may swap a big text encoder for
  a small equivalent if it says so (shared/reference/TEST-HOST.md). The klein test model
  (``devtools.host_models.write_flux2_klein``: 256 wide, 2 heads of 128, 1 double + 2 single blocks, the real
  FLUX.2 [klein] key layout) takes CLIP-L's 768-wide context where klein 4B takes Qwen3-4B's 7680.
* Sizes shrink (864 -> 64, 1152 -> 96 pixels: the latent and the FLUX.2 scheduler alike) and the scheduler
  runs 2 steps instead of klein's 4.
* The example photo is replaced by a synthetic face of the same name, which the test detector finds.
"""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from devtools.comfy_env import PACK_ROOT, comfyui_version
from infusenet import host
from tests.fixtures.model_set import FLUX2_INFUSENET, FLUX2_KLEIN, FLUX2_VAE
from tests.host_features import needs_host
from tests.test_workflows import (api_prompt, expect_failure, keep_for_host_comparison, node_of, run_ok,
                                  saved_pixels, write_photos)

WORKFLOW = "15_flux2_klein_your_own_infusenet.json"
KLEIN_LACKS = host.flux2_klein_lacks()
needs_klein = needs_host(KLEIN_LACKS is None, f"it cannot load FLUX.2 [klein] (it lacks {KLEIN_LACKS})")
refuses_klein = needs_host(KLEIN_LACKS is not None, "it loads FLUX.2 [klein], so there is no refusal to check")
TEST_SIZE = (96, 64)
"""Height and width of the image the substituted workflow makes (1152 x 864 shrunk)."""


@pytest.fixture(scope="module")
def photos(comfy_server):
    return write_photos(comfy_server.base_dir / "input")


def shipped() -> dict:
    return json.loads((PACK_ROOT / "workflows" / WORKFLOW).read_text())


def without_apply(prompt: dict) -> dict:
    """The same graph without the pack: the guider takes the base model, every InfiniteYou node and what only
    they feed (the Faces used preview) is gone."""
    prompt = json.loads(json.dumps(prompt))
    apply_id, apply = node_of(prompt, "InfU_ApplyInfiniteYou")
    for node in prompt.values():
        for name, value in node["inputs"].items():
            if value == [apply_id, 0]:
                node["inputs"][name] = apply["inputs"]["model"]
    gone = {k for k, v in prompt.items() if v["class_type"].startswith("InfU_")}
    while True:
        feeds_gone = {k for k, v in prompt.items() if k not in gone and any(
            isinstance(i, list) and i[0] in gone for i in v["inputs"].values())}
        if not feeds_gone:
            return {k: v for k, v in prompt.items() if k not in gone}
        gone |= feeds_gone


# ------------------------------------------------------------------------------------------ the small FLUX.2 files
def shards(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = json.loads((folder / "diffusion_pytorch_model.safetensors.index.json").read_text())
    out = {}
    for shard in sorted(set(index["weight_map"].values())):
        out |= load_file(str(folder / shard))
    assert set(out) == set(index["weight_map"])
    return out


@needs_klein
def test_the_klein_file_is_the_flux2_model_comfyui_detects_and_builds(model_dir):
    """The hand-written key table (no ComfyUI class wrote it) is exactly what ComfyUI's UNETLoader path builds."""
    import comfy.sd
    from safetensors.torch import load_file

    path = model_dir / "diffusion_models" / FLUX2_KLEIN
    patcher = comfy.sd.load_diffusion_model(str(path))
    dm = patcher.model.diffusion_model
    p = dm.params
    assert type(patcher.model).__name__ == "Flux2" and p.global_modulation and p.mlp_silu_act and not p.ops_bias
    assert (p.hidden_size, p.num_heads, p.depth, p.depth_single_blocks) == (256, 2, 1, 2)
    assert (p.context_in_dim, p.in_channels, p.vec_in_dim, p.guidance_embed) == (768, 128, None, False)
    built = {k: tuple(v.shape) for k, v in host.to_published_keys(dm.state_dict()).items()}
    written = {k: tuple(v.shape) for k, v in load_file(str(path)).items()}
    assert written == built


@needs_klein
def test_the_flux2_vae_file_is_taken_as_flux2s(model_dir):
    """VAELoader's path: the batch-norm latent folds 2x2 pixels of 32 channels into FLUX.2's 128 at 1/16."""
    import comfy.sd
    import comfy.utils

    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(model_dir / "vae" / FLUX2_VAE)))
    assert vae.latent_channels == 128 and vae.downscale_ratio == 16
    with torch.inference_mode():
        image = vae.decode(torch.randn(1, 128, TEST_SIZE[0] // 16, TEST_SIZE[1] // 16))
    assert tuple(image.shape) == (1, *TEST_SIZE, 3) and torch.isfinite(image).all() and image.std() > 0


@needs_klein
def test_the_trained_infusenet_files_have_the_layout_infusenet2_builds(model_dir):
    """What a FLUX.2 training run exports (the layout loader, exporter and fixtures share), with non-zero residual
    projections and a projection whose tokens are as wide as the base's text (768 here)."""
    from infusenet.model_flux2 import InfuseNet2, InfuseNet2Config

    folder = model_dir / "infiniteyou" / FLUX2_INFUSENET
    sd = shards(folder)
    config = InfuseNet2Config.from_state_dict(host.to_host_keys(sd))
    assert (config.hidden_size, config.depth, config.depth_single_blocks) == (256, 1, 1)
    assert (config.context_in_dim, config.in_channels, config.guidance_embed) == (768, 128, False)
    net = InfuseNet2(config, dtype=torch.float32, device="meta", operations=host.plain_operations)
    built = {k: tuple(v.shape) for k, v in host.to_published_keys(net.state_dict()).items()}
    assert {k: tuple(v.shape) for k, v in sd.items()} == built
    for key in ("controlnet_blocks.0.weight", "controlnet_single_blocks.0.weight", "controlnet_x_embedder.weight"):
        assert sd[key].float().abs().mean() > 0.01, key
    meta = json.loads((folder / "config.json").read_text())
    assert meta == {"_class_name": "InfuseNet2Model", "base": "flux2", "num_layers": 1, "num_single_layers": 1,
                    "hidden_size": 256, "attention_head_dim": 128, "in_channels": 128, "joint_attention_dim": 768,
                    "guidance_embeds": False, "axes_dims_rope": [32, 32, 32, 32]}
    projection = torch.load(str(folder.parent / "image_proj_model.bin"), weights_only=True)["image_proj"]
    assert projection["proj_out.weight"].shape[0] == 768 and projection["latents"].shape[1] == 8


# ------------------------------------------------------------------------------------------ the workflow, served
@needs_klein
def test_workflow_15_runs_end_to_end_and_the_identity_changes_the_image(comfy_server, photos):
    """Shipped workflow 15 with the documented substitutions saves an image; Apply's residuals change it; at
    strength 0 the image equals the same graph without Apply, bit for bit."""
    prompt = api_prompt(comfy_server, WORKFLOW)
    assert node_of(prompt, "CLIPLoader")[1]["inputs"]["clip_name"] == "clip_l.safetensors"
    assert node_of(prompt, "Flux2Scheduler")[1]["inputs"] == {"steps": 2, "width": 64, "height": 96}
    assert node_of(prompt, "InfU_InfuseNetLoader")[1]["inputs"]["infusenet_name"] == FLUX2_INFUSENET
    started = time.monotonic()
    strong = saved_pixels(comfy_server, run_ok(comfy_server, prompt))
    seconds = time.monotonic() - started
    assert strong.shape == (*TEST_SIZE, 3) and strong.std() > 0
    keep_for_host_comparison(WORKFLOW.removesuffix(".json"), strong)

    node_of(prompt, "InfU_ApplyInfiniteYou")[1]["inputs"]["strength"] = 0.0
    zero = saved_pixels(comfy_server, run_ok(comfy_server, prompt))
    plain = saved_pixels(comfy_server, run_ok(comfy_server, without_apply(prompt)))
    np.testing.assert_array_equal(zero, plain)
    changed = np.abs(strong.astype(int) - plain.astype(int)).mean()
    print(f"workflow 15: {seconds:.1f} s for the first run; strength 1 vs none: mean |difference| {changed:.2f}/255")
    assert changed > 0.5


# ------------------------------------------------------------------------------------------ trained here, served
TRAIN_SIZE = (64, 64)
"""Width and height of the training images (4x4 FLUX.2 latents)."""
TRAINED_DEPTH = (1, 2)
"""The trained branch's double and single blocks, set explicitly: not the fixture InfuseNet's 1 + 1, so the
Loader's report tells the two apart."""
TRAINED_TOKENS = 4
PEOPLE = {"ann": (12, 10, 44, 50), "bob": (20, 6, 50, 40)}
"""Two people, two photos each (a face box, the same colours per person)."""


def write_training_photos(folder) -> dict[str, list]:
    """data/photos/<person>/<n>.png, as the recipe's folder of photos; the test detector finds these faces."""
    from PIL import Image

    from devtools.face_models import draw_faces

    photos = {}
    for seed, (person, (x1, y1, x2, y2)) in enumerate(PEOPLE.items()):
        (folder / person).mkdir(parents=True)
        photos[person] = []
        for n, shift in enumerate((0, 4)):
            pixels = draw_faces(TRAIN_SIZE, [(x1 + shift, y1, x2 + shift, y2)], texture_seed=seed)
            path = folder / person / f"{n}.png"
            Image.fromarray((pixels * 255).round().astype(np.uint8)).save(path)
            photos[person].append(path)
    return photos


def tiny_train_config(stage: str, klein: str, cache, out, steps: int, init_from: str | None = None):
    """The recipe's TrainConfig, made tiny: depth, Resampler and token count set explicitly, float32, a
    learning rate a handful of steps can move, a checkpoint at the last step."""
    from infusenet.trainer import config as c

    return c.TrainConfig(
        stage=stage, models=c.ModelPaths(base_model=klein, init_from=init_from),
        shape=c.InfuseNetShape(depth=TRAINED_DEPTH[0], depth_single_blocks=TRAINED_DEPTH[1], resampler_dim=64,
                               resampler_depth=1, resampler_heads=1, num_tokens=TRAINED_TOKENS),
        data=c.DataConfig(cache_dir=str(cache), batch_size=2), optim=c.OptimConfig(lr=1e-3),
        schedule=c.ScheduleConfig(max_steps=steps, log_every=1, progress=False),
        precision=c.PrecisionConfig(mixed="fp32", gradient_checkpointing=False),
        checkpoint=c.CheckpointConfig(output_dir=str(out), every=steps, resume=None))


def train_as_the_readme_says(model_dir, work) -> tuple[dict, dict]:
    """The README's recipe ("FLUX.2 [klein]: train your own InfuseNet") on the fixture files, at 64x64 with a
    handful of steps: SPSS cache from a folder of photos, stage 1, its export, SPMS synthesis with the stage-1
    model through ComfyUI's sampler, stage 2 from the stage-1 checkpoint, and the export workflow 15 loads
    (written to ``work/infiniteyou/flux2_klein_4b``). Returns the losses and the SPMS synthesis counts.

    Substitution: CLIP-L (type stable_diffusion) for Qwen3-4B, as in the workflow (module docstring). The stage-2
    set is what the synthesis kept: the self-test face models find a face in a bright patch of the random images
    and score it against the photo, so images pass the recipe's 0.6 similarity as real faces would."""
    import comfy.sd
    import comfy.utils

    from infusenet.face.encoder import load_face_encoder
    from infusenet.trainer import train
    from infusenet.trainer.data import Encoders, prepare_cache, write_manifest
    from infusenet.trainer.export import export_checkpoint
    from infusenet.trainer.loop import load_base
    from infusenet.trainer.spms import ComfyGenerator, synthesize_spms
    from infusenet.weights import load_infusenet
    from tests.fixtures.model_set import CLIP_L

    klein = str(model_dir / "diffusion_models" / FLUX2_KLEIN)
    clip = comfy.sd.load_clip([str(model_dir / "text_encoders" / CLIP_L)],
                              clip_type=comfy.sd.CLIPType.STABLE_DIFFUSION)
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(model_dir / "vae" / FLUX2_VAE)))
    face = load_face_encoder(model_dir / "insightface", model_dir / "insightface" / "recognition_arcface_ir_se50.pth")
    encoders = Encoders(face, clip, vae)
    data, models = work / "data", work / "infiniteyou"
    photos = write_training_photos(data / "photos")

    # 1. Data: one SPSS record per photo.
    records = [{"id": f"{person}/{p.stem}", "identity": str(p.relative_to(data)), "caption": "a photo of a person",
                "pose": "auto"} for person, paths in photos.items() for p in paths]
    write_manifest(data / "spss.jsonl", records)
    spss = prepare_cache(data / "spss.jsonl", work / "cache" / "spss", encoders, resolution=TRAIN_SIZE)
    assert len(spss.prepared) == 4 and not spss.skipped, spss.skipped

    # 2. Stage 1 (SPSS).
    stage1 = train(tiny_train_config("pretrain", klein, work / "cache" / "spss", work / "runs" / "stage1", 4))
    export_checkpoint(stage1.last_checkpoint, models / "flux2_klein_4b_stage1")

    # 3. SPMS with the stage-1 model, klein's distilled sampling (4 steps, CFG 1).
    stage1_net = load_infusenet(str(models / "flux2_klein_4b_stage1" / "InfuseNetModel"))
    people = [(r["id"], str(data / r["identity"])) for r in records[::2]]
    prompts = ["a photo of a person hiking in the mountains", "a portrait of a person in a cafe, warm light"]
    synthesis = synthesize_spms(people, prompts, face, stage1_net.resampler,
                                ComfyGenerator(load_base(klein), stage1_net, clip, vae, steps=4, cfg=1.0),
                                data / "spms", width=TRAIN_SIZE[0], height=TRAIN_SIZE[1])
    assert synthesis.accepted > 0, f"SPMS kept no image (similarities {synthesis.scores}): nothing for stage 2"
    spms = prepare_cache(data / "spms" / "spms.jsonl", work / "cache" / "spms", encoders, resolution=TRAIN_SIZE)
    assert len(spms.prepared) == synthesis.accepted and not spms.skipped, spms.skipped

    # 4. Stage 2 (SPMS) from the stage-1 checkpoint, then the files workflow 15 loads.
    stage2 = train(tiny_train_config("sft", klein, work / "cache" / "spms", work / "runs" / "stage2", 2,
                                     init_from=stage1.last_checkpoint))
    export_checkpoint(stage2.last_checkpoint, models / "flux2_klein_4b")
    losses = {"stage 1": stage1.losses, "stage 2": stage2.losses}
    return losses, {"generated": sum(len(s) for s in synthesis.scores.values()), "kept": synthesis.accepted,
                    "similarities": [round(x, 3) for s in synthesis.scores.values() for x in s if x is not None]}


def serve_models_from(server, folder):
    """Point the running server's models/infiniteyou at ``folder`` (the fixture set's files linked in beside what
    it holds); returns a function that puts the fixture folder back. Outputs ComfyUI cached from the old folder's
    files are dropped both times (/free), so a prompt loads from the folder now served."""
    link = server.base_dir / "models" / "infiniteyou"
    fixture = link.resolve()
    for entry in fixture.iterdir():
        if not (folder / entry.name).exists():
            (folder / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())

    def point_to(target):
        link.unlink()
        link.symlink_to(target, target_is_directory=True)
        drop_cached_outputs(server)

    point_to(folder)
    return lambda: point_to(fixture)


def drop_cached_outputs(server) -> None:
    """ComfyUI's /free with free_memory: the prompt worker, idle now, empties its output cache when woken."""
    status, _ = server.request("/free", {"unload_models": True, "free_memory": True})
    assert status == 200
    time.sleep(1.0)  # the idle worker wakes on the flag and resets before the next prompt is queued


@needs_klein
def test_an_infusenet_trained_with_the_readme_recipe_runs_in_workflow_15(comfy_server, photos, model_dir, tmp_path):
    """The end-to-end proof: a FLUX.2 InfuseNet trained here with the trainer's public API as the README says,
    exported under the name workflow 15 loads, runs in the shipped workflow on the server; its Loader reports the
    trained depth and FLUX.2, and the image differs from the same graph at strength 0."""
    started = time.monotonic()
    losses, synthesis = train_as_the_readme_says(model_dir, tmp_path)
    trained_s = time.monotonic() - started
    assert [len(v) for v in losses.values()] == [4, 2] and all(np.isfinite(v).all() for v in losses.values())
    assert synthesis["generated"] == 2 * 2                       # each person, each prompt, through ComfyUI
    trained = tmp_path / "infiniteyou" / FLUX2_INFUSENET
    assert json.loads((trained / "config.json").read_text())["num_single_layers"] == TRAINED_DEPTH[1]

    prompt = api_prompt(comfy_server, WORKFLOW)
    loader_id, loader = node_of(prompt, "InfU_InfuseNetLoader")
    assert loader["inputs"]["infusenet_name"] == FLUX2_INFUSENET and loader["inputs"]["projection"].startswith("auto")
    put_back = serve_models_from(comfy_server, tmp_path / "infiniteyou")
    try:
        result = run_ok(comfy_server, prompt)
        strong = saved_pixels(comfy_server, result)
        node_of(prompt, "InfU_ApplyInfiniteYou")[1]["inputs"]["strength"] = 0.0
        zero = saved_pixels(comfy_server, run_ok(comfy_server, prompt))
    finally:
        put_back()
    shown = json.loads(result.output(loader_id)["infu_report"][0])
    summary = json.loads(result.output(loader_id)["infu_infusenet"][0])
    assert (shown["double_blocks"], shown["single_blocks"]) == TRAINED_DEPTH and shown["base"] == "FLUX.2"
    assert shown["tokens"] == TRAINED_TOKENS and shown["hidden_size"] == 256 and summary["base"] == "flux2"
    assert "FLUX.2" in result.output(loader_id)["text"][0]
    changed = np.abs(strong.astype(int) - zero.astype(int)).mean()
    print(f"\ntrained in {trained_s:.1f} s (losses {losses}), SPMS {synthesis}; workflow 15 with it: strength 1 vs 0 "
          f"mean |difference| {changed:.2f}/255; {time.monotonic() - started:.1f} s in all")
    assert strong.shape == (*TEST_SIZE, 3) and changed > 0.5


@refuses_klein
def test_workflow_15_is_refused_with_the_comfyui_version_and_the_server_keeps_serving(comfy_server, photos):
    """Queued on a ComfyUI without FLUX.2 [klein], the InfuseNet Loader refuses before any model loads, naming the
    version and what it lacks (UNETLoader would otherwise fail on the klein file without saying why)."""
    message = expect_failure(comfy_server, api_prompt(comfy_server, WORKFLOW), "InfiniteYou InfuseNet Loader",
                             FLUX2_INFUSENET, f"ComfyUI {comfyui_version()} cannot load FLUX.2 [klein]",
                             "update ComfyUI (0.30.0 runs it)")
    assert "it lacks" in message
    print(f"\nworkflow 15 refused: {message}")
    assert comfy_server.alive()
    pixels = saved_pixels(comfy_server, run_ok(comfy_server, api_prompt(comfy_server, "01_basic.json")))
    assert pixels.std() > 0


# ------------------------------------------------------------------------------------------ the model doctor
def test_the_model_doctor_knows_workflow_15s_files(comfy_server):
    """Each file workflow 15 loads has a doctor entry: the downloads with the workflow's own links, the InfuseNet
    and its projection as files no one publishes (train one, see README), found once each."""
    from scripts.build_workflows import MODELS

    report = comfy_server.get_json("/infiniteyou/models")
    entries = {e["key"]: e for e in report["entries"]}
    for key, name in (("flux2_klein_4b", "flux-2-klein-4b.safetensors"), ("qwen3_4b", "qwen_3_4b.safetensors"),
                      ("flux2_vae", "flux2-vae.safetensors")):
        entry = entries[key]
        assert entry["expected"] == f"{MODELS[name][1]}/{name}" and entry["need"] == "optional", entry
        if entry["status"] != "ok":
            assert entry["fix"]["url"] == MODELS[name][0] and entry["fix"]["shell"].endswith(MODELS[name][0])
    assert entries["flux2_klein_4b"]["status"] == entries["flux2_vae"]["status"] == "ok"
    assert entries["qwen3_4b"]["status"] == "missing"  # the tests load CLIP-L instead (module docstring)
    infusenet, projection = entries["infusenet_flux2_klein_4b"], entries["projection_flux2_klein_4b"]
    assert infusenet["status"] == "ok" and infusenet["found"] == f"infiniteyou/{FLUX2_INFUSENET}"
    assert infusenet["info"]["base"] == "flux2" and infusenet["detail"].startswith("FLUX.2 [klein] InfuseNet")
    assert projection["status"] == "ok" and projection["info"]["tokens"] == 8
    for entry in (infusenet, projection):
        assert "no download exists: train one, see README" in entry["note"]
    assert not [e for e in report["entries"] if e["group"] == "extra" and "flux2_klein_4b" in (e["found"] or "")]
    assert not set(report["missing_groups"]) & {"flux2_klein", "flux2_text", "flux2_vae", "infusenet_flux2"}


def test_a_missing_flux2_infusenet_is_one_to_train_not_to_download():
    """What the InfuseNet Loader says at queue time when the trained folder is not there: train one, no link."""
    from infusenet import doctor

    problems = doctor.infusenet_problems(None, FLUX2_INFUSENET, None, None)
    assert len(problems) == 2
    text = " ".join(problems)
    assert f"infiniteyou/{FLUX2_INFUSENET}: not found" in text
    assert "infiniteyou/flux2_klein_4b/image_proj_model.bin" in text
    assert "No download exists: train it (README, FLUX.2 [klein]: train your own InfuseNet)" in text
    assert "curl" not in text and "https://" not in text


# ------------------------------------------------------------------------------------------ as core samples klein
def klein_template() -> dict | None:
    """ComfyUI's own FLUX.2 [klein] text-to-image template, where the host's template package has one."""
    try:
        import comfyui_workflow_templates_json
    except ImportError:
        return None
    from pathlib import Path

    path = Path(comfyui_workflow_templates_json.__file__).parent / "templates" / "image_flux2_klein_text_to_image.json"
    return json.loads(path.read_text()) if path.is_file() else None


@needs_host(klein_template() is not None, "its workflow templates have no FLUX.2 [klein] template")
def test_workflow_15_loads_and_samples_klein_as_comfyuis_own_template():
    """The same files (names, download links, folders) and the distilled model's sampling: euler, the FLUX.2
    schedule at 4 steps, CFG 1 with a zeroed negative, a FLUX.2 latent of the scheduler's size."""
    subgraph = next(s for s in klein_template()["definitions"]["subgraphs"] if "4B Distilled" in s["name"])
    theirs = {n["type"]: n for n in subgraph["nodes"]}
    ours = {n["type"]: n for n in shipped()["nodes"]}
    for loader in ("UNETLoader", "CLIPLoader", "VAELoader"):
        links = [[(m["name"], m["url"], m["directory"]) for m in n["properties"]["models"]] for n in (ours[loader], theirs[loader])]
        assert links[0] == links[1], loader
        assert ours[loader]["widgets_values"] == theirs[loader]["widgets_values"], loader
    assert ours["KSamplerSelect"]["widgets_values"] == theirs["KSamplerSelect"]["widgets_values"] == ["euler"]
    assert ours["CFGGuider"]["widgets_values"] == theirs["CFGGuider"]["widgets_values"] == [1.0]
    assert ours["Flux2Scheduler"]["widgets_values"][0] == theirs["Flux2Scheduler"]["widgets_values"][0] == 4
    assert ours["Flux2Scheduler"]["widgets_values"][1:] == ours["EmptyFlux2LatentImage"]["widgets_values"][:2]
    assert {"ConditioningZeroOut", "SamplerCustomAdvanced", "RandomNoise"} <= set(ours) & set(theirs)
