"""FLUX.1 Fill and Kontext bases: what the InfuseNet branch reads and where its residuals land.

Fill: ComfyUI concatenates the masked-image latent (16) and the mask (64) after the noisy latent (16)
before the diffusion model (96 channels, 384 packed). The branch reads the noisy latent only, as the
reference trained it on 64 packed channels: its input and residuals do not depend on the mask or the
masked image, and equal those on FLUX.1-dev for the same noisy latent.

Kontext: ComfyUI appends the reference latents' tokens after the generated image tokens. Residuals
cover the generated tokens only; the reference tokens get nothing.
"""
from __future__ import annotations

import pytest
import torch

import comfy.patcher_extension
import comfy.sd
import comfy.supported_models
from infusenet import patch, weights
from devtools import bases
from devtools import infusenet_files as files
from devtools import flux_pair as fp

H = W = 8
SIGMA = 0.7


@pytest.fixture(scope="module")
def branch(model_dir):
    bundle = weights.load_infusenet(str(model_dir / "infiniteyou" / "infu_flux_v1.0" / "aes_stage2" / "InfuseNetModel"))
    g = torch.Generator().manual_seed(12)
    return dict(bundle=bundle, tokens=torch.randn(1, 8, 4096, generator=g), control=torch.randn(1, 16, H, W, generator=g),
                x=torch.randn(1, 16, H, W, generator=g), context=torch.randn(1, 8, 768, generator=g),
                pooled=torch.randn(1, 768, generator=g))


def branch_inputs(bundle) -> tuple[list, torch.utils.hooks.RemovableHandle]:
    """Record the packed latent the InfuseNet network gets at each call."""
    seen = []
    handle = bundle.patcher.model.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    return seen, handle


def base_inputs(model) -> list:
    """Record the x each diffusion model call gets (innermost wrapper, on ``model`` itself)."""
    seen = []

    def spy(executor, *args, **kwargs):
        seen.append(args[0].detach().clone())
        return executor(*args, **kwargs)

    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_spy_x", spy)
    return seen


def test_fill_base_is_served_and_the_branch_reads_only_the_noisy_latent(model_dir, branch):
    fill = comfy.sd.load_diffusion_model(str(bases.bases_dir(model_dir) / "diffusion_models" / bases.FLUX_FILL))
    assert type(fill.model.model_config) is comfy.supported_models.FluxInpaint  # told from img_in's 384 inputs
    assert patch.flux_diffusion_model(fill).img_in.weight.shape[1] == 384
    b = branch
    patched = patch.apply_infiniteyou(fill, b["bundle"], b["tokens"], b["control"], strength=1.0)
    g = torch.Generator().manual_seed(13)
    records = []
    for mask_value in (1.0, 0.3):  # two different masks and masked images: the branch must not see them
        cond = [[b["context"], {"pooled_output": b["pooled"], "guidance": 30.0,
                                "concat_latent_image": torch.randn(1, 16, H, W, generator=g),
                                "concat_mask": torch.full((1, 1, H * 8, W * 8), mask_value)}]]
        model = patched.clone()
        xs = base_inputs(model)
        fed, handle = branch_inputs(b["bundle"])
        try:
            control = fp.recorded_control(model, b["x"], cond, SIGMA)
        finally:
            handle.remove()
        assert xs[0].shape[1] == 96 and fed[0].shape[-1] == 64
        torch.testing.assert_close(fed[0], fp.pack(xs[0][:, :16]), rtol=0, atol=0)
        records.append(control)
    for part in ("input", "output"):
        for a, c in zip(records[0][part], records[1][part]):
            assert a.abs().max() > 0
            torch.testing.assert_close(a, c, rtol=0, atol=0)
    del fill, patched, model

    dev = comfy.sd.load_diffusion_model(str(model_dir / "diffusion_models" / bases.FLUX_DEV))
    on_dev = fp.recorded_control(patch.apply_infiniteyou(dev, b["bundle"], b["tokens"], b["control"], strength=1.0),
                                 b["x"], fp.conds(b["context"], b["pooled"], 30.0), SIGMA)
    errors = [float((a - c).abs().max()) for part in ("input", "output") for a, c in zip(on_dev[part], records[0][part])]
    print(f"\nFill vs FLUX.1-dev, same noisy latent: residual max abs difference {max(errors):.2e}")
    assert max(errors) == 0.0


def test_kontext_residuals_cover_the_generated_tokens_only(tmp_path):
    base = fp.make_base(2, 4)
    spec = files.InfuseNetSpec(hidden_size=fp.HIDDEN, head_dim=fp.HEAD_DIM, num_layers=1, num_single_layers=2,
                               axes_dims_rope=fp.AXES)
    bundle = weights.load_infusenet(files.write_infusenet_folder(str(tmp_path / "branch"), files.random_infusenet_state_dict(spec, 3), spec))
    g = torch.Generator().manual_seed(14)
    x, control = torch.randn(1, 16, H, W, generator=g), torch.randn(1, 16, H, W, generator=g)
    context, pooled = torch.randn(1, 8, fp.TEXT_DIM, generator=g), torch.randn(1, fp.POOLED_DIM, generator=g)
    reference = torch.randn(1, 16, H + 4, W, generator=g)  # another size: 24 reference tokens after 16 generated
    tokens = torch.randn(1, 8, 4096, generator=g)
    plain = fp.conds(context, pooled, 2.5)
    with_ref = [[context, {"pooled_output": pooled, "guidance": 2.5, "reference_latents": [reference]}]]
    patched = patch.apply_infiniteyou(base.patcher, bundle, tokens, control, strength=1.0)

    # The control dict the FLUX blocks get, with and without the reference latent
    streams = {}

    def capture(name, model, cond):
        with fp.flux_blocks_inputs(model) as seen:
            _, denoised = fp.comfy_denoised(model, x * SIGMA, SIGMA, cond, None, 1.0)
        streams[name] = (seen[0]["control"], denoised)
        return seen[0]["img"]

    img = capture("kontext", patched, with_ref)
    capture("plain", patched, plain)
    n_generated = (H // 2) * (W // 2)
    assert img.shape[1] == n_generated + 24  # the reference tokens follow the generated ones
    for part in ("input", "output"):
        for r_ref, r_plain in zip(streams["kontext"][0][part], streams["plain"][0][part]):
            assert r_ref.shape[1] == n_generated  # not 16 + 24
            torch.testing.assert_close(r_ref, r_plain, rtol=0, atol=0)  # the branch never sees the reference

    # The reference tokens are untouched: between the last double block's output and the first single
    # block's input FLUX adds the control; the added amount is the residual on the generated rows, 0 on
    # the reference rows.
    dm = patch.flux_diffusion_model(patched)
    seen = {}

    def after_double(module, args, kwargs, out):
        seen.setdefault("double", out[0].clone())  # before FLUX adds the control to it in place

    def before_single(module, args):
        seen.setdefault("single", args[0].clone())

    hooks = [dm.double_blocks[-1].register_forward_hook(after_double, with_kwargs=True),
             dm.single_blocks[0].register_forward_pre_hook(before_single)]
    try:
        fp.comfy_denoised(patched, x * SIGMA, SIGMA, with_ref, None, 1.0)
    finally:
        for h in hooks:
            h.remove()
    txt = context.shape[1]
    added = seen["single"][:, txt:] - seen["double"]
    assert added.shape[1] == n_generated + 24
    assert added[:, n_generated:].abs().max() == 0
    residual = streams["kontext"][0]["input"][-1]
    torch.testing.assert_close(added[:, :n_generated], residual, rtol=1e-5, atol=1e-5)
    assert residual.abs().max() > 0
