"""ComfyUI's multi-GPU mode (ComfyUI >= 0.2x): a model patched by Apply InfiniteYou is deep-cloned per
device, its InfuseNet (an additional model) rebuilt from its files through ``cached_patcher_init``,
and each device's clone runs its own InfuseNet with the same numbers."""
from __future__ import annotations

import torch

from devtools import flux_pair as fp
from infusenet import host
from infusenet.patch import ADDITIONAL_MODELS_KEY, apply_infiniteyou
from infusenet.weights import load_infusenet
from tests.host_features import needs_host

needs_multigpu = needs_host(hasattr(host.ModelPatcher, "deepclone_multigpu"),
                            "no multi-GPU mode (ModelPatcher.deepclone_multigpu)")


@needs_multigpu
def test_multigpu_clone_rebuilds_the_infusenet_and_gives_the_same_numbers(server_models):
    """On the servers' models (tests/conftest.py: FLUX.1 512 wide where the host reads the width): the same numbers
    on both clones do not depend on the width."""
    base = host.load_diffusion_model(str(server_models / "diffusion_models" / "flux1-dev.safetensors"))
    bundle = load_infusenet(str(server_models / "infiniteyou" / "infu_flux_v1.0" / "aes_stage2" / "InfuseNetModel"))
    assert bundle.patcher.cached_patcher_init is not None
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(1, 8, 4096, generator=g) * 0.1
    control = torch.randn(1, 16, 8, 8, generator=g) * 0.1
    patched = apply_infiniteyou(base, bundle, tokens, control, strength=1.0)

    multi = patched.deepclone_multigpu(new_load_device=torch.device("cpu"))
    (net_copy,) = host.additional_models(multi, ADDITIONAL_MODELS_KEY)
    assert net_copy.model is not bundle.model
    original = bundle.model.state_dict()
    assert all(torch.equal(v, original[k]) for k, v in net_copy.model.state_dict().items())

    calls = {"original": 0, "copy": 0}
    hooks = [bundle.model.register_forward_hook(lambda *a: calls.__setitem__("original", calls["original"] + 1)),
             net_copy.model.register_forward_hook(lambda *a: calls.__setitem__("copy", calls["copy"] + 1))]
    try:
        x = torch.randn(1, 16, 8, 8, generator=g)
        positive = fp.conds(torch.randn(1, 4, 768, generator=g) * 0.1, torch.randn(1, 768, generator=g) * 0.1, 3.5)
        _, on_multi = fp.comfy_denoised(multi, x, 0.7, positive, None, 1.0)
        assert calls == {"original": 0, "copy": 1}, "the multi-GPU clone must run its own InfuseNet"
        _, on_original = fp.comfy_denoised(patched, x, 0.7, positive, None, 1.0)
        assert calls == {"original": 1, "copy": 1}
        _, unpatched = fp.comfy_denoised(base, x, 0.7, positive, None, 1.0)
    finally:
        for h in hooks:
            h.remove()
    assert torch.equal(on_multi, on_original)
    assert not torch.equal(on_original, unpatched)
