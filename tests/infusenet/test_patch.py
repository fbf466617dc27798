"""Parity of the patched ComfyUI FLUX with the diffusers reference (transformer + InfuseNet controlnet)."""
from __future__ import annotations

import math

import pytest
import torch

import comfy.patcher_extension
from infusenet import patch, weights
from devtools import infusenet_files as files
from devtools import flux_pair as fp
from tests.measurements import record

H = W = 8          # latent size -> 16 image tokens
Q = 8              # identity tokens
SIGMA = 0.7
TOL = 1e-4


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def branch_files(tmp_path, n: int, m: int, seed: int, form: str = "folder"):
    """A diffusers controlnet with bf16-representable weights, written in ``form`` and loaded by the pack."""
    spec = files.InfuseNetSpec(hidden_size=fp.HIDDEN, head_dim=fp.HEAD_DIM, num_layers=n, num_single_layers=m,
                               axes_dims_rope=fp.AXES)
    net = files.make_controlnet(spec, seed)
    sd = {k: v.to(torch.bfloat16) for k, v in net.state_dict().items()}
    net.load_state_dict({k: v.float() for k, v in sd.items()})
    folder = tmp_path / f"b{seed}"
    if form == "folder":
        path = files.write_infusenet_folder(str(folder), sd, spec)
    else:
        path = files.write_single_file(str(folder / f"infusenet_{form}.safetensors"), sd, form)
    return net, weights.load_infusenet(path), sd


def inputs(seed: int, batch: int = 2, txt: int = 8):
    g = torch.Generator().manual_seed(seed)
    return dict(
        x=torch.randn(batch, 16, H, W, generator=g),
        context=torch.randn(1, txt, fp.TEXT_DIM, generator=g),
        pooled=torch.randn(1, fp.POOLED_DIM, generator=g),
        id_tokens=torch.randn(1, Q, 4096, generator=g),
        control=torch.randn(1, 16, H, W, generator=g),
    )


def spy_chunks(patcher, seen: list):
    """Record cond_or_uncond of each diffusion model call (to prove how ComfyUI batched)."""
    def spy(executor, *args, **kwargs):
        seen.append(list(args[7]["cond_or_uncond"]))
        return executor(*args, **kwargs)
    patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_spy", spy)


@pytest.mark.parametrize("base_blocks,branch_blocks", [((2, 4), (1, 2)), ((5, 7), (2, 3)), ((3, 3), (3, 3))])
def test_parity_one_call_batch2(tmp_path, base_blocks, branch_blocks):
    base = fp.make_base(*base_blocks)
    net, bundle, _ = branch_files(tmp_path, *branch_blocks, seed=1)
    d = inputs(0)
    for strength in (0.5, 1.0):
        patched = patch.apply_infiniteyou(base.patcher, bundle, d["id_tokens"], d["control"], strength=strength)
        x_in, got = fp.comfy_denoised(patched, d["x"], SIGMA, fp.conds(d["context"], d["pooled"], 3.5), None, 1.0)
        v = fp.reference_velocity(base, [fp.Branch(net, d["id_tokens"], d["control"], strength)], x_in, SIGMA,
                                  d["context"], d["pooled"], 3.5)
        err = rel(got, x_in - SIGMA * v)
        record(f"parity, one model call: base {base_blocks[0]}/{base_blocks[1]}, branch {branch_blocks[0]}/"
               f"{branch_blocks[1]}, strength {strength} (relative error vs diffusers)", err)
        assert err < TOL, (base_blocks, branch_blocks, strength, err)
        # the residuals matter: without them the prediction is clearly different
        plain = fp.reference_velocity(base, [], x_in, SIGMA, d["context"], d["pooled"], 3.5)
        assert rel(got, x_in - SIGMA * plain) > 100 * TOL


def test_strength_zero_is_bit_identical_and_input_untouched(tmp_path):
    base = fp.make_base(2, 2)
    _, bundle, _ = branch_files(tmp_path, 1, 1, seed=2)
    d = inputs(1)
    wrappers_before = comfy.patcher_extension.copy_nested_dicts(base.patcher.wrappers)
    pos = fp.conds(d["context"], d["pooled"], 3.5)
    x_in, ref = fp.comfy_denoised(base.patcher, d["x"], SIGMA, pos, None, 1.0)
    zero = patch.apply_infiniteyou(base.patcher, bundle, d["id_tokens"], d["control"], strength=0.0)
    _, got = fp.comfy_denoised(zero, d["x"], SIGMA, pos, None, 1.0)
    assert torch.equal(got, ref)
    patched = patch.apply_infiniteyou(base.patcher, bundle, d["id_tokens"], d["control"], strength=1.0)
    assert patched is not base.patcher
    assert base.patcher.wrappers == wrappers_before
    assert base.patcher.get_additional_models() == []
    assert [p.model for p in patched.get_additional_models_with_key("infiniteyou")] == [bundle.model]
    _, again = fp.comfy_denoised(base.patcher, d["x"], SIGMA, pos, None, 1.0)
    assert torch.equal(again, ref)


@pytest.mark.parametrize("neg_len,expect_batched", [(8, True), (5, False)])
def test_cfg2_positive_only(tmp_path, neg_len, expect_batched):
    base = fp.make_base(2, 4)
    net, bundle, _ = branch_files(tmp_path, 1, 2, seed=3)
    d = inputs(2)
    neg_ctx = torch.randn(1, neg_len, fp.TEXT_DIM, generator=torch.Generator().manual_seed(9))
    patched = patch.apply_infiniteyou(base.patcher, bundle, d["id_tokens"], d["control"], strength=0.8)
    seen = []
    spy_chunks(patched, seen)
    x_in, got = fp.comfy_denoised(patched, d["x"], SIGMA, fp.conds(d["context"], d["pooled"], 3.5),
                                  fp.conds(neg_ctx, d["pooled"], 3.5), 2.0)
    assert (seen == [[1, 0]] or seen == [[0, 1]]) if expect_batched else sorted(seen) == [[0], [1]], seen
    v_pos = fp.reference_velocity(base, [fp.Branch(net, d["id_tokens"], d["control"], 0.8)], x_in, SIGMA,
                                  d["context"], d["pooled"], 3.5)
    v_neg = fp.reference_velocity(base, [], x_in, SIGMA, neg_ctx, d["pooled"], 3.5)
    expect = x_in - SIGMA * (v_neg + 2.0 * (v_pos - v_neg))
    record(f"parity, CFG 2, negative of {neg_len} tokens {'batched' if expect_batched else 'run apart'} "
           "(relative error vs diffusers)", rel(got, expect))
    assert rel(got, expect) < TOL


def test_cfg2_apply_to_both_and_base_guidance(tmp_path):
    base = fp.make_base(2, 2)
    net, bundle, _ = branch_files(tmp_path, 2, 1, seed=4)
    d = inputs(3)
    neg_ctx = torch.randn(1, 8, fp.TEXT_DIM, generator=torch.Generator().manual_seed(5))
    patched = patch.apply_infiniteyou(base.patcher, bundle, d["id_tokens"], d["control"], strength=1.0,
                                      apply_to="both", guidance=None)
    x_in, got = fp.comfy_denoised(patched, d["x"], SIGMA, fp.conds(d["context"], d["pooled"], 3.5),
                                  fp.conds(neg_ctx, d["pooled"], 3.5), 2.0)
    br = fp.Branch(net, d["id_tokens"], d["control"], 1.0, guidance=3.5)
    v_pos = fp.reference_velocity(base, [br], x_in, SIGMA, d["context"], d["pooled"], 3.5)
    v_neg = fp.reference_velocity(base, [br], x_in, SIGMA, neg_ctx, d["pooled"], 3.5)
    assert rel(got, x_in - SIGMA * (v_neg + 2.0 * (v_pos - v_neg))) < TOL


def test_two_identities_with_masks_sum(tmp_path):
    base = fp.make_base(3, 4)
    net_a, bundle_a, _ = branch_files(tmp_path, 2, 2, seed=5)
    net_b, bundle_b, _ = branch_files(tmp_path, 2, 2, seed=6)
    d = inputs(4)
    ids_b = torch.randn(1, Q, 4096, generator=torch.Generator().manual_seed(7))
    mask_a = torch.zeros(H * 8, W * 8)
    mask_a[:, : W * 4] = 1.0
    mask_b = 1.0 - mask_a
    m = base.patcher
    m = patch.apply_infiniteyou(m, bundle_a, d["id_tokens"], d["control"], strength=1.0, mask=mask_a)
    m = patch.apply_infiniteyou(m, bundle_b, ids_b, d["control"], strength=0.6, mask=mask_b)
    # clone() clones additional patchers: compare the networks they manage
    assert [p.model for p in m.get_additional_models_with_key("infiniteyou")] == [bundle_a.model, bundle_b.model]
    x_in, got = fp.comfy_denoised(m, d["x"], SIGMA, fp.conds(d["context"], d["pooled"], 3.5), None, 1.0)

    def tokens(mask):
        return torch.nn.functional.interpolate(mask[None, None], size=(H // 2, W // 2), mode="bilinear").reshape(1, -1, 1)

    v = fp.reference_velocity(base, [fp.Branch(net_a, d["id_tokens"], d["control"], 1.0, tokens(mask_a)),
                                     fp.Branch(net_b, ids_b, d["control"], 0.6, tokens(mask_b))],
                              x_in, SIGMA, d["context"], d["pooled"], 3.5)
    assert rel(got, x_in - SIGMA * v) < TOL


def test_with_lora_style_weight_patch_on_base(tmp_path):
    base = fp.make_base(2, 2)
    net, bundle, _ = branch_files(tmp_path, 1, 1, seed=8)
    d = inputs(5)
    key = "diffusion_model.double_blocks.0.img_attn.proj.weight"
    delta = 0.05 * torch.randn(fp.HIDDEN, fp.HIDDEN, generator=torch.Generator().manual_seed(3))
    lora = base.patcher.clone()
    lora.add_patches({key: ("diff", (delta,))}, 1.0)
    patched = patch.apply_infiniteyou(lora, bundle, d["id_tokens"], d["control"], strength=1.0)
    x_in, got = fp.comfy_denoised(patched, d["x"], SIGMA, fp.conds(d["context"], d["pooled"], 3.5), None, 1.0)
    with torch.no_grad():
        base.transformer.transformer_blocks[0].attn.to_out[0].weight += delta
    v = fp.reference_velocity(base, [fp.Branch(net, d["id_tokens"], d["control"], 1.0)], x_in, SIGMA,
                              d["context"], d["pooled"], 3.5)
    assert rel(got, x_in - SIGMA * v) < TOL


def test_full_sampling_run_black_control_matches_reference_loop(tmp_path):
    import comfy.sd
    import comfy.utils
    from devtools.host_models import write_flux_vae

    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(write_flux_vae(tmp_path / "ae.safetensors"))))
    base = fp.make_base(2, 4)
    net, bundle, _ = branch_files(tmp_path, 1, 2, seed=9)
    d = inputs(6, batch=1)
    steps, start, end = 5, 0.1, 0.9
    patched = patch.apply_infiniteyou(base.patcher, bundle, d["id_tokens"], None, strength=1.0, start=start, end=end, vae=vae)
    got, sigmas = fp.comfy_sample(patched, d["x"], steps, fp.conds(d["context"], d["pooled"], 3.5), None, 1.0)

    black = vae.encode(torch.zeros(1, H * 8, W * 8, 3))
    x = sigmas[0] * d["x"]
    for i in range(steps):
        kept = not (i / steps < start or (i + 1) / steps > end)
        branches = [fp.Branch(net, d["id_tokens"], black, 1.0)] if kept else []
        v = fp.reference_velocity(base, branches, x, float(sigmas[i]), d["context"], d["pooled"], 3.5)
        x = x + (sigmas[i + 1] - sigmas[i]) * v
    record("parity, 5-step sampling run, black control, window 0.1-0.9 (relative error vs diffusers loop)", rel(got, x))
    assert rel(got, x) < TOL
    off, _ = fp.comfy_sample(base.patcher, d["x"], steps, fp.conds(d["context"], d["pooled"], 3.5), None, 1.0)
    assert rel(got, off) > 100 * TOL


def test_step_window_rules():
    sched = torch.tensor([1.0, 0.8, 0.6, 0.4, 0.2, 0.0])
    assert [patch.step_index(s, sched) for s in (1.0, 0.8, 0.7, 0.41, 0.2)] == [0, 1, 1, 2, 4]
    kept = [patch.step_kept(i, 30, 0.1, 1.0) for i in range(30)]
    assert kept.index(True) == 3 and all(kept[3:])
    assert [patch.step_kept(i, 4, 0.0, 0.5) for i in range(4)] == [True, True, False, False]
    assert patch.block_map(19, 4) == [i // 5 for i in range(19)]
    assert patch.block_map(38, 10) == [j // 4 for j in range(38)]
    assert patch.block_map(5, 2) == [0, 0, 0, 1, 1]


def test_sigma_window_option(tmp_path):
    base = fp.make_base(1, 1)
    _, bundle, _ = branch_files(tmp_path, 1, 1, seed=10)
    d = inputs(7, batch=1)
    ms = base.patcher.get_model_object("model_sampling")
    state = patch.InfiniteYouPatch(bundle, d["id_tokens"], d["control"], 1.0, 0.2, 0.7, "sigma", 1.0, "positive",
                                   None, None, fp.LATENT_FORMAT)
    state.model_sampling = ms
    hi, lo = ms.percent_to_sigma(0.2), ms.percent_to_sigma(0.7)
    assert state.is_active({"sigmas": torch.tensor([(hi + lo) / 2])})
    assert not state.is_active({"sigmas": torch.tensor([hi * 1.01])})
    assert not state.is_active({"sigmas": torch.tensor([lo * 0.99])})


def _patch_states(patcher) -> list:
    return [w.__self__ for ws in patcher.wrappers.get(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, {}).values()
            for w in ws if isinstance(getattr(w, "__self__", None), patch.InfiniteYouPatch)]


def _cached_tensors(state) -> list[str]:
    """Names of tensors the patch holds besides its inputs (identity tokens, control, mask)."""
    inputs = {id(state.id_tokens), id(state.control_source), id(state.mask)}
    found = []

    def walk(name, obj):
        if isinstance(obj, torch.Tensor):
            if id(obj) not in inputs:
                found.append(name)
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{name}[{k}]", v)
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(f"{name}[{i}]", v)
        elif type(obj).__module__ == patch.__name__:  # the patch's own holders
            for k, v in vars(obj).items():
                walk(f"{name}.{k}", v)

    for key, value in vars(state).items():
        walk(key, value)
    return found


def test_per_run_state_is_released_after_each_sampling_run(tmp_path):
    """Like core's EasyCache: the control latent, packed control, masks, tokens and the schedule live for one
    sampling run; nothing stays on the device between runs, and a second run gives the same result."""
    base = fp.make_base(1, 1)
    _, bundle, _ = branch_files(tmp_path, 1, 1, seed=12)
    d = inputs(9, batch=1)
    mask = torch.ones(H * 8, W * 8)
    patched = patch.apply_infiniteyou(base.patcher, bundle, d["id_tokens"], d["control"], strength=1.0, mask=mask)
    (state,) = _patch_states(patched)
    first, _ = fp.comfy_sample(patched, d["x"], 3, fp.conds(d["context"], d["pooled"], 3.5), None, 1.0)
    assert _cached_tensors(state) == []
    assert state.model_sampling is None
    second, _ = fp.comfy_sample(patched, d["x"], 3, fp.conds(d["context"], d["pooled"], 3.5), None, 1.0)
    assert torch.equal(first, second)
    assert _cached_tensors(state) == []


def test_state_is_released_when_a_run_fails(tmp_path):
    base = fp.make_base(1, 1)
    _, bundle, _ = branch_files(tmp_path, 1, 1, seed=13)
    d = inputs(10, batch=1)

    def wrong_size(h, w):
        raise patch.InfiniteYouError("control of the wrong size")

    patched = patch.apply_infiniteyou(base.patcher, bundle, d["id_tokens"], wrong_size, strength=1.0)
    (state,) = _patch_states(patched)
    with pytest.raises(patch.InfiniteYouError):
        fp.comfy_sample(patched, d["x"], 2, fp.conds(d["context"], d["pooled"], 3.5), None, 1.0)
    assert _cached_tensors(state) == [] and state.model_sampling is None


@pytest.mark.parametrize("setting", [dict(strength=math.nan), dict(strength=math.inf), dict(guidance=math.nan),
                                     dict(start=math.nan), dict(end=math.nan)])
def test_non_finite_settings_are_refused(tmp_path, setting):
    base = fp.make_base(1, 1)
    _, bundle, _ = branch_files(tmp_path, 1, 1, seed=14)
    d = inputs(11, batch=1)
    with pytest.raises(patch.InfiniteYouError, match="finite"):
        patch.apply_infiniteyou(base.patcher, bundle, d["id_tokens"], d["control"], **setting)
