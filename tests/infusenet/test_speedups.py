"""Apply InfiniteYou with ComfyUI's own speed-ups: the caching wrappers the host ships (EasyCache,
LazyCache) and TorchCompileModel.

Caching: on the steps the cache runs, the output is the patched model's output for that input (checked
by replaying the cached run's inputs through the patched model without cache); on the steps it skips,
the InfuseNet does not run (branch calls counted), whichever node comes first in the graph.
TorchCompileModel: tests/infusenet/test_patch_runs.py (one graph, eager's numbers per step, with CFG and a window).
"""
from __future__ import annotations

import pytest
import torch

import comfy.patcher_extension
import comfy.samplers
from comfy_extras import nodes_easycache
from infusenet import patch, weights
from devtools import infusenet_files as files
from devtools import flux_pair as fp

H = W = 8
STEPS = 10


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("speedups")
    spec = files.InfuseNetSpec(hidden_size=fp.HIDDEN, head_dim=fp.HEAD_DIM, num_layers=1, num_single_layers=2,
                               axes_dims_rope=fp.AXES)
    bundle = weights.load_infusenet(files.write_infusenet_folder(str(tmp), files.random_infusenet_state_dict(spec, 5), spec))
    g = torch.Generator().manual_seed(21)
    return dict(base=fp.make_base(2, 4), bundle=bundle, tokens=torch.randn(1, 8, 4096, generator=g),
                control=torch.randn(1, 16, H, W, generator=g), noise=torch.randn(1, 16, H, W, generator=g),
                cond=fp.conds(torch.randn(1, 8, fp.TEXT_DIM, generator=g), torch.randn(1, fp.POOLED_DIM, generator=g), 3.5))


def count_branch_calls(bundle) -> tuple[list, object]:
    calls = []
    return calls, bundle.patcher.model.register_forward_pre_hook(lambda module, args: calls.append(1))


def count_model_calls(model) -> list:
    """sigma of every call that reaches the FLUX forward (innermost DIFFUSION_MODEL wrapper, added last)."""
    calls = []

    def spy(executor, *args, **kwargs):
        calls.append(float(args[1].flatten()[0]))
        return executor(*args, **kwargs)

    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "zz_test_spy", spy)
    return calls


def run(model, parts, record: list, replay=None):
    ms = model.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(ms, "simple", STEPS).float()
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(parts["cond"], [])
    guider.set_cfg(1.0)
    with torch.no_grad():
        return guider.sample(parts["noise"], torch.zeros_like(parts["noise"]), fp.recording_euler(record, replay), sigmas,
                             disable_pbar=True, seed=0), sigmas


def apply(model, parts):
    return patch.apply_infiniteyou(model, parts["bundle"], parts["tokens"], parts["control"], strength=1.0)


def cache(node, model):
    return node.execute(model, 3.0, 0.0, 1.0, False)[0]  # high threshold, from the first step: skips often


@pytest.mark.parametrize("node", [nodes_easycache.EasyCacheNode, nodes_easycache.LazyCacheNode], ids=["EasyCache", "LazyCache"])
@pytest.mark.parametrize("order", ["apply_then_cache", "cache_then_apply"])
def test_caching_skips_the_branch_with_the_base_and_is_exact_on_the_steps_it_runs(parts, node, order):
    base = parts["base"].patcher
    model = cache(node, apply(base, parts)) if order == "apply_then_cache" else apply(cache(node, base), parts)
    model_calls = count_model_calls(model)
    branch_calls, handle = count_branch_calls(parts["bundle"])
    cached = []
    try:
        run(model, parts, cached)
    finally:
        handle.remove()
    skipped = STEPS - len(model_calls)
    print(f"\n{node.__name__} ({order}): {len(model_calls)} of {STEPS} steps ran, InfuseNet calls {len(branch_calls)}")
    assert 0 < skipped < STEPS - 1, "the test needs a cache that skips some steps and runs others"
    assert len(branch_calls) == len(model_calls)  # the InfuseNet runs exactly when FLUX runs

    replayed = []
    _, sigmas = run(apply(base, parts), parts, replayed, replay=cached)
    ran = {round(s, 6) for s in model_calls}
    compared = 0
    for i, ((x, out_cached), (_, out_plain)) in enumerate(zip(cached, replayed)):
        if round(float(sigmas[i]), 6) in ran:
            torch.testing.assert_close(out_cached, out_plain, rtol=1e-6, atol=1e-6)
            compared += 1
    assert compared == len(model_calls)
