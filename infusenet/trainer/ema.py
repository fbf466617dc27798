"""Exponential moving average of the trained parameters, shard by shard under FSDP.

Each rank keeps float32 copies of the parameter data it holds: the whole parameter in one
process or under DDP, its own shard (``DTensor.to_local()``) under FSDP, so the EMA is divided
over the ranks like the weights. :meth:`EMA.state_dict` gives it back as DTensors with the
parameters' layout (what ``torch.distributed.checkpoint`` saves and reshards);
:meth:`EMA.full_state_dict` gathers it (a collective under FSDP).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributed.tensor import DTensor


def local(t: Tensor) -> Tensor:
    """The data this rank holds of ``t`` (its shard for a DTensor)."""
    return t.to_local() if isinstance(t, DTensor) else t


class EMA:
    """``shadow = decay * shadow + (1 - decay) * param`` after each optimiser step, per parameter name."""

    def __init__(self, module: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"optim.ema_decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.params = {n: p for n, p in module.named_parameters() if p.requires_grad}
        self.shadow = {n: local(p).detach().float().clone() for n, p in self.params.items()}

    @torch.no_grad()
    def update(self) -> None:
        for n, p in self.params.items():
            self.shadow[n].lerp_(local(p).detach().float(), 1.0 - self.decay)

    def state_dict(self) -> dict[str, Tensor]:
        """The shadows, as DTensors laid out like their parameters where those are DTensors."""
        out = {}
        for n, p in self.params.items():
            s = self.shadow[n]
            if isinstance(p, DTensor):
                s = DTensor.from_local(s, p.device_mesh, p.placements, run_check=False, shape=p.shape, stride=p.stride())
            out[n] = s
        return out

    def load_state_dict(self, sd: dict[str, Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(sd))
        if missing:
            raise KeyError(f"EMA state lacks {len(missing)} parameters, e.g. {missing[:3]}")
        for n, s in self.shadow.items():
            s.copy_(local(sd[n]))

    def full_state_dict(self) -> dict[str, Tensor]:
        """Whole float32 tensors on the CPU, on every rank (gathers the shards under FSDP)."""
        return {n: (t.full_tensor() if isinstance(t, DTensor) else t).detach().cpu().clone()
                for n, t in self.state_dict().items()}
