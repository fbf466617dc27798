"""Apply InfiniteYou across sampling runs: per-run state, split samplers, mask batches, TorchCompileModel.

* A sampling run nested inside another with the same patched model (a detailer, a guider sampling inside a
  sample) has its own state: the outer run gives what it gives without the nested one, and a model call outside
  any run keeps nothing.
* KSamplerAdvanced split into two passes: ComfyUI hands each pass only its own slice of the schedule, so a
  ``steps`` window is a fraction of each pass's steps; a ``sigma`` window is the same in one pass or two.
* A batch of masks gives each image of the latent batch its own; a batch of another size is refused.
* TorchCompileModel: the patched model compiles into one graph (the InfuseNet is one op of it, compiled on its
  own), the window and the batch rows are decided outside it, and the numbers are eager's.
"""
from __future__ import annotations

import pytest
import torch

import comfy.ldm.flux.math
import comfy.ldm.modules.attention
import comfy.patcher_extension
import comfy.samplers
from devtools import flux_pair as fp
from devtools import infusenet_files as files
from infusenet import host, patch, weights
from tests.measurements import record

H = W = 8
STEPS = 6


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    spec = files.InfuseNetSpec(hidden_size=fp.HIDDEN, head_dim=fp.HEAD_DIM, num_layers=1, num_single_layers=2,
                               axes_dims_rope=fp.AXES)
    bundle = weights.load_infusenet(files.write_infusenet_folder(str(tmp), files.random_infusenet_state_dict(spec, 3), spec))
    g = torch.Generator().manual_seed(31)
    return dict(base=fp.make_base(2, 3, seed=2), bundle=bundle, tokens=torch.randn(1, 8, 4096, generator=g),
                control=torch.randn(1, 16, H, W, generator=g), noise=torch.randn(2, 16, H, W, generator=g),
                context=torch.randn(1, 8, fp.TEXT_DIM, generator=g), pooled=torch.randn(1, fp.POOLED_DIM, generator=g),
                negative=torch.randn(1, 5, fp.TEXT_DIM, generator=g))


@pytest.fixture(scope="module")
def compile_parts(parts, tmp_path_factory):
    """The same inputs on a base and an InfuseNet of one double and one single block each: what the compile test
    checks does not depend on depth, and inductor's time on a CPU grows with every block it compiles."""
    tmp = tmp_path_factory.mktemp("compile")
    spec = files.InfuseNetSpec(hidden_size=fp.HIDDEN, head_dim=fp.HEAD_DIM, num_layers=1, num_single_layers=1,
                               axes_dims_rope=fp.AXES)
    bundle = weights.load_infusenet(files.write_infusenet_folder(str(tmp), files.random_infusenet_state_dict(spec, 5), spec))
    return dict(parts, base=fp.make_base(1, 1, seed=6), bundle=bundle)


def positive(parts):
    return fp.conds(parts["context"], parts["pooled"], 3.5)


def apply(parts, model=None, **options):
    return patch.apply_infiniteyou(model or parts["base"].patcher, parts["bundle"], parts["tokens"], parts["control"],
                                   **options)


def branch_calls(parts) -> tuple[list, object]:
    calls = []
    return calls, parts["bundle"].model.register_forward_pre_hook(lambda module, args: calls.append(1))


def patch_state(model) -> patch.InfiniteYouPatch:
    (state,) = {w.__self__ for ws in model.wrappers[host.WrappersMP.DIFFUSION_MODEL].values() for w in ws
                if isinstance(getattr(w, "__self__", None), patch.InfiniteYouPatch)}
    return state


def holds_tensors(state) -> list[str]:
    """Tensors the patch object holds besides its inputs (identity tokens, control, mask)."""
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
        elif type(obj).__module__ == patch.__name__:
            for k, v in vars(obj).items():
                walk(f"{name}.{k}", v)

    for key, value in vars(state).items():
        walk(key, value)
    return found


# ---------------------------------------------------------------- per-run state
def test_a_run_nested_in_another_with_the_same_model_leaves_the_outer_run_unchanged(parts):
    """On the outer run's second model call a wrapper samples the same patched model (as a detailer or a guider
    that samples inside a sample does). With the per-run state on the shared patch, the nested run's end wiped
    the outer run's (its model sampling: the sigma window then held at every later step)."""
    noise = parts["noise"][:1]
    model = apply(parts, window="sigma", start=0.3, end=0.8)
    alone, _ = fp.comfy_sample(model, noise, STEPS, positive(parts), None, 1.0)
    nested_alone, _ = fp.comfy_sample(model, noise * 0.5, 3, positive(parts), None, 1.0)

    nesting = model.clone()
    seen, inner = [], {}

    def sample_inside(executor, *args, **kwargs):
        seen.append(1)
        if len(seen) == 2 and not inner:
            # ComfyUI's sampler ends a run by clearing the model's current patcher: a nested sampler puts it back
            current = getattr(nesting.model, "current_patcher", None)
            inner["out"], _ = fp.comfy_sample(nesting, noise * 0.5, 3, positive(parts), None, 1.0)
            nesting.model.current_patcher = current
        return executor(*args, **kwargs)

    nesting.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "zz_test_nested", sample_inside)
    outer, _ = fp.comfy_sample(nesting, noise, STEPS, positive(parts), None, 1.0)
    print(f"\nnested run: outer vs alone rel. error {rel(outer, alone):.1e}, inner {rel(inner['out'], nested_alone):.1e}")
    assert "out" in inner
    torch.testing.assert_close(outer, alone, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(inner["out"], nested_alone, rtol=1e-6, atol=1e-6)
    assert holds_tensors(patch_state(nesting)) == []


def test_a_model_call_outside_a_sampling_run_keeps_nothing(parts):
    """The model called directly (no sampler, so no run), through ``apply_model`` or the diffusion model itself:
    the patch makes what the call needs and keeps none of it; the numbers are those of the call inside a run."""
    model = apply(parts, mask=torch.ones(H * 8, W * 8), strength=0.7)
    state = patch_state(model)
    sigma = torch.tensor([0.7])
    x_in, in_a_run = fp.comfy_denoised(model, parts["noise"][:1], 0.7, positive(parts), None, 1.0)
    unpatched = fp.comfy_denoised(parts["base"].patcher, parts["noise"][:1], 0.7, positive(parts), None, 1.0)[1]

    def options():  # what ComfyUI's sampler gives the model: the patcher's wrappers (sampler_helpers)
        return {"wrappers": comfy.patcher_extension.copy_nested_dicts(model.wrappers)}

    with torch.no_grad():
        direct = model.model.apply_model(x_in, sigma, c_crossattn=parts["context"], y=parts["pooled"],
                                         guidance=torch.tensor([3.5]), transformer_options=options())
        timestep = model.get_model_object("model_sampling").timestep(sigma)
        velocity = model.model.diffusion_model(x_in, timestep, parts["context"], y=parts["pooled"],
                                               guidance=torch.tensor([3.5]), transformer_options=options())
    assert holds_tensors(state) == []
    assert rel(in_a_run, unpatched) > 1e-3
    torch.testing.assert_close(direct, in_a_run, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(x_in - 0.7 * velocity, in_a_run, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- KSamplerAdvanced in two passes
def ksampler_advanced(model, parts, start_at: int, end_at: int, latent, add_noise: bool, leftover: bool):
    from devtools.comfy_env import comfy_core_nodes

    return comfy_core_nodes().KSamplerAdvanced().sample(
        model, "enable" if add_noise else "disable", 0, STEPS, 1.0, "euler", "simple", positive(parts), [],
        {"samples": latent}, start_at, end_at, "enable" if leftover else "disable")[0]["samples"]


def one_and_two_passes(model, parts) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """The latent of one KSamplerAdvanced over all steps, of two (steps 0-3 then 3-6, as a workflow splits a run),
    and how many InfuseNet calls each of the two passes made."""
    latent = torch.zeros(1, 16, H, W)
    calls, handle = branch_calls(parts)
    try:
        whole = ksampler_advanced(model, parts, 0, 10000, latent, True, False)
        calls.clear()
        half = ksampler_advanced(model, parts, 0, 3, latent, True, True)
        first = len(calls)
        both = ksampler_advanced(model, parts, 3, 10000, half, False, False)
        per_pass = [first, len(calls) - first]
    finally:
        handle.remove()
    return whole, both, per_pass


def test_two_ksampler_advanced_passes_a_sigma_window_is_the_whole_runs(parts):
    """ComfyUI's KSampler slices the schedule before sampling (``sigmas[start_step:last_step + 1]``) and hands the
    model only the slice: a sigma window (ComfyUI's sigma percent) does not depend on it."""
    model = apply(parts, window="sigma", start=0.25, end=1.0)
    whole, both, per_pass = one_and_two_passes(model, parts)
    plain, plain_both, _ = one_and_two_passes(parts["base"].patcher, parts)
    err, plain_err = rel(both, whole), rel(plain_both, plain)
    record("two KSamplerAdvanced passes vs one, sigma window (relative difference)", err)
    print(f"\nsigma window: two passes vs one {err:.1e} (unpatched model {plain_err:.1e}), InfuseNet calls {per_pass}")
    assert err < 1e-5
    assert rel(whole, plain) > 1e-3  # the branch ran


def test_two_ksampler_advanced_passes_a_steps_window_is_a_fraction_of_each_pass(parts):
    """What the node's tooltip says: a steps window (the reference's) is a fraction of the steps of the sampler
    that runs, since ComfyUI gives the model no other schedule. With end 0.5 over 6 steps one pass runs the
    InfuseNet on steps 0-2; split at step 3, each pass runs it on its own first step."""
    model = apply(parts, window="steps", start=0.0, end=0.5)
    calls, handle = branch_calls(parts)
    try:
        ksampler_advanced(model, parts, 0, 10000, torch.zeros(1, 16, H, W), True, False)
    finally:
        handle.remove()
    whole, both, per_pass = one_and_two_passes(model, parts)
    assert len(calls) == 3
    assert per_pass == [1, 1]
    assert rel(both, whole) > 1e-4


# ---------------------------------------------------------------- a batch of masks
def test_a_mask_per_image_of_the_latent_batch(parts):
    """A MASK batch the size of the latent batch: each image gets its own mask, as if sampled alone with it."""
    masks = torch.zeros(2, H * 8, W * 8)
    masks[0, :, : W * 4] = 1.0
    masks[1, : H * 4] = 1.0
    batched = apply(parts, mask=masks, strength=0.8)
    x_in, got = fp.comfy_denoised(batched, parts["noise"], 0.7, positive(parts), None, 1.0)
    for i in range(2):
        alone = apply(parts, mask=masks[i], strength=0.8)
        _, expect = fp.comfy_denoised(alone, parts["noise"][i:i + 1], 0.7, positive(parts), None, 1.0)
        torch.testing.assert_close(got[i:i + 1], expect, rtol=1e-5, atol=1e-5)
    _, first_mask_for_both = fp.comfy_denoised(apply(parts, mask=masks[:1], strength=0.8), parts["noise"], 0.7,
                                               positive(parts), None, 1.0)
    assert rel(got[1], first_mask_for_both[1]) > 1e-3


def test_a_mask_batch_of_another_size_is_refused(parts):
    model = apply(parts, mask=torch.ones(3, H * 8, W * 8))
    with pytest.raises(patch.InfiniteYouError, match=r"3 masks but the latent batch has 2 images"):
        fp.comfy_denoised(model, parts["noise"], 0.7, positive(parts), None, 1.0)
    with pytest.raises(patch.InfiniteYouError, match=r"\[height, width\] or \[batch, height, width\]"):
        apply(parts, mask=torch.ones(1, 3, H * 8, W * 8))


# ---------------------------------------------------------------- TorchCompileModel
def cfg_run(model, parts, record: list, replay: list | None = None, cfg: float = 2.0):
    """4 Euler steps, CFG ``cfg`` with a negative of another length (the two run as separate batch-1 calls); records
    (x, denoised) per step, each step fed replay[i]'s x with ``replay`` (:func:`flux_pair.recording_euler`)."""
    ms = model.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(ms, "simple", 4).float()
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive(parts), fp.conds(parts["negative"], parts["pooled"], 3.5))
    guider.set_cfg(cfg)
    noise = parts["noise"][:1]
    with torch.no_grad():
        return guider.sample(noise, torch.zeros_like(noise), fp.recording_euler(record, replay), sigmas,
                             disable_pbar=True, seed=0)


def test_torch_compile_model_one_graph_and_eager_numbers(compile_parts, monkeypatch):
    """TorchCompileModel (CPU inductor) on a patched model with a window (off, then on) and CFG whose negative runs
    apart: no graph break, the InfuseNet compiled on its own, and eager's numbers. ComfyUI picks PyTorch attention
    on a GPU; on a CPU it picks sub-quadratic attention, which breaks the graph itself (it reads free memory), so
    the FLUX attention is PyTorch's here as on a GPU.

    The unpatched base is compiled and run first, as a workflow comparing with and without InfiniteYou does:
    TorchCompileModel drops the guards on ``transformer_options`` (where the wrappers are), so a patched model whose
    compiled graph depends on nothing else reuses the base's graph and silently runs without the InfuseNet.

    Each step feeds the compiled model eager's input. The numbers: inductor's float32 rounding alone moves a step's
    prediction by 0.5-1.3e-6 (relative) at CFG 1 and 0.6-2.1e-6 at CFG 2 (which doubles the positive's share); the
    kernels inductor picks depend on the CPU's vector instructions, so the bounds are 32 and 64 float32 epsilons
    (3.8e-6, 7.6e-6): rounding, where a residual left out or added twice moves it by more than 1e-3."""
    from comfy_extras import nodes_torch_compile
    from torch._dynamo.utils import counters

    parts = compile_parts

    monkeypatch.setattr(comfy.ldm.flux.math, "optimized_attention", comfy.ldm.modules.attention.attention_pytorch)
    model = apply(parts, start=0.25, end=1.0)
    calls, handle = branch_calls(parts)
    eager, fast, again, eager_1, fast_1, unpatched = [], [], [], [], [], []
    try:
        cfg_run(model, parts, eager)
        n_eager = len(calls)
        cfg_run(model, parts, eager_1, cfg=1.0)
        torch._dynamo.reset()
        cfg_run(nodes_torch_compile.TorchCompileModel.execute(parts["base"].patcher, "inductor")[0], parts,
                unpatched, replay=eager)
        counters.clear()
        compiled = nodes_torch_compile.TorchCompileModel.execute(model, "inductor")[0]
        cfg_run(compiled, parts, fast, replay=eager)
        cfg_run(compiled, parts, again, replay=eager)
        cfg_run(compiled, parts, fast_1, replay=eager_1, cfg=1.0)
        breaks = sum(counters["graph_break"].values())
    finally:
        handle.remove()
        torch._dynamo.reset()
    state = patch_state(compiled)
    errors = [rel(f[1], e[1]) for f, e in zip(fast, eager)]
    errors_1 = [rel(f[1], e[1]) for f, e in zip(fast_1, eager_1)]
    record("TorchCompileModel vs eager, patched model, CFG 2, worst step (relative error)", max(errors))
    record("TorchCompileModel vs eager, patched model, CFG 1, worst step (relative error)", max(errors_1))
    print(f"\nTorchCompileModel: rel. error per step CFG 2 {', '.join(f'{e:.1e}' for e in errors)}, CFG 1 "
          f"{', '.join(f'{e:.1e}' for e in errors_1)}; graph breaks {breaks}, InfuseNet calls eager {n_eager}")
    assert n_eager == 3, "steps 1-3 of 4, positive only"
    assert breaks == 0, dict(counters["graph_break"])
    assert [type(b.forward).__name__ for b in state.compiled_branches.values()] == ["OptimizedModule"]
    eps = torch.finfo(torch.float32).eps
    assert len(errors) == len(errors_1) == 4 and max(errors) < 64 * eps and max(errors_1) < 32 * eps
    assert all(torch.equal(a[1], f[1]) for a, f in zip(again, fast))
    assert min(rel(u[1], e[1]) for u, e in zip(unpatched[1:], eager[1:])) > 1e-3  # the InfuseNet mattered
