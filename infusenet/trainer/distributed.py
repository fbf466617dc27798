"""torch.distributed glue: FSDP2 (or DDP) when launched by ``torchrun``, one process otherwise.

The global batch is split evenly over ranks; each rank draws noise and timesteps per global sample
position (see ``loop.sample_noise``), so N processes compute the same update as one process with
the same global batch, up to float summation order.
"""
from __future__ import annotations

import gc
import logging
import os
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.distributed as dist
from torch import nn

from .config import DistributedConfig

log = logging.getLogger(__name__)


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    strategy: str = "none"         # "none" | "ddp" | "fsdp"
    device: torch.device | None = None
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.strategy != "none"


def rank_device(default: torch.device, environ: Mapping[str, str] | None = None) -> torch.device:
    """The device this process trains on, decided before anything is loaded.

    Under torchrun (WORLD_SIZE > 1) on CUDA each process takes ``cuda:LOCAL_RANK`` (its GPU on its node);
    otherwise ``default`` (ComfyUI's device)."""
    env = os.environ if environ is None else environ
    if default.type != "cuda" or int(env.get("WORLD_SIZE", "1")) <= 1:
        return default
    return torch.device("cuda", int(env.get("LOCAL_RANK", env.get("RANK", "0"))))


def init_distributed(cfg: DistributedConfig, device: torch.device) -> DistContext:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK and join (or reuse) the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if cfg.strategy == "none" or (cfg.strategy == "auto" and world <= 1 and not dist.is_initialized()):
        return DistContext(device=device)
    owns = False
    if not dist.is_initialized():
        backend = cfg.backend or ("nccl" if device.type == "cuda" else "gloo")
        dist.init_process_group(backend=backend)
        owns = True
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    strategy = "ddp" if cfg.strategy == "ddp" else "fsdp"
    log.info("InfuseNet trainer: rank %d of %d (%s on %s).", rank, world, strategy, device)
    return DistContext(rank, world, local, strategy, device, owns)


def wrap(module: nn.Module, ctx: DistContext, base: nn.Module | None = None) -> nn.Module:
    """``module`` as DDP / FSDP2 or unchanged.

    DDP: gradients are views into the all-reduce buckets (no second copy of them). FSDP2
    (``fully_shard``): one shard group per trained transformer block, per attention and feed-forward
    layer of the projection, then the rest of the projection and the rest of the branch; parameters become DTensors in place, on CUDA or (gloo) on the CPU alike. With
    ``base`` (the frozen FLUX, outside ``module``) its blocks and the rest of it are sharded the same
    way and gathered block by block when they run."""
    if ctx.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [ctx.device.index] if ctx.device is not None and ctx.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, gradient_as_bucket_view=True)
    if ctx.strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        from ..host import DoubleStreamBlock, SingleStreamBlock
        from ..resampler import Resampler

        mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
        for sub in list(module.modules()):
            if isinstance(sub, (DoubleStreamBlock, SingleStreamBlock)) and any(p.requires_grad for p in sub.parameters()):
                fully_shard(sub, mesh=mesh)
            elif isinstance(sub, Resampler):
                for attention, feed_forward in sub.layers:
                    fully_shard(attention, mesh=mesh)
                    fully_shard(feed_forward, mesh=mesh)
                fully_shard(sub, mesh=mesh)
        fully_shard(module, mesh=mesh)
        if base is not None:
            for sub in base.modules():
                if isinstance(sub, (DoubleStreamBlock, SingleStreamBlock)):
                    fully_shard(sub, mesh=mesh)
            fully_shard(base, mesh=mesh)
        return module
    return module


def unwrap(module: nn.Module) -> nn.Module:
    return getattr(module, "module", module)


def mean_over_ranks(value: float, ctx: DistContext) -> float:
    if not ctx.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return float(t) / ctx.world_size


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def shutdown(ctx: DistContext, failed: bool = False) -> None:
    """Leave the process group this trainer joined.

    After a run that ended well, every rank first waits for the others, so that no rank tears down its
    connections while another still sends on them (rank 0 writing the last checkpoint, say); after a failure it
    leaves at once, since the others may never arrive. Garbage that still refers to the group is collected
    now, while the interpreter is whole, not during its exit."""
    if ctx.owns_group and dist.is_initialized():
        if not failed:
            dist.barrier()
        dist.destroy_process_group()
        gc.collect()
