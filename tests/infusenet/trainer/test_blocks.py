"""Trainable ComfyUI FLUX blocks: copying only the saved activations the blocks overwrite gives the
gradients of copying every one, with and without gradient checkpointing, and copies far less.

Tolerance: 1e-6 of each parameter's largest gradient (the same kernels run on the same values; any
difference would come from a wrong saved tensor, which is of the order of the gradient itself)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from infusenet import host
from infusenet.trainer.blocks import release_blocks, train_blocks
from infusenet.trainer.data import CachedDataset, collate
from infusenet.trainer.init import init_from_base
from infusenet.trainer.loop import FrozenBase, TrainableInfuseNet, flow_loss, sample_noise
from devtools.tiny_training import tiny_config, tiny_shape


@pytest.fixture(scope="module")
def setup(base, prepared):
    cache, _ = prepared
    frozen = FrozenBase(base.patcher)
    frozen.load()
    net, resampler = init_from_base(frozen.dm, tiny_shape())
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # non-zero output projections, so that every block of the branch gets a gradient
        for proj in [*net.controlnet_blocks, *net.controlnet_single_blocks]:
            proj.weight.copy_(0.05 * torch.randn(proj.weight.shape, generator=g))
    module = TrainableInfuseNet(net, resampler, frozen)
    ds = CachedDataset(cache)
    batch = collate([ds[0], ds[1]])
    sigmas, noise = sample_noise([0, 1], tuple(batch["latent"].shape[1:]), 16, tiny_config(cache, cache, 1).timesteps, 0)
    blocks = [*net.double_blocks, *net.single_blocks, *frozen.dm.double_blocks, *frozen.dm.single_blocks]
    return module, frozen, batch, sigmas, noise, blocks


def _gradients(setup, copies: str, checkpointing: bool):
    module, frozen, batch, sigmas, noise, blocks = setup
    stats = train_blocks(blocks, checkpointing, copies)
    try:
        module.zero_grad(set_to_none=True)
        with host.training_mode():
            loss = flow_loss(module, frozen, batch, sigmas, noise, 1.0)
            loss.backward()
    finally:
        release_blocks(blocks)
    return {n: p.grad.detach().clone() for n, p in module.named_parameters()}, stats


def test_copying_only_overwritten_activations_keeps_gradients_exact(setup):
    reference, all_stats = _gradients(setup, "all", False)
    assert all(float(g.abs().max()) > 0 for n, g in reference.items() if "double_blocks" in n and "weight" in n)
    for copies, checkpointing in [("aliased", False), ("aliased", True), ("all", True)]:
        got, stats = _gradients(setup, copies, checkpointing)
        worst = max(float((got[n] - g).abs().max() / g.abs().max().clamp_min(1e-30)) for n, g in reference.items())
        print(f"{copies}, checkpointing {checkpointing}: largest relative gradient difference {worst:.3g}; "
              f"copied {stats.copied_bytes} bytes, kept {stats.kept_bytes} bytes without a copy")
        assert worst <= 1e-6, (copies, checkpointing, worst)
        if copies == "aliased" and not checkpointing:
            # the norm inputs are the only copies: a small share of what copying everything costs
            assert stats.copied_bytes + stats.kept_bytes == all_stats.copied_bytes
            assert stats.copied_bytes < 0.25 * all_stats.copied_bytes, (stats, all_stats)


class _OverwritesAnIntermediate(nn.Module):
    """exp saves its output; the block then adds into that output in place."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.5, -1.0, 2.0]))

    def forward(self, x):
        h = (x * self.w).exp()
        y = h * 3.0
        h.add_(1.0)
        return y + h


def test_an_overwritten_saved_activation_is_refused_or_copied():
    x = torch.tensor([0.1, 0.2, 0.3])
    block = _OverwritesAnIntermediate()
    expected = 4.0 * x * (x * block.w).exp()   # d/dw of 4 * exp(x * w) + 1, summed
    train_blocks([block], False, "aliased")
    try:
        with pytest.raises(RuntimeError, match="saved_activation_copies='all'"):
            block(x).sum().backward()
    finally:
        release_blocks([block])
    block.zero_grad(set_to_none=True)
    train_blocks([block], False, "all")
    try:
        block(x).sum().backward()
    finally:
        release_blocks([block])
    assert torch.allclose(block.w.grad, expected.detach(), rtol=1e-6, atol=0)
