"""Apply InfiniteYou on FLUX.2 [klein] with a FLUX.2 InfuseNet, against diffusers' FLUX.2, float32.

The base is a tiny FLUX.2 [klein]-shaped ComfyUI model with random weights (devtools/flux2_pair.py); the InfuseNet
is written to real safetensors files in the FLUX.2 InfuseNet layout (ComfyUI's FLUX.2 key names, q/k norms as
``.scale``, random non-zero ``controlnet_*`` projections) and loaded by ``weights.load_infusenet``. The reference
runs the branch with diffusers' FLUX.2 blocks and adds its residuals after each block of diffusers'
``Flux2Transformer2DModel`` by the reference mapping (i // ceil(n_base / n_branch)); ours runs the patched model
through ComfyUI's sampling path (CFGGuider, ``comfy.sample.sample``). ComfyUI's FLUX.2 left-pads the text to 512
tokens with zeros; the reference gets the same padded text.
"""
from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import comfy.patcher_extension
import comfy.samplers
from devtools import flux2_pair as fp2
from devtools import flux_pair as fp1
from devtools import infusenet_files as files
from infusenet import host, patch, report, weights
from infusenet.model_flux2 import InfuseNet2
from infusenet.weights import InfiniteYouError
from tests.host_features import needs_host
from tests.measurements import record

KLEIN_LACKS = host.flux2_klein_lacks()
needs_klein = needs_host(KLEIN_LACKS is None, f"it cannot load FLUX.2 [klein] (it lacks {KLEIN_LACKS})")
needs_multigpu = needs_host(hasattr(host.ModelPatcher, "deepclone_multigpu"),
                            "no multi-GPU mode (ModelPatcher.deepclone_multigpu)")

BASE_DOUBLE, BASE_SINGLE = 5, 7      # klein 4B: 5 + 20
BRANCH_DOUBLE, BRANCH_SINGLE = 2, 3  # maps double 0,0,0,1,1 and single 0,0,0,1,1,1,2
H, W = 6, 5                          # latent -> 30 image tokens (patch size 1)
N_TXT, Q = 6, 4                      # text tokens before padding, identity tokens
SIGMA = 0.7
TOL = 1e-4


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def pair():
    return fp2.make_flux2_base(BASE_DOUBLE, BASE_SINGLE, seed=0)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The FLUX.2 InfuseNet's float32 weights (published names) and a float32 single file holding them."""
    sd = fp2.infusenet2_state_dict(BRANCH_DOUBLE, BRANCH_SINGLE, seed=1)
    path = fp2.write_infusenet2_file(str(tmp_path_factory.mktemp("flux2") / "infusenet_klein_fp32.safetensors"), sd,
                                     torch.float32)
    return sd, path


@pytest.fixture(scope="module")
def bundle(written):
    return weights.load_infusenet(written[1], dtype=torch.float32)


@pytest.fixture(scope="module")
def branch(written):
    """The reference branch: the file's weights in diffusers' FLUX.2 blocks and plain Linear projections."""
    config = SimpleNamespace(depth=BRANCH_DOUBLE, depth_single_blocks=BRANCH_SINGLE, context_in_dim=fp2.TEXT_DIM,
                             guidance_embed=False, hidden_size=fp2.HIDDEN, control_in_channels=fp2.LATENT_CHANNELS)
    sd = written[0]
    return fp2.DiffusersBranch(SimpleNamespace(config=config, state_dict=lambda: sd))


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(3)
    return dict(
        x=torch.randn(2, fp2.LATENT_CHANNELS, H, W, generator=g),
        context=torch.randn(1, N_TXT, fp2.TEXT_DIM, generator=g),
        negative=torch.randn(1, N_TXT + 2, fp2.TEXT_DIM, generator=g),
        id_tokens=torch.randn(1, Q, fp2.TEXT_DIM, generator=g),
        control=0.5 * torch.randn(1, fp2.LATENT_CHANNELS, H, W, generator=g),
        reference=2.0 * torch.randn(1, fp2.LATENT_CHANNELS, 5, 6, generator=g),
    )


def reference_residuals(branch, x, sigma: float, d, strength: float = 1.0, mask_tokens=None):
    """The reference branch's residuals for latent x [B, 128, H, W], times strength (and a token mask)."""
    b = x.shape[0]
    double, single = branch(fp2.tokens(x), fp2.tokens(d["control"]).expand(b, -1, -1), d["id_tokens"].expand(b, -1, -1),
                            torch.full((b,), float(sigma)), fp2.image_ids(H, W))
    scale = strength if mask_tokens is None else strength * mask_tokens
    return [r * scale for r in double], [r * scale for r in single]


def reference_denoised(pair, branch, x, sigma: float, context, d, strength: float | None = 1.0, mask_tokens=None):
    """What the patched model should return at sigma: x - sigma * v, v from diffusers with the branch's residuals
    (none when strength is None)."""
    residuals = ([], []) if strength is None else reference_residuals(branch, x, sigma, d, strength, mask_tokens)
    v = fp2.reference_velocity(pair, x, torch.full((x.shape[0],), float(sigma)), fp2.padded_context(context),
                               *residuals)
    return x - sigma * v


def apply(pair, bundle, d, **options):
    return patch.apply_infiniteyou(fp2.comfy_patcher(pair), bundle, d["id_tokens"], d["control"], **options)


def spy_chunks(patcher, seen: list):
    """Record cond_or_uncond of each diffusion model call (to know how ComfyUI batched)."""
    def spy(executor, *args, **kwargs):
        seen.append(list(args[7]["cond_or_uncond"]))
        return executor(*args, **kwargs)
    patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_spy", spy)


# ---------------------------------------------------------------- parity with the diffusers reference
@needs_klein
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_one_model_call_matches_the_diffusers_reference(pair, bundle, branch, data, batch, strength):
    assert isinstance(bundle.model, InfuseNet2) and bundle.base == "flux2"
    patched = apply(pair, bundle, data, strength=strength)
    x_in, got = fp1.comfy_denoised(patched, data["x"][:batch], SIGMA, fp2.conds(data["context"]), None, 1.0)
    expect = reference_denoised(pair, branch, x_in, SIGMA, data["context"], data, strength)
    plain = reference_denoised(pair, branch, x_in, SIGMA, data["context"], data, None)
    err = rel(got, expect)
    record(f"FLUX.2 parity, one model call, batch {batch}, strength {strength} (relative error vs diffusers)", err)
    print(f"\nFLUX.2 one call, batch {batch}, strength {strength}: relative error {err:.2e}")
    assert got.shape == (batch, fp2.LATENT_CHANNELS, H, W)
    assert err < TOL, err
    assert rel(got, plain) > 100 * TOL, "the residuals must change the prediction for the check to mean anything"


@needs_klein
@pytest.mark.parametrize("apply_to", ["positive", "both"])
def test_cfg_positive_only_leaves_the_negative_pass_unchanged(pair, bundle, branch, data, apply_to):
    patched = apply(pair, bundle, data, strength=0.8, apply_to=apply_to)
    seen = []
    spy_chunks(patched, seen)
    with fp1.flux_blocks_inputs(patched) as blocks:
        x_in, got = fp1.comfy_denoised(patched, data["x"][:1], SIGMA, fp2.conds(data["context"]),
                                       fp2.conds(data["negative"]), 2.0)
    assert seen in ([[1, 0]], [[0, 1]]), f"both texts are padded to 512 tokens, so ComfyUI batches them: {seen}"
    negative_row = seen[0].index(1)
    residuals = blocks[0]["control"]["input"] + blocks[0]["control"]["output"]
    if apply_to == "positive":
        assert all(not r[negative_row].any() for r in residuals), "the negative pass must get no residual"
    assert all(r[1 - negative_row].abs().sum() > 0 for r in residuals)
    pos = reference_denoised(pair, branch, x_in, SIGMA, data["context"], data, 0.8)
    neg = reference_denoised(pair, branch, x_in, SIGMA, data["negative"], data, 0.8 if apply_to == "both" else None)
    expect = neg + 2.0 * (pos - neg)
    err = rel(got, expect)
    record(f"FLUX.2 parity, CFG 2, apply_to {apply_to} (relative error vs diffusers)", err)
    print(f"\nFLUX.2 CFG 2, apply_to {apply_to}: relative error {err:.2e}")
    assert err < TOL, err


@needs_klein
def test_mask_scales_the_residuals_at_token_resolution(pair, bundle, branch, data):
    mask = torch.zeros(H * 16, W * 16)
    mask[:, : W * 8] = 1.0
    mask[: H * 4] *= 0.5
    patched = apply(pair, bundle, data, mask=mask)
    x_in, got = fp1.comfy_denoised(patched, data["x"], SIGMA, fp2.conds(data["context"]), None, 1.0)
    tokens = F.interpolate(mask[None, None], size=(H, W), mode="bilinear", align_corners=False).reshape(1, -1, 1)
    expect = reference_denoised(pair, branch, x_in, SIGMA, data["context"], data, 1.0, tokens)
    unmasked = reference_denoised(pair, branch, x_in, SIGMA, data["context"], data, 1.0)
    err = rel(got, expect)
    record("FLUX.2 parity, masked residuals (relative error vs diffusers)", err)
    print(f"\nFLUX.2 mask: relative error {err:.2e}")
    assert err < TOL, err
    assert rel(got, unmasked) > 100 * TOL


@needs_klein
def test_five_step_sampling_run_matches_a_reference_euler_loop(pair, bundle, branch, data):
    """comfy.sample.sample (euler, simple, 5 steps, window 0.1-0.9 of the steps) against an Euler loop on diffusers
    with the same sigmas; the reference's rule keeps step i of n iff not (i/n < start or (i+1)/n > end)."""
    steps, start, end = 5, 0.1, 0.9
    noise = data["x"][:1]
    patched = apply(pair, bundle, data, start=start, end=end)
    sigmas = comfy.samplers.calculate_sigmas(patched.get_model_object("model_sampling"), "simple", steps).float()

    def comfy_run(model):
        return host.sample(model, noise, steps, 1.0, "euler", "simple", fp2.conds(data["context"]),
                           fp2.conds(torch.zeros_like(data["context"])), torch.zeros_like(noise), denoise=1.0,
                           disable_pbar=True, seed=0)

    with torch.no_grad():
        got = comfy_run(patched)
        plain = comfy_run(fp2.comfy_patcher(pair))
    x = sigmas[0] * noise
    for i in range(steps):
        kept = not (i / steps < start or (i + 1) / steps > end)
        denoised = reference_denoised(pair, branch, x, float(sigmas[i]), data["context"], data, 1.0 if kept else None)
        x = x + (sigmas[i + 1] - sigmas[i]) * (x - denoised) / sigmas[i]
    err = rel(got, x)
    record("FLUX.2 parity, 5-step sampling run, window 0.1-0.9 (relative error vs diffusers Euler loop)", err)
    print(f"\nFLUX.2 5-step sampling run: relative error {err:.2e} (sigmas {[round(float(s), 4) for s in sigmas]})")
    assert err < TOL, err
    assert rel(got, plain) > 100 * TOL


@needs_klein
def test_reference_latents_get_no_residual(pair, bundle, branch, data):
    """FLUX.2 multi-reference editing: ComfyUI appends the reference latents' tokens after the noisy latent's. The
    residuals cover the noisy latent's tokens only, as the reference (diffusers' pipeline ids for references, residuals
    added to the first H*W image tokens) has it."""
    refs = [data["reference"]]
    patched = apply(pair, bundle, data)
    with fp1.flux_blocks_inputs(patched) as blocks:
        x_in, got = fp1.comfy_denoised(patched, data["x"][:1], SIGMA, fp2.conds(data["context"], refs), None, 1.0)
    n_ref = refs[0].shape[-2] * refs[0].shape[-1]
    assert blocks[0]["img"].shape[1] == H * W + n_ref
    residuals = blocks[0]["control"]["input"] + blocks[0]["control"]["output"]
    assert {r.shape[1] for r in residuals} == {H * W}, "residuals must stop at the noisy latent's tokens"

    sigma = torch.full((1,), SIGMA)
    double, single = reference_residuals(branch, x_in, SIGMA, data)
    context = fp2.padded_context(data["context"])
    v = fp2.reference_velocity_with_references(pair, x_in, sigma, context, refs, double, single)
    err = rel(got, x_in - SIGMA * v)
    record("FLUX.2 parity, with a reference latent (relative error vs diffusers)", err)
    print(f"\nFLUX.2 with a reference latent: relative error {err:.2e}")
    assert err < TOL, err
    without_refs = fp2.reference_velocity(pair, x_in, sigma, context, double, single)
    assert rel(got, x_in - SIGMA * without_refs) > 100 * TOL, "the reference image must matter for the check to mean anything"


@needs_klein
def test_caching_skips_the_branch_with_the_base(pair, bundle, data):
    """EasyCache added after Apply InfiniteYou: the InfuseNet runs exactly on the steps the FLUX.2 forward runs."""
    from comfy_extras import nodes_easycache

    model = nodes_easycache.EasyCacheNode.execute(apply(pair, bundle, data), 3.0, 0.0, 1.0, False)[0]
    model_calls, branch_calls = [], []
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "zz_test_spy",
                               lambda executor, *a, **k: model_calls.append(1) or executor(*a, **k))
    handle = bundle.model.register_forward_pre_hook(lambda module, args: branch_calls.append(1))
    try:
        with torch.no_grad():
            host.sample(model, data["x"][:1], 10, 1.0, "euler", "simple", fp2.conds(data["context"]),
                        fp2.conds(torch.zeros_like(data["context"])), torch.zeros_like(data["x"][:1]),
                        disable_pbar=True, seed=0)
    finally:
        handle.remove()
    print(f"\nEasyCache on FLUX.2: {len(model_calls)} of 10 steps ran, InfuseNet calls {len(branch_calls)}")
    assert 0 < len(model_calls) < 10, "the test needs a cache that skips some steps"
    assert len(branch_calls) == len(model_calls)


@needs_klein
def test_torch_compile_model_on_the_patched_model_gives_the_same_numbers(tmp_path, data, monkeypatch):
    """TorchCompileModel (CPU inductor) on a FLUX.2 model patched by Apply InfiniteYou: the same final latent as eager,
    and the InfuseNet runs at every step. A base and an InfuseNet of one double and one single block keep the
    compile short, and the attention is PyTorch's, as ComfyUI picks on a GPU (its CPU choice, sub-quadratic, breaks
    the graph at every attention: it reads the free memory)."""
    import comfy.ldm.flux.math
    import comfy.ldm.modules.attention
    from comfy_extras import nodes_torch_compile

    monkeypatch.setattr(comfy.ldm.flux.math, "optimized_attention", comfy.ldm.modules.attention.attention_pytorch)
    pair = fp2.make_flux2_base(1, 1, seed=4)
    path = fp2.write_infusenet2_file(str(tmp_path / "infusenet_compile_fp32.safetensors"),
                                     fp2.infusenet2_state_dict(1, 1, seed=8), torch.float32)
    small = weights.load_infusenet(path, dtype=torch.float32)
    noise = data["x"][:1]

    def run(model):
        with torch.no_grad():
            return host.sample(model, noise, 4, 1.0, "euler", "simple", fp2.conds(data["context"]),
                               fp2.conds(torch.zeros_like(data["context"])), torch.zeros_like(noise), disable_pbar=True,
                               seed=0)

    torch._dynamo.reset()
    patched = patch.apply_infiniteyou(fp2.comfy_patcher(pair), small, data["id_tokens"], data["control"])
    compiled = nodes_torch_compile.TorchCompileModel.execute(patched, "inductor")[0]
    calls = []
    handle = small.model.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        eager = run(patched)
        n_eager = len(calls)
        fast = run(compiled)
    finally:
        handle.remove()
        torch._dynamo.reset()
    err = float((fast - eager).abs().max() / eager.abs().max())
    print(f"\nTorchCompileModel on FLUX.2 (inductor, CPU): final latent rel. max error {err:.2e}")
    assert n_eager == 4 and len(calls) == 8
    torch.testing.assert_close(fast, eager, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- families
@needs_klein
def test_an_infusenet_for_the_other_flux_family_is_refused(pair, bundle, data, tmp_path):
    flux1 = fp1.make_base(1, 1)
    with pytest.raises(InfiniteYouError) as e:
        patch.apply_infiniteyou(flux1.patcher, bundle, data["id_tokens"], data["control"])
    message = str(e.value)
    print(f"\nFLUX.2 InfuseNet on FLUX.1: {message}")
    assert "This InfuseNet was made for FLUX.2 models; this one is FLUX.1 (" in message
    assert "or an InfuseNet made for FLUX.1" in message

    spec = files.InfuseNetSpec(hidden_size=fp1.HIDDEN, head_dim=fp1.HEAD_DIM, num_layers=1, num_single_layers=1,
                               axes_dims_rope=fp1.AXES)
    flux1_bundle = weights.load_infusenet(
        files.write_infusenet_folder(str(tmp_path), files.random_infusenet_state_dict(spec, 1), spec))
    assert flux1_bundle.base == "flux1"
    with pytest.raises(InfiniteYouError) as e:
        patch.apply_infiniteyou(fp2.comfy_patcher(pair), flux1_bundle, torch.zeros(1, 8, 4096), torch.zeros(1, 16, H, W))
    message = str(e.value)
    print(f"FLUX.1 InfuseNet on FLUX.2: {message}")
    assert "This InfuseNet was made for FLUX.1 models; this one is FLUX.2 (" in message
    assert "FLUX.1 dev, schnell, Fill, Kontext" in message and "or an InfuseNet made for FLUX.2" in message


@needs_klein
def test_other_families_are_refused_for_a_flux2_infusenet_too(bundle, data):
    import comfy.supported_models
    from tests.infusenet.test_refused_models import CHROMA, meta_model

    with pytest.raises(InfiniteYouError, match=r"needs a FLUX\.2 model; this one is Chroma \(.*FLUX\.2 \[klein\]"):
        patch.apply_infiniteyou(meta_model(comfy.supported_models.Chroma, CHROMA), bundle, data["id_tokens"],
                                data["control"])


@needs_klein
def test_a_control_latent_of_another_vae_is_refused(pair, bundle, data):
    patched = patch.apply_infiniteyou(fp2.comfy_patcher(pair), bundle, data["id_tokens"], torch.zeros(1, 16, H, W))
    with pytest.raises(InfiniteYouError, match=r"control latent is \[1, 16, 6, 5\]; this model's latent has 128 channels"):
        fp1.comfy_denoised(patched, data["x"][:1], SIGMA, fp2.conds(data["context"]), None, 1.0)


# ---------------------------------------------------------------- the loader
@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """The same bf16 FLUX.2 InfuseNet as an InfuseNetModel folder (with its projection beside it) and a single file."""
    root = tmp_path_factory.mktemp("flux2_layouts")
    sd = fp2.infusenet2_state_dict(BRANCH_DOUBLE, BRANCH_SINGLE, seed=5)
    stage = root / "klein_aes_stage2"
    projection = files.random_resampler_state_dict(files.ResamplerSpec(output_dim=fp2.TEXT_DIM), seed=6)
    files.write_projection_bin(str(stage / "image_proj_model.bin"), projection)
    return dict(
        sd=sd,
        folder=fp2.write_infusenet2_folder(str(stage), sd),
        single=fp2.write_infusenet2_file(str(root / "klein" / "infusenet_klein_bf16.safetensors"), sd),
        root=root,
    )


@needs_klein
def test_both_layouts_load_as_a_flux2_infusenet(layouts):
    bundles = {form: weights.load_infusenet(layouts[form]) for form in ("folder", "single")}
    expected = host.to_host_keys({k: v.to(torch.bfloat16) for k, v in layouts["sd"].items()})
    for form, b in bundles.items():
        c = b.config
        assert isinstance(b.model, InfuseNet2) and b.base == "flux2" and b.base_name == "FLUX.2", form
        assert (c.hidden_size, c.head_dim, c.depth, c.depth_single_blocks) == (fp2.HIDDEN, 128, 2, 3), form
        assert (c.in_channels, c.control_in_channels, c.context_in_dim, c.guidance_embed) == (128, 128, fp2.TEXT_DIM, False)
        assert b.precision == weights.precision_label(b.model.img_in.weight.dtype, torch.bfloat16), form
        assert b.precision in ("bf16", "fp32 (bf16 file)", "fp16 (bf16 file)"), b.precision
        held_sd = b.model.state_dict()
        assert set(held_sd) == set(expected), form
        assert all(torch.equal(held_sd[k].to(torch.bfloat16), v) for k, v in expected.items()), form
        assert b.patcher.load_device is not None and b.pooled_text_width is None
    assert bundles["folder"].variant == "aes_stage2" and bundles["folder"].num_tokens == 8
    assert bundles["single"].resampler is None  # no projection beside the single file
    assert report.infusenet_report(bundles["folder"])["base"] == "FLUX.2"


@needs_klein
def test_fp8_weights_stay_fp8_and_compute_wider(layouts, pair, data):
    fp8 = weights.load_infusenet(layouts["single"], dtype=torch.float8_e4m3fn)
    full = weights.load_infusenet(layouts["single"], dtype=torch.float32)
    assert fp8.model.double_blocks[0].img_attn.qkv.weight.dtype == torch.float8_e4m3fn
    assert fp8.model.controlnet_blocks[0].weight.dtype == torch.float8_e4m3fn
    assert fp8.model.compute_dtype in (torch.float32, torch.bfloat16, torch.float16)
    assert fp8.precision == "fp8_e4m3fn (bf16 file)"
    tokens = torch.randn(1, Q, fp2.TEXT_DIM, generator=torch.Generator().manual_seed(0))
    outs = []
    for b in (fp8, full):
        patched = patch.apply_infiniteyou(fp2.comfy_patcher(pair), b, tokens, data["control"])
        outs.append(fp1.comfy_denoised(patched, data["x"][:1], SIGMA, fp2.conds(data["context"]), None, 1.0)[1])
    _, plain = fp1.comfy_denoised(fp2.comfy_patcher(pair), data["x"][:1], SIGMA, fp2.conds(data["context"]), None, 1.0)
    err, effect = rel(outs[0], outs[1]), rel(outs[1], plain)
    print(f"\nFLUX.2 fp8 InfuseNet vs float32: relative error {err:.2e} (the residuals move the output by {effect:.2e})")
    assert torch.isfinite(outs[0]).all() and err < 0.1 * effect


@needs_klein
def test_the_loader_node_shows_the_base(layouts, monkeypatch):
    """The InfuseNet Loader node (the pack imported as ComfyUI imports it) validates and loads a FLUX.2 InfuseNet
    from the model folder and shows its variant, precision, depth and base."""
    import importlib

    import folder_paths
    from tests.nodes.conftest import PACKAGE, import_pack

    import_pack()
    node = importlib.import_module(f"{PACKAGE}.nodes.infusenet")
    pack_paths = importlib.import_module(f"{PACKAGE}.infusenet.paths")
    models = layouts["root"] / "models"
    target = models / "infiniteyou"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("klein_aes_stage2", "klein"):
        if not (target / name).exists():
            os.symlink(layouts["root"] / name, target / name)
    monkeypatch.setattr(folder_paths, "models_dir", str(models))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, pack_paths.FOLDER_NAME, ([], set()))
    pack_paths.register_model_folders()
    folder_paths.filename_list_cache.clear()
    name = "klein_aes_stage2/InfuseNetModel"
    try:
        assert node.InfuseNetLoader.validate_inputs(name, node.AUTO_PROJECTION, "default") is True
        out = node.InfuseNetLoader.execute(name, node.AUTO_PROJECTION, "default")
    finally:
        folder_paths.filename_list_cache.clear()
    text = out.ui["text"][0]
    print(f"\nloader: {text}")
    assert text.startswith("aes_stage2 · ") and "2 double + 3 single blocks" in text and "for FLUX.2" in text
    assert out.ui["text"][0].split(" · ")[1] in ("bf16", "fp32 (bf16 file)", "fp16 (bf16 file)")
    assert '"base": "flux2"' in out.ui["infu_infusenet"][0]
    assert '"base": "FLUX.2"' in out.ui["infu_report"][0]


@needs_klein
def test_a_projection_of_another_width_is_refused(layouts, tmp_path):
    stage = tmp_path / "mixed"
    fp2.write_infusenet2_folder(str(stage), layouts["sd"])
    files.write_projection_bin(str(stage / "image_proj_model.bin"),
                               files.random_resampler_state_dict(files.ResamplerSpec(output_dim=4096), seed=7))
    with pytest.raises(InfiniteYouError) as e:
        weights.load_infusenet(str(stage / "InfuseNetModel"))
    message = str(e.value)
    assert "image_proj_model.bin' makes identity tokens 4096 wide" in message
    assert f"reads tokens {fp2.TEXT_DIM} wide" in message


@needs_klein
@needs_multigpu
def test_multigpu_reload_rebuilds_the_flux2_infusenet(layouts, pair, data, tmp_path):
    """ComfyUI's multi-GPU mode rebuilds the InfuseNet from its files (``cached_patcher_init``) for each device's clone
    of the patched model; the clone runs its own FLUX.2 InfuseNet with the same numbers."""
    bundle = weights.load_infusenet(layouts["folder"])
    reload = bundle.patcher.cached_patcher_init
    assert reload is not None
    fresh = reload[0](*reload[1])
    assert isinstance(fresh.model, InfuseNet2) and fresh.model is not bundle.model
    original = bundle.model.state_dict()
    assert all(torch.equal(v, original[k]) for k, v in fresh.model.state_dict().items())

    from safetensors.torch import save_file

    base_file = tmp_path / "flux2-klein-tiny.safetensors"
    save_file({k: v.contiguous() for k, v in host.to_published_keys(pair.diffusion_model.state_dict()).items()},
              str(base_file))
    base = host.load_diffusion_model(str(base_file))
    patched = patch.apply_infiniteyou(base, bundle, data["id_tokens"], data["control"])
    multi = patched.deepclone_multigpu(new_load_device=torch.device("cpu"))
    (net_copy,) = host.additional_models(multi, patch.ADDITIONAL_MODELS_KEY)
    assert isinstance(net_copy.model, InfuseNet2) and net_copy.model is not bundle.model
    _, on_multi = fp1.comfy_denoised(multi, data["x"][:1], SIGMA, fp2.conds(data["context"]), None, 1.0)
    _, on_original = fp1.comfy_denoised(patched, data["x"][:1], SIGMA, fp2.conds(data["context"]), None, 1.0)
    _, unpatched = fp1.comfy_denoised(base, data["x"][:1], SIGMA, fp2.conds(data["context"]), None, 1.0)
    assert torch.equal(on_multi, on_original) and not torch.equal(on_original, unpatched)


@needs_host(KLEIN_LACKS is not None, "it loads FLUX.2 [klein], so there is no refusal to check")
def test_a_comfyui_without_flux2_klein_refuses_a_flux2_infusenet_with_its_version(layouts):
    version = host.comfy_version()
    for form in ("folder", "single"):
        with pytest.raises(InfiniteYouError) as e:
            weights.load_infusenet(layouts[form])
        message = str(e.value)
        print(f"\n{form}: {message}")
        assert f"is an InfuseNet for FLUX.2 [klein], which ComfyUI {version} cannot load: it lacks" in message
        assert KLEIN_LACKS in message and "The file is fine" in message
