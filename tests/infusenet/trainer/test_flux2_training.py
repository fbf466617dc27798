"""Training an InfuseNet on a FLUX.2 [klein] base, end to end: step 0, stage 1 (SPSS) then stage 2 (SPMS), export
in the FLUX.2 layout, loading the export, resume, timestep shift, memory plan, FSDP2, and the refusal of a ComfyUI
that cannot load klein.

The base is a ComfyUI ``model_base.Flux2`` built in-process from klein's key layout (hidden 256, 2 double + 3
single blocks, 128-channel latents at patch size 1, text 48 wide, no pooled vector, no guidance embedder; random
weights: devtools/tiny_training.flux2_base); the branch has 1 double + 2 single blocks. The data are synthetic
caches of the shapes FLUX.2's encoders give (64x64 images: 4x4 latents, 16 image tokens; 8 text tokens, which the
base pads to 512 as ComfyUI does when it samples).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from devtools.tiny_training import (FLUX2_LATENT_CHANNELS, FLUX2_TEXT_DIM, FLUX2_TEXT_TOKENS, flux2_base,
                                    tiny_flux2_config, tiny_flux2_shape, write_flux2_cache)
from infusenet import host
from tests.host_features import needs_host, newest_host_only
from tests.infusenet.trainer.launchers import max_difference, run_ranks

KLEIN_LACKS = host.flux2_klein_lacks()
needs_klein = needs_host(KLEIN_LACKS is None, f"it cannot load FLUX.2 [klein] (it lacks {KLEIN_LACKS})")

RES = (64, 64)                 # FLUX.2 VAE /16: 4x4 latents, 16 image tokens
TEXT_DIM, LATENT = FLUX2_TEXT_DIM, FLUX2_LATENT_CHANNELS   # the tiny base's text width, FLUX.2's latent channels
STAGE1_STEPS, STAGE2_STEPS = 20, 4


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def residual_error(got: tuple[list, list], want: tuple[list, list]) -> float:
    """Largest relative error over the double and single residuals."""
    return max(rel(g, w) for g, w in zip([*got[0], *got[1]], [*want[0], *want[1]]))


@pytest.fixture(scope="module")
def klein():
    return flux2_base(2, 3, seed=0)


@pytest.fixture(scope="module")
def spss_cache(tmp_path_factory):
    return write_flux2_cache(tmp_path_factory.mktemp("flux2_spss"), 2, RES, seed=0)


@pytest.fixture(scope="module")
def spms_cache(tmp_path_factory):
    return write_flux2_cache(tmp_path_factory.mktemp("flux2_spms"), 4, RES, seed=1, kind="spms")


def batch_of(cache, i: int = 0) -> dict[str, torch.Tensor]:
    from infusenet.trainer.data import CachedDataset

    return {k: v.unsqueeze(0) for k, v in CachedDataset(cache)[i].items()}


def run(config, patcher, cache):
    """Train ``config`` to its end; (result, trained parameters, EMA or None, parameters at the start)."""
    from infusenet.trainer.data import CachedDataset
    from infusenet.trainer.loop import Trainer

    trainer = Trainer(config, patcher, CachedDataset(cache))
    try:
        start = {k: v.detach().clone() for k, v in trainer.module.state_dict().items()}
        result = trainer.run()
        params = {k: v.detach().clone() for k, v in trainer.module.state_dict().items()}
        ema = trainer.ema.full_state_dict() if trainer.ema is not None else None
        return result, params, ema, start
    finally:
        trainer.close()


@newest_host_only("the cache reader and batching: files and tensors, no ComfyUI")
def test_a_flux2_cache_without_pooled_text_batches_and_drops_captions(tmp_path):
    """FLUX.2 caches hold no pooled vector (here: none stored at all); batches carry an empty one, [B, 0], and
    caption dropout swaps in the empty caption's context."""
    from safetensors.torch import load_file

    from infusenet.trainer.data import CachedDataset, caption_dropped, step_batch

    cache = write_flux2_cache(tmp_path, 4, RES)
    assert "pooled" not in load_file(str(cache / "samples" / "0.safetensors"))
    dataset = CachedDataset(cache, caption_dropout=0.5)
    batch, positions = step_batch(dataset, 0, 4, 0, 1, seed=0, shuffle=False)
    assert batch["pooled"].shape == (4, 0) and batch["latent"].shape == (4, LATENT, 4, 4)
    assert batch["context"].shape == (4, FLUX2_TEXT_TOKENS, TEXT_DIM)
    empty = load_file(str(cache / "empty_text.safetensors"))["context"]
    dropped = [caption_dropped(0, p, 0.5) for p in positions]
    assert any(dropped) and not all(dropped)
    for k, was_dropped in enumerate(dropped):
        assert torch.equal(batch["context"][k], empty) == was_dropped


# ---------------------------------------------------------------- step 0
@needs_klein
def test_step0_copies_the_base_and_predicts_what_comfyui_samples(klein, spss_cache):
    """init_from_base copies embedders, global modulation and blocks; every residual is exactly zero; the training
    forward (context padded as ComfyUI pads it) gives the denoised latent of ComfyUI's own sampler, to float
    rounding, and feeding the unpadded context would not."""
    from infusenet.model_flux2 import COPIED_FROM_BASE, InfuseNet2
    from infusenet.trainer.init import init_from_base
    from infusenet.trainer.loop import FrozenBase, TrainableInfuseNet

    frozen = FrozenBase(klein)
    frozen.load()
    dm = frozen.dm
    net, resampler = init_from_base(dm, tiny_flux2_shape())
    assert isinstance(net, InfuseNet2) and (net.config.depth, net.config.depth_single_blocks) == (1, 2)
    assert resampler.config.output_dim == TEXT_DIM == dm.params.context_in_dim   # tokens as wide as the base's text
    for name in COPIED_FROM_BASE:
        if getattr(dm, name, None) is not None:
            theirs = getattr(dm, name).state_dict()
            assert all(torch.equal(v, theirs[k]) for k, v in getattr(net, name).state_dict().items()), name
    for mine, theirs in [(net.double_blocks[0], dm.double_blocks[0]), *zip(net.single_blocks, dm.single_blocks)]:
        assert all(torch.equal(v, theirs.state_dict()[k]) for k, v in mine.state_dict().items())

    module = TrainableInfuseNet(net, resampler, frozen)
    item = batch_of(spss_cache)
    assert item["pooled"].shape == (1, 0) and item["context"].shape == (1, FLUX2_TEXT_TOKENS, TEXT_DIM)
    lf, ms = frozen.latent_format, frozen.model_sampling
    noise = torch.randn(1, LATENT, 4, 4, generator=torch.Generator().manual_seed(5))
    sigma = torch.ones(1)                      # one Euler step from sigma 1 to 0 returns the model's denoised latent
    x_t = ms.noise_scaling(sigma, noise, lf.process_in(item["latent"]))
    control = lf.process_in(item["control"])
    with torch.no_grad():
        double, single = module.residuals(x_t, sigma, control, item["embedding"], None)
        v = module(x_t, sigma, control, item["embedding"], item["context"], item["pooled"], None)
        unpadded = dm(x_t, sigma, item["context"], y=None, guidance=None)
    assert len(double) == 1 and len(single) == 2 and all(float(r.abs().max()) == 0.0 for r in double + single)
    denoised = ms.calculate_denoised(sigma, v, x_t)
    positive = [[item["context"], {}]]
    sampled = host.sample(klein, noise, 1, 1.0, "euler", "simple", positive, positive, torch.zeros_like(noise),
                          seed=0, disable_pbar=True)
    err, unpadded_err = rel(denoised, sampled), rel(ms.calculate_denoised(sigma, unpadded, x_t), sampled)
    print(f"step 0 vs ComfyUI sampling: relative error {err:.2e} (unpadded context: {unpadded_err:.2e})")
    assert err < 1e-5 and unpadded_err > 1e-2


@needs_klein
def test_timesteps_follow_the_base_sampling_shift(klein, base):
    """FLUX.2: mu is the base's own shift (2.02, ComfyUI's ModelSamplingFlux), and the drawn sigmas are that model
    sampling's sigma of the drawn t; FLUX.1 keeps its resolution shift; 'resolution' can be asked for on FLUX.2."""
    from infusenet.trainer.config import TimestepConfig
    from infusenet.trainer.loop import FrozenBase, sample_noise, shift_mu

    frozen2, frozen1 = FrozenBase(klein), FrozenBase(base.patcher)
    cfg = TimestepConfig()
    mu = shift_mu(frozen2, cfg)
    assert mu == pytest.approx(2.02) and mu == frozen2.model_sampling.shift
    assert shift_mu(frozen1, cfg) is None and shift_mu(frozen2, TimestepConfig(shift_source="resolution")) is None
    sigmas, _ = sample_noise(list(range(6)), (LATENT, 4, 4), 16, cfg, seed=3, mu=mu)
    plain, _ = sample_noise(list(range(6)), (LATENT, 4, 4), 16, TimestepConfig(shift=False), seed=3)
    assert torch.allclose(sigmas, frozen2.model_sampling.sigma(plain).float(), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="shift_source must be one of .* not 'bogus'"):
        shift_mu(frozen2, TimestepConfig(shift_source="bogus"))


@needs_klein
def test_a_flux2_base_with_a_guidance_embedder_gives_the_branch_guidance(spss_cache):
    """klein has no guidance embedder and its branch gets none; a FLUX.2 base with one (as FLUX.2 [dev]) makes a
    branch with one, which reads ``timesteps.branch_guidance`` and trains its embedder."""
    from infusenet.trainer.blocks import release_blocks, train_blocks
    from infusenet.trainer.config import TimestepConfig
    from infusenet.trainer.init import init_from_base
    from infusenet.trainer.loop import FrozenBase, TrainableInfuseNet, flow_loss, sample_noise

    frozen = FrozenBase(flux2_base(1, 2, seed=1, guidance_embed=True))
    frozen.load()
    net, resampler = init_from_base(frozen.dm, tiny_flux2_shape())
    assert net.params.guidance_embed and torch.equal(net.guidance_in.in_layer.weight,
                                                     frozen.dm.guidance_in.in_layer.weight)
    with torch.no_grad():
        for proj in [*net.controlnet_blocks, *net.controlnet_single_blocks]:
            proj.weight.copy_(0.05 * torch.randn(proj.weight.shape, generator=torch.Generator().manual_seed(2)))
    item = batch_of(spss_cache)
    sigmas, noise = sample_noise([0], (LATENT, 4, 4), 16, TimestepConfig(), 0, mu=2.02)
    blocks = [*net.double_blocks, *net.single_blocks, *frozen.dm.double_blocks, *frozen.dm.single_blocks]
    train_blocks(blocks, gradient_checkpointing=False)   # as the Trainer runs ComfyUI's in-place blocks
    losses = {}
    try:
        for branch_guidance in (1.0, 4.0):
            module = TrainableInfuseNet(net, resampler, frozen, branch_guidance)
            net.zero_grad()
            with host.training_mode():
                loss = flow_loss(module, frozen, item, sigmas, noise, guidance=3.5)
                loss.backward()
            losses[branch_guidance] = float(loss.detach())
            assert float(net.guidance_in.in_layer.weight.grad.abs().max()) > 0.0
    finally:
        release_blocks(blocks)
    assert losses[1.0] != losses[4.0]


# ---------------------------------------------------------------- stage 1, stage 2, export
@pytest.fixture(scope="module")
def stage1(klein, spss_cache, tmp_path_factory):
    cfg = tiny_flux2_config(spss_cache, tmp_path_factory.mktemp("flux2_stage1"), steps=STAGE1_STEPS, batch=2,
                            optim__ema_decay=0.9, checkpoint__every=10)
    return run(cfg, klein, spss_cache)


@pytest.fixture(scope="module")
def stage2(klein, spms_cache, stage1, tmp_path_factory):
    cfg = tiny_flux2_config(spms_cache, tmp_path_factory.mktemp("flux2_stage2"), steps=STAGE2_STEPS, batch=2,
                            checkpoint__every=STAGE2_STEPS)
    cfg.stage, cfg.models.init_from = "sft", stage1[0].last_checkpoint
    return run(cfg, klein, spms_cache)


@needs_klein
def test_stage1_learns_and_stage2_starts_where_it_ended(stage1, stage2):
    result, params, ema, start = stage1
    losses = result.losses
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    print("FLUX.2 stage-1 loss curve", [round(x, 4) for x in losses])
    assert len(losses) == STAGE1_STEPS and last < 0.8 * first, losses
    projections = [k for k in params if k.startswith("infusenet.controlnet_")]
    assert projections and all(float(start[k].abs().max()) == 0.0 for k in projections)    # zero at the start
    assert all(float(params[k].abs().max()) > 0.0 for k in projections)                     # trained away from it
    assert max_difference(params, start) > 1e-2 and max_difference(ema, params) > 0.0
    assert Path(result.last_checkpoint).name == f"step-{STAGE1_STEPS:06d}"
    s2_result, s2_params, _, s2_start = stage2
    assert all(torch.equal(s2_start[k], params[k]) for k in params)       # stage 2 starts from stage 1's weights
    assert len(s2_result.losses) == STAGE2_STEPS and max_difference(s2_params, s2_start) > 1e-4
    print("FLUX.2 stage-2 losses", [round(x, 4) for x in s2_result.losses])


@needs_klein
def test_a_flux2_stage1_model_is_refused_as_start_for_a_flux1_base(stage1, base, prepared, tmp_path):
    from infusenet.trainer.data import CachedDataset
    from infusenet.trainer.loop import Trainer
    from devtools.tiny_training import tiny_config

    cache, _ = prepared
    cfg = tiny_config(cache, tmp_path, steps=1)
    cfg.stage, cfg.models.init_from = "sft", stage1[0].last_checkpoint
    with pytest.raises(ValueError, match="made for a FLUX.2 base, but the base is FLUX.1"):
        Trainer(cfg, base.patcher, CachedDataset(cache))


@pytest.fixture(scope="module")
def exported(stage2, tmp_path_factory):
    from infusenet.trainer.export import export_checkpoint

    out = tmp_path_factory.mktemp("flux2_export")
    checkpoint = stage2[0].last_checkpoint
    fp32 = export_checkpoint(checkpoint, out / "fp32", precision="fp32", name="klein_test", max_shard_bytes=2 ** 21)
    bf16 = export_checkpoint(checkpoint, out / "bf16", precision="bf16", name="klein_test")
    return fp32, bf16


@needs_klein
def test_the_export_has_the_flux2_layout(exported, stage2):
    from safetensors import safe_open

    fp32, bf16 = exported
    folder = Path(fp32["folder"])
    config = json.loads((folder / "config.json").read_text())
    assert config == {"_class_name": "InfuseNet2Model", "base": "flux2", "num_layers": 1, "num_single_layers": 2,
                      "hidden_size": 256, "attention_head_dim": 128, "in_channels": LATENT,
                      "joint_attention_dim": TEXT_DIM, "guidance_embeds": False, "axes_dims_rope": [32, 32, 32, 32]}
    index = json.loads((folder / "diffusion_pytorch_model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 2 and shards[0] == f"diffusion_pytorch_model-00001-of-{len(shards):05d}.safetensors"
    assert all((folder / s).is_file() for s in shards)
    assert Path(fp32["single"]).name == "infusenet_klein_test_fp32.safetensors"
    assert Path(bf16["single"]).name == "infusenet_klein_test_bf16.safetensors"
    with safe_open(bf16["single"], "pt") as f:
        keys, metadata = set(f.keys()), f.metadata()
        assert {f.get_tensor(k).dtype for k in keys} == {torch.bfloat16}
    assert metadata == {"infusenet_base": "flux2", "depth": "1", "depth_single_blocks": "2"}
    trained = {k[len("infusenet."):] for k in stage2[1] if k.startswith("infusenet.")}
    assert keys == set(host.to_published_keys(dict.fromkeys(trained))) == set(index["weight_map"])
    assert {"double_stream_modulation_img.lin.weight", "double_stream_modulation_txt.lin.weight",
            "single_stream_modulation.lin.weight", "controlnet_x_embedder.weight", "controlnet_x_embedder.bias",
            "controlnet_blocks.0.weight", "controlnet_single_blocks.1.bias",
            "double_blocks.0.img_attn.norm.key_norm.scale"} <= keys       # klein's names, q/k norms as published
    assert not any(k.startswith(("vector_in", "guidance_in", "final_layer")) for k in keys)
    assert Path(fp32["projection_bin"]).is_file() and Path(fp32["projection_safetensors"]).is_file()


def _exported_modules(paths: dict, form: str):
    """(InfuseNet2, Resampler) from exported files, read with InfuseNet2Config.from_state_dict + load_state_dict."""
    from safetensors.torch import load_file

    from infusenet.model_flux2 import InfuseNet2Config, new_infusenet2
    from infusenet.weights import load_resampler

    if form == "folder":
        folder = Path(paths["folder"])
        files = sorted(set(json.loads((folder / "diffusion_pytorch_model.safetensors.index.json").read_text())
                           ["weight_map"].values()))
        sd = {k: v for f in files for k, v in load_file(str(folder / f)).items()}
    else:
        sd = load_file(paths["single"])
    sd = host.to_host_keys({k: v.float() for k, v in sd.items()})
    net = new_infusenet2(InfuseNet2Config.from_state_dict(sd, form))
    net.load_state_dict(sd, strict=True)
    return net.eval(), load_resampler(paths["projection_bin"])


def _loaded_modules(path: str, projection: str | None = None):
    """(InfuseNet2, Resampler) through the pack's loader (what Load InfuseNet uses), float32."""
    from infusenet import weights

    bundle = weights.load_infusenet(path, projection, dtype=torch.float32)
    assert bundle.base == "flux2" and bundle.resampler is not None
    return bundle.model.eval(), bundle.resampler


@needs_klein
@pytest.mark.parametrize("precision,form,tol", [("fp32", "folder", 1e-6), ("fp32", "single", 1e-6),
                                                ("bf16", "single", 1e-2)])
def test_the_export_loads_and_gives_the_trained_residuals(exported, stage2, klein, spms_cache, precision, form, tol):
    """The exported files, read back by hand (config from the weights + load_state_dict) and by the pack's loader,
    give the trained module's residuals: to float rounding in fp32, within bf16's precision in bf16."""
    from infusenet.trainer.loop import FrozenBase, modules_from_trainable

    paths = exported[0] if precision == "fp32" else exported[1]
    trained_net, trained_resampler = modules_from_trainable(stage2[1], "stage 2")
    frozen = FrozenBase(klein)
    dm = frozen.dm
    item = batch_of(spms_cache, 1)
    lf, ms = frozen.latent_format, frozen.model_sampling
    sigma = torch.tensor([0.6])
    x_t = ms.noise_scaling(sigma, torch.randn(1, LATENT, 4, 4, generator=torch.Generator().manual_seed(3)),
                           lf.process_in(item["latent"]))
    img, img_ids = dm.process_img(x_t)
    control, _ = dm.process_img(lf.process_in(item["control"]))
    embedding = item["embedding"].reshape(1, 1, 512)

    def residuals(net, resampler):
        with torch.no_grad():
            return net.eval()(img, img_ids, control, resampler(embedding), sigma, None, dm.pe_embedder)

    want = residuals(trained_net, trained_resampler)
    assert float(want[0][0].abs().max()) > 1e-4                  # trained residuals are not zero
    errors = {"by hand": residual_error(residuals(*_exported_modules(paths, form)), want),
              "load_infusenet": residual_error(residuals(*_loaded_modules(paths[form])), want)}
    print(precision, form, "relative residual error", errors)
    assert all(e <= tol for e in errors.values()), errors


@needs_klein
@pytest.mark.parametrize("precision,form,tol", [("fp32", "folder", 1e-6), ("bf16", "single", 1e-2)])
def test_the_loaded_export_applied_to_the_base_predicts_what_training_did(exported, stage2, klein, spms_cache,
                                                                           precision, form, tol):
    """Loaded by the pack's loader and patched into the base by Apply InfiniteYou, the export gives the training
    forward's prediction (the context given to the model as ComfyUI's conditioning pads it)."""
    from infusenet import patch, weights
    from infusenet.trainer.loop import FrozenBase, TrainableInfuseNet, modules_from_trainable

    paths = exported[0] if precision == "fp32" else exported[1]
    frozen = FrozenBase(klein)
    frozen.load()
    module = TrainableInfuseNet(*modules_from_trainable(stage2[1], "stage 2"), frozen).eval()
    item = batch_of(spms_cache, 2)
    lf, ms = frozen.latent_format, frozen.model_sampling
    sigma = torch.tensor([0.45])
    x_t = ms.noise_scaling(sigma, torch.randn(1, LATENT, 4, 4, generator=torch.Generator().manual_seed(4)),
                           lf.process_in(item["latent"]))
    context = frozen.text_context(item["context"])
    assert context.shape == (1, 512, TEXT_DIM) and torch.equal(context[:, -FLUX2_TEXT_TOKENS:], item["context"])
    bundle = weights.load_infusenet(paths[form], dtype=torch.float32)
    with torch.no_grad():
        v = module(x_t, sigma, lf.process_in(item["control"]), item["embedding"], item["context"], None, None)
        expected = ms.calculate_denoised(sigma, v, x_t)
        tokens = weights.project_identity(bundle, item["embedding"][0])
        patched = patch.apply_infiniteyou(klein, bundle, tokens, item["control"], strength=1.0)
        got = patched.model.apply_model(x_t, sigma, c_crossattn=context,
                                        transformer_options={"wrappers": patched.wrappers, "cond_or_uncond": [0]})
        base_only = klein.model.apply_model(x_t, sigma, c_crossattn=context)
    err, effect = rel(got, expected), rel(base_only, expected)
    print(precision, form, f"Apply InfiniteYou vs training forward: relative error {err:.2e} (residuals' effect "
                           f"{effect:.2e})")
    assert effect > 1e-3 and err <= tol


@pytest.fixture(scope="module")
def flux2_vae(tmp_path_factory):
    import comfy.sd
    import comfy.utils

    from devtools.host_models import write_flux2_vae

    path = write_flux2_vae(tmp_path_factory.mktemp("flux2_vae") / "flux2_vae.safetensors")
    return comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(path)))


@needs_klein
def test_validation_on_flux2_generates_scores_and_leaves_training_unchanged(dataset_dir, face_encoder, clip,
                                                                            flux2_vae, tmp_path):
    """Validation images of a FLUX.2 run (Apply InfiniteYou on ComfyUI's sampler, the FLUX.2 VAE's 128-channel
    latents) are made and scored, and the run trains exactly as it does without them."""
    from infusenet.trainer.config import ValidationIdentity
    from infusenet.trainer.data import CachedDataset
    from infusenet.trainer.loop import Trainer
    from infusenet.trainer.watch import RunWatcher

    clip_width = 768                                   # the small CLIP-L stands in for klein's Qwen3 text
    patcher = flux2_base(1, 2, seed=0, text_dim=clip_width)
    cache = write_flux2_cache(tmp_path / "cache", 2, RES, text_dim=clip_width)
    photos = dataset_dir / "photos"

    def train(out, watch: bool):
        cfg = tiny_flux2_config(cache, out, steps=2, batch=2)
        watcher = None
        if watch:
            cfg.watch.validate_every = 2
            cfg.watch.identities = [ValidationIdentity("ann", str(photos / "ann.png")),
                                    ValidationIdentity("bob", str(photos / "bob.png"), pose=str(photos / "cy.png"))]
            cfg.watch.prompts, (cfg.watch.width, cfg.watch.height), cfg.watch.steps = ["a portrait"], RES, 2
            watcher = RunWatcher(cfg, clip=clip, vae=flux2_vae, face_encoder=face_encoder)
        trainer = Trainer(cfg, patcher, CachedDataset(cache), watcher=watcher)
        gen = torch.Generator().manual_seed(7)
        with torch.no_grad():   # residuals that change the image, so the two people's images differ
            branch = trainer.module.infusenet
            for proj in [*branch.controlnet_blocks, *branch.controlnet_single_blocks]:
                proj.weight.copy_(0.05 * torch.randn(proj.weight.shape, generator=gen))
        try:
            losses = [trainer.train_step() for _ in range(2)]
            return losses, {k: v.detach().clone() for k, v in trainer.module.state_dict().items()}, watcher
        finally:
            trainer.close()

    losses, params, watcher = train(tmp_path / "watched", True)
    plain_losses, plain_params, _ = train(tmp_path / "plain", False)
    [result] = watcher.results
    assert result.step == 2 and set(result.images) == {"ann", "bob"}
    assert all(tuple(images.shape) == (1, RES[1], RES[0], 3) for images in result.images.values())
    assert not torch.equal(result.images["ann"], result.images["bob"])
    assert set(result.similarity["ann"]) == {"ann", "bob"} and 0.0 <= result.faces_found <= 1.0
    folder = Path(result.folder)
    assert sorted(p.name for p in folder.iterdir()) == ["ann_00.png", "bob_00.png", "scores.json"]
    assert losses == plain_losses and all(torch.equal(params[k], plain_params[k]) for k in params)


# ---------------------------------------------------------------- resume, memory, processes
@needs_klein
def test_resume_gives_the_same_losses_on_flux2(klein, spss_cache, tmp_path):
    common = dict(optim__ema_decay=0.9, checkpoint__every=3, precision__gradient_checkpointing=True)

    def train_to(out, steps, resume=None):
        return run(tiny_flux2_config(spss_cache, out, steps=steps, batch=2, checkpoint__resume=resume, **common),
                   klein, spss_cache)

    full, params_full, ema_full, _ = train_to(tmp_path / "a", 6)
    first, _, _, _ = train_to(tmp_path / "b", 3)
    second, params_resumed, ema_resumed, _ = train_to(tmp_path / "b", 6, resume="latest")
    assert second.start_step == 3 and first.losses + second.losses == full.losses
    assert all(torch.equal(params_full[k], params_resumed[k]) for k in params_full)
    assert all(torch.equal(ema_full[k], ema_resumed[k]) for k in ema_full)


@needs_klein
def test_the_memory_plan_of_a_flux2_run_matches_a_measured_step(klein, spss_cache, tmp_path, caplog):
    import logging

    from infusenet.trainer import memory as m
    from infusenet.trainer.data import CachedDataset
    from infusenet.trainer.loop import Trainer

    cfg = tiny_flux2_config(spss_cache, tmp_path, steps=2, batch=2)
    with caplog.at_level(logging.INFO, logger="infusenet.trainer.loop"):
        trainer = Trainer(cfg, klein, CachedDataset(spss_cache))
    try:
        measured = m.measure_step(trainer)
        plan = trainer.memory_plan
    finally:
        trainer.close()
    logged = [r.getMessage() for r in caplog.records if "memory plan" in r.getMessage()]
    assert len(logged) == 1 and "FLUX.2 2+3 blocks at 256" in logged[0] and "16 image + 512 text tokens" in logged[0]
    predicted = plan.row("single").terms
    assert predicted.base_weights == measured.base_weights
    assert predicted.trainable_weights == measured.trainable_weights
    assert predicted.gradients == measured.gradients and predicted.optimizer == measured.optimizer
    ratio = predicted.activations / measured.activations
    print(f"FLUX.2 activations planned/measured {ratio:.3f} ({predicted.activations} / {measured.activations} bytes)")
    assert 0.85 <= ratio <= 1.15


@needs_klein
def test_fsdp2_on_two_processes_matches_one_process(klein, tmp_path):
    """FSDP2 (branch and base sharded, gradient checkpointing, 2 micro-steps) on two gloo processes reaches one
    process's parameters and EMA on FLUX.2, and the same losses.

    AdamW runs with eps 1 here, where its update is nearly linear in the gradient: with the default eps a gradient
    element that nearly cancels over the batch is normalised to a whole step whose size and sign follow the
    summation order (measured: 4e-5 between one process with and without accumulation, 1.4e-4 against FSDP, on
    a change of 2.5e-3), which hides what this checks. With eps 1 the parameters agree to 1.5e-11 on a change of
    3.4e-5 (measured); the test allows 1e-4 of the change."""
    steps, batch, decay = 3, 4, 0.5
    cache = write_flux2_cache(tmp_path / "cache", 4, RES, seed=2)
    common = {"optim__ema_decay": decay, "optim__eps": 1.0}
    one, params, ema, start = run(tiny_flux2_config(cache, tmp_path / "one", steps=steps, batch=batch, **common),
                                  klein, cache)
    (tmp_path / "two").mkdir()
    two = run_ranks(2, cache, tmp_path / "two", {"base": "flux2", "steps": steps, "batch": batch, "config": {
        "distributed__backend": "gloo", "distributed__strategy": "fsdp", "distributed__shard_base": True,
        "precision__gradient_checkpointing": True, "optim__grad_accum_steps": 2, **common}})
    assert two["strategy"] == "fsdp" and two["sharded"] == {"branch": True, "projection": True, "base": True}
    change, ema_change = max_difference(params, start), max_difference(ema, start)
    diff, ema_diff = max_difference(params, two["params"]), max_difference(ema, two["ema"])
    print(f"FLUX.2 FSDP2 vs one process: max param diff {diff:.3g} (change {change:.3g}), EMA diff {ema_diff:.3g} "
          f"(change {ema_change:.3g}), losses {one.losses} vs {two['losses']}")
    assert change > 1e-5 and diff <= 1e-4 * change and ema_diff <= 1e-4 * ema_change
    assert len(two["losses"]) == steps and all(abs(a - b) < 1e-5 for a, b in zip(one.losses, two["losses"]))


# ---------------------------------------------------------------- a ComfyUI without FLUX.2 [klein]
@needs_host(KLEIN_LACKS is not None, "it loads FLUX.2 [klein], so there is no refusal to check")
def test_a_comfyui_without_flux2_klein_refuses_to_train_on_flux2(tmp_path):
    """ComfyUI 0.3.75 builds FLUX.2 [dev]-style models (global modulation) but not klein's: the trainer refuses a
    FLUX.2 base there, naming the ComfyUI version and what it lacks."""
    from infusenet.trainer import train
    from infusenet.trainer.data import CachedDataset
    from infusenet.trainer.init import init_from_base
    from infusenet.trainer.loop import Trainer

    patcher = flux2_base(1, 2)
    assert host.is_flux2(patcher.model.diffusion_model)
    cache = write_flux2_cache(tmp_path / "cache", 2, RES)
    cfg = tiny_flux2_config(cache, tmp_path / "run", steps=1)
    refusal = rf"ComfyUI {host.comfy_version()} cannot train an InfuseNet for FLUX.2 \[klein\]: it lacks FluxParams"
    with pytest.raises(host.HostMismatch, match=refusal):
        Trainer(cfg, patcher, CachedDataset(cache))
    with pytest.raises(host.HostMismatch, match=refusal):
        train(cfg, patcher)
    with pytest.raises(host.HostMismatch, match=refusal):
        init_from_base(patcher.model.diffusion_model, tiny_flux2_shape())
