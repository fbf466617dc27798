"""The optimiser and its learning-rate schedule.

AdamW variants (``optim.optimizer``), the same update up to float rounding, different memory:

* ``adamw``: multi-tensor ("foreach") kernels. The step creates ``sqrt(exp_avg_sq)`` for every
  parameter at once: a temporary as large as all trained parameters this rank holds (float32).
* ``adamw_fused``: one fused kernel per group of tensors, no per-parameter temporaries, fewest kernel
  launches; used where torch has the kernel for the device (CUDA, CPU, ...), else ``adamw``.
* ``adamw_low_memory``: one parameter at a time (``foreach=False``): the temporary is as large as the
  largest single parameter; slowest on GPUs.

Every variant keeps two float32 moments per trained parameter (``exp_avg``, ``exp_avg_sq``) and a
step counter.
"""
from __future__ import annotations

import logging
import math
from typing import Callable, Iterable

import torch
from torch import nn

from .config import OptimConfig

log = logging.getLogger(__name__)

OPTIMIZERS = ("adamw", "adamw_fused", "adamw_low_memory")
SCHEDULES = ("constant", "cosine")


def fused_supported(device: torch.device) -> bool:
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    return device.type in _get_fused_kernels_supported_devices()


def make_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig, device: torch.device,
                   resampler: Iterable[nn.Parameter] = ()) -> torch.optim.AdamW:
    """AdamW over ``params`` as ``cfg.optimizer`` says (see the module docstring). Those of ``params`` that are
    also in ``resampler`` (the identity projection's) form a second group at ``lr * cfg.resampler_lr_scale``
    when that scale is not 1."""
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"optim.optimizer must be one of {OPTIMIZERS}, not {cfg.optimizer!r}")
    kwargs = dict(lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw_fused":
        if fused_supported(device):
            kwargs["fused"] = True
        else:
            log.warning("torch has no fused AdamW for %s; using the multi-tensor one.", device)
            kwargs["foreach"] = True
    elif cfg.optimizer == "adamw_low_memory":
        kwargs["foreach"] = False
    else:
        kwargs["foreach"] = True
    params = list(params)
    if not cfg.resampler_lr_scale > 0 or not math.isfinite(cfg.resampler_lr_scale):
        raise ValueError(f"optim.resampler_lr_scale must be a positive number, got {cfg.resampler_lr_scale!r}")
    if cfg.resampler_lr_scale == 1.0:
        return torch.optim.AdamW(params, **kwargs)
    slow = {id(p) for p in resampler}
    groups = [{"params": [p for p in params if id(p) not in slow]},
              {"params": [p for p in params if id(p) in slow], "lr": cfg.lr * cfg.resampler_lr_scale}]
    return torch.optim.AdamW([g for g in groups if g["params"]], **kwargs)


def lr_factor(cfg: OptimConfig, max_steps: int) -> Callable[[int], float]:
    """Multiplier of ``cfg.lr`` for optimiser step ``s`` (0-based): ``(s + 1) / warmup_steps`` during
    the warm-up, then 1 (``constant``) or ``min_lr_ratio + (1 - min_lr_ratio) * (1 + cos(pi * p)) / 2``
    with ``p = (s - warmup_steps) / (decay_steps - warmup_steps)`` held at 1 after ``decay_steps``
    (``cosine``; ``decay_steps`` defaults to ``max_steps``)."""
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"optim.schedule must be one of {SCHEDULES}, not {cfg.schedule!r}")
    if not 0.0 <= cfg.min_lr_ratio <= 1.0:
        raise ValueError(f"optim.min_lr_ratio must lie in [0, 1], got {cfg.min_lr_ratio}")
    warmup = max(0, cfg.warmup_steps)
    total = cfg.decay_steps if cfg.decay_steps is not None else max_steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "constant":
            return 1.0
        p = min(1.0, (step - warmup) / max(1, total - warmup))
        return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))

    return factor
