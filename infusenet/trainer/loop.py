"""The training loop: forward through the frozen ComfyUI FLUX with InfuseNet residuals, the
rectified-flow loss, AdamW with warm-up and decay, gradient accumulation, clipping and EMA, sharded
checkpoints and exact resume (on any number of processes).

Forward (what Apply InfiniteYou does at inference, with gradients): for a noisy latent ``x_t`` at
``sigma`` the base model's ``model_sampling`` gives the model input and timestep; the InfuseNet runs
on the packed input, the packed control latent (``latent_format.process_in`` of the raw VAE latent),
the Resampler's identity tokens of the cached ArcFace embedding, the pooled text and guidance 1.0;
its residuals are mapped onto the base blocks by :func:`infusenet.patch.merge_control` and passed as
the base FLUX's ``control``; the base returns the velocity ``v``.

FLUX.2 [klein] bases train an :class:`~infusenet.model_flux2.InfuseNet2` the same way, with FLUX.2's
inputs: 128-channel latents at patch size 1, no pooled text (the cache's ``pooled`` is empty or absent
and ignored), guidance only for a base (and branch) with a guidance embedder, and the text context as
ComfyUI's ``model_base.Flux2`` hands it to the model at sampling time (left-padded with zeros to 512
tokens: :func:`infusenet.host.sampling_context`). Timesteps are shifted by the base's own sampling shift
(:class:`~infusenet.trainer.config.TimestepConfig` ``shift_source``).

Loss (FLUX rectified flow as ComfyUI's ``CONST`` sampling defines it): ``x_t = noise_scaling(sigma,
noise, x0) = sigma * noise + (1 - sigma) * x0`` and ``calculate_denoised(sigma, v, x_t) = x_t - sigma
* v``; the denoised output equals ``x0`` exactly when ``v = noise - x0``, so the loss is
``mean((v - (noise - x0))^2)``, uniform weighting, with FLUX timestep sampling (:func:`sample_sigma`).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributed.tensor import DTensor

from .. import host
from ..patch import merge_control
from ..resampler import Resampler, ResamplerConfig
from .blocks import release_blocks, train_blocks  # noqa: F401  (train_blocks: part of this module's API)
from .checkpoint import (EMA_FILE, RESUMABLE_CHANGES, SHARDS_DIR, STATE_FILE, TRAINABLE_FILE,  # noqa: F401
                         config_differences, is_checkpoint, list_checkpoints, prune, read_shards, read_state,
                         read_trainable, write_shards)
from .config import TimestepConfig, TrainConfig
from .data import CachedDataset, batch_stream, open_dataset
from .distributed import DistContext, barrier, init_distributed, mean_over_ranks, rank_device, shutdown, wrap
from .ema import EMA
from .optim import lr_factor, make_optimizer

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- the frozen base
def base_diffusion_model(patcher: "host.ModelPatcher") -> "host.Flux":
    """The FLUX.1 or FLUX.2 [klein] diffusion model inside ``patcher``; ValueError naming what it holds
    otherwise, HostMismatch (with the ComfyUI version) for FLUX.2 on a ComfyUI that cannot load klein."""
    from .init import check_host_trains_flux2

    dm = host.flux_diffusion_model(patcher)
    if dm is not None and host.is_flux2(dm):
        check_host_trains_flux2()
        return dm
    if dm is not None and len(dm.params.axes_dim) == 3 and getattr(dm, "vector_in", None) is not None:
        return dm
    inner = getattr(getattr(patcher, "model", patcher), "diffusion_model", patcher)
    detail = f"rotary axes {list(dm.params.axes_dim)}" if dm is not None else f"network {type(inner).__name__}"
    raise ValueError(f"the trainer trains an InfuseNet on a FLUX.1 or FLUX.2 [klein] base; this base is "
                     f"{host.model_family(patcher)} ({detail})")


class FrozenBase:
    """The ComfyUI FLUX model (a ModelPatcher), frozen, loaded by ComfyUI's model management."""

    def __init__(self, patcher: "host.ModelPatcher"):
        self.patcher = patcher
        self.dm = base_diffusion_model(patcher)
        self.model = patcher.model
        self.model_sampling = patcher.get_model_object("model_sampling")
        self.latent_format = self.model.latent_format

    @property
    def is_flux2(self) -> bool:
        return host.is_flux2(self.dm)

    def text_context(self, context: Tensor) -> Tensor:
        """The context [B, T', C] the base gets at sampling time for a cached context [B, T, C] (FLUX.2: left-padded
        to 512 tokens by ComfyUI's own conditioning; FLUX.1: as it is)."""
        return host.sampling_context(self.model, context) if self.is_flux2 else context

    def load(self) -> torch.device:
        host.load_models([self.patcher], force_full_load=True)
        self.dm.eval().requires_grad_(False)
        return self.device

    @property
    def device(self) -> torch.device:
        return next(self.dm.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.manual_cast_dtype or self.model.get_dtype()


def load_base(path: str) -> "host.ModelPatcher":
    """A FLUX.1 or FLUX.2 [klein] diffusion model file through ComfyUI's own loader."""
    return host.load_diffusion_model(path)


class TrainableInfuseNet(nn.Module):
    """The trained parameters (InfuseNet + Resampler) and the forward through the frozen base.

    The base is held outside the module tree, so DDP/FSDP and ``state_dict`` see only the branch."""

    def __init__(self, infusenet: nn.Module, resampler: Resampler, base: FrozenBase, branch_guidance: float = 1.0):
        super().__init__()
        self.infusenet = infusenet
        self.resampler = resampler
        self.__dict__["base"] = base
        self.branch_guidance = branch_guidance

    @property
    def branch_dtype(self) -> torch.dtype:
        return self.infusenet.img_in.weight.dtype

    def residuals(self, xc: Tensor, t: Tensor, control: Tensor, embedding: Tensor,
                  pooled: Tensor | None) -> tuple[list[Tensor], list[Tensor]]:
        """xc: model input [B, C, h, w] (C: 16 for FLUX.1, 128 for FLUX.2); t: [B]; control: processed control
        latent [B, C, h, w]; embedding: ArcFace [B, 512]; pooled: [B, P] (FLUX.1; FLUX.2 has none and ignores it).
        Returns N + M residuals [B, L, hidden]."""
        dm = self.base.dm
        img, img_ids = dm.process_img(xc)
        packed_control, _ = dm.process_img(control)
        tokens = self.resampler(embedding.float().reshape(embedding.shape[0], -1, self.resampler.config.embedding_dim))
        g = torch.full((xc.shape[0],), self.branch_guidance, device=xc.device)
        if self.base.is_flux2:
            g = g if self.infusenet.params.guidance_embed else None
            return self.infusenet(img, img_ids, packed_control, tokens, t.float(), g, dm.pe_embedder)
        return self.infusenet(img, img_ids, packed_control, tokens, t.float(), pooled, g, dm.pe_embedder)

    def forward(self, x_t: Tensor, sigma: Tensor, control: Tensor, embedding: Tensor, context: Tensor,
                pooled: Tensor | None, guidance: Tensor | None) -> Tensor:
        """Velocity [B, C, h, w] of the base with this branch's residuals (strength 1)."""
        base = self.base
        ms = base.model_sampling
        dtype = base.dtype
        xc = ms.calculate_input(sigma, x_t).to(dtype)
        t = ms.timestep(sigma).float()
        if base.is_flux2:
            context, pooled = base.text_context(context), None
        # The branch computes in its own dtype (float32 weights, or autocast), whatever the frozen base holds.
        branch = self.branch_dtype
        double, single = self.residuals(xc.to(branch), t, control.to(branch), embedding,
                                        None if pooled is None else pooled.to(branch))
        dm = base.dm
        ctrl = merge_control(None, [r.to(dtype) for r in double], [r.to(dtype) for r in single],
                             len(dm.double_blocks), len(dm.single_blocks))
        if torch.is_grad_enabled():
            # ComfyUI adds control residuals in place into a view of the block output; when that output
            # has no autograd history (frozen base, no grad-carrying input) autograd refuses the in-place
            # add. An input that carries grad gives every block output a history.
            xc = xc.detach().requires_grad_(True)
        y = None if pooled is None else pooled.to(dtype)
        out = dm(xc, t, context.to(dtype), y=y, guidance=guidance, control=ctrl, transformer_options={})
        return out.float()


# ---------------------------------------------------------------- objective
def resolution_shift(n_tokens: int, cfg: TimestepConfig) -> float:
    """FLUX's mu: linear in the image token count, base_shift at 256 tokens, max_shift at 4096."""
    m = (cfg.max_shift - cfg.base_shift) / (4096 - 256)
    return cfg.base_shift + m * (n_tokens - 256)


SHIFT_SOURCES = ("auto", "resolution", "base")


def sample_sigma(n_tokens: int, cfg: TimestepConfig, generator: torch.Generator, mu: float | None = None) -> float:
    """sigma = e^mu / (e^mu + 1/t - 1), t = sigmoid(u), u ~ N(logit_mean, logit_std) (FLUX / SD3); ``mu``: the
    shift, by default FLUX.1's resolution shift of ``n_tokens`` (:func:`resolution_shift`)."""
    u = float(torch.randn((), generator=generator)) * cfg.logit_std + cfg.logit_mean
    t = min(max(1.0 / (1.0 + math.exp(-u)), 1e-5), 1.0 - 1e-5)
    if not cfg.shift:
        return t
    e = math.exp(resolution_shift(n_tokens, cfg) if mu is None else mu)
    return e / (e + (1.0 / t - 1.0))


def sample_noise(positions: list[int], shape: tuple[int, ...], n_tokens: int, cfg: TimestepConfig, seed: int,
                 mu: float | None = None) -> tuple[Tensor, Tensor]:
    """(sigmas [B], noise [B, *shape]) drawn per global sample position, so the draw of a sample does
    not depend on the rank that holds it nor on a resume. ``mu``: see :func:`sample_sigma`."""
    sigmas, noise = [], []
    for p in positions:
        g = torch.Generator().manual_seed((seed * 1_000_003 + p * 7_919 + 17) % (2 ** 63))
        sigmas.append(sample_sigma(n_tokens, cfg, g, mu))
        noise.append(torch.randn(shape, generator=g))
    return torch.tensor(sigmas), torch.stack(noise)


def shift_mu(base: FrozenBase, cfg: TimestepConfig) -> float | None:
    """The constant mu of ``shift_source`` "base" (the base's own sampling shift; "auto" on FLUX.2), or None
    for FLUX.1's resolution shift ("resolution"; "auto" on FLUX.1)."""
    source = cfg.shift_source
    if source not in SHIFT_SOURCES:
        raise ValueError(f"timesteps.shift_source must be one of {SHIFT_SOURCES}, not {source!r}")
    if source == "resolution" or (source == "auto" and not base.is_flux2):
        return None
    mu = host.sampling_shift(base.model_sampling)
    if mu is None:
        raise ValueError(f"timesteps.shift_source '{source}' takes the base's sampling shift, but its model_sampling "
                         f"({type(base.model_sampling).__name__}) has none: use shift_source='resolution'")
    return mu


def flow_loss(module: nn.Module, base: FrozenBase, batch: dict[str, Tensor], sigmas: Tensor, noise: Tensor,
              guidance: float) -> Tensor:
    """Rectified-flow MSE for one batch of cached samples (see the module docstring)."""
    device = base.device
    lf, ms = base.latent_format, base.model_sampling
    x0 = lf.process_in(batch["latent"].to(device))
    control = lf.process_in(batch["control"].to(device))
    sigmas, noise = sigmas.to(device), noise.to(device)
    x_t = ms.noise_scaling(sigmas, noise, x0)
    g = torch.full((x0.shape[0],), guidance, device=device) if base.dm.params.guidance_embed else None
    pooled = None if base.is_flux2 else batch["pooled"].to(device)
    v = module(x_t, sigmas, control, batch["embedding"].to(device), batch["context"].to(device), pooled, g)
    return F.mse_loss(v.float(), (noise - x0).float())


# ---------------------------------------------------------------- trainer
@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)     # per optimiser step run in this call, mean over ranks
    start_step: int = 0
    last_checkpoint: str | None = None
    module: TrainableInfuseNet | None = None


def _bf16_supported(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def initial_modules(config: TrainConfig, base: FrozenBase) -> tuple[nn.Module, Resampler]:
    """Stage 1: copied from the base (:func:`init.init_from_base`). Stage 2: a stage-1 checkpoint folder
    or an exported InfuseNet (folder or file, projection beside it or ``models.projection``). A FLUX.1 base
    trains an :class:`InfuseNet`, a FLUX.2 base an :class:`~infusenet.model_flux2.InfuseNet2`."""
    from .init import check_branch_fits_base, init_from_base

    source = config.models.init_from
    if config.stage == "pretrain" and source is None:
        return init_from_base(base.dm, config.shape, config.seed)
    if source is None:
        raise ValueError("Stage 2 (sft) starts from a stage-1 model: set config.models.init_from to a stage-1 "
                         "checkpoint folder (step-XXXXXX) or an exported InfuseNet.")
    path = Path(source)
    if is_checkpoint(path):
        net, resampler = modules_from_trainable(read_trainable(path)[0], str(path))
    else:
        net, resampler = modules_from_export(str(path), config.models.projection)
    check_branch_fits_base(net, base.dm, str(path))
    return net, resampler


def modules_from_export(path: str, projection: str | None = None) -> tuple[nn.Module, Resampler]:
    """(InfuseNet, Resampler) in float32 from exported files, read by the pack's loader."""
    from ..weights import load_infusenet
    from .init import new_branch

    bundle = load_infusenet(path, projection)
    if bundle.resampler is None:
        raise ValueError(f"'{path}' has no identity projection beside it; set config.models.projection.")
    sd = {k: v.float() for k, v in bundle.model.state_dict().items()}
    net = new_branch(bundle.config)
    net.load_state_dict(sd)
    resampler = Resampler(bundle.resampler.config)
    resampler.load_state_dict(bundle.resampler.state_dict())
    return net.train(), resampler.train()


def modules_from_trainable(sd: dict[str, Tensor], source: str = "") -> tuple[nn.Module, Resampler]:
    """(InfuseNet, Resampler) from the trained parameters (``infusenet.*``, ``resampler.*``), float32; an
    :class:`~infusenet.model_flux2.InfuseNet2` when they are FLUX.2 weights."""
    from .init import config_from_weights, new_branch

    sd = host.to_host_keys(sd)
    net_sd = {k[len("infusenet."):]: v.float() for k, v in sd.items() if k.startswith("infusenet.")}
    res_sd = {k[len("resampler."):]: v.float() for k, v in sd.items() if k.startswith("resampler.")}
    net = new_branch(config_from_weights(net_sd, source))
    net.load_state_dict(net_sd)
    resampler = Resampler(ResamplerConfig.from_state_dict(res_sd))
    resampler.load_state_dict(res_sd)
    return net.train(), resampler.train()


def memory_gb(device: torch.device) -> float:
    """CUDA: peak allocated on ``device``; otherwise this process's resident memory (GiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 30
    except (OSError, AttributeError, ValueError):
        pass
    try:
        import resource  # not on Windows

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # peak, KiB on Linux
    except ImportError:
        return float("nan")


def resolved_config(config: TrainConfig, base: FrozenBase) -> TrainConfig:
    """A copy of ``config`` with the branch shape's defaults set for ``base`` (:func:`init.shape_for_base`), so a
    run and its checkpoints state the numbers they train with."""
    from .init import shape_for_base

    return dataclasses.replace(copy.deepcopy(config), shape=shape_for_base(base.dm, config.shape))


class Trainer:
    """One training run; ``run()`` trains to ``schedule.max_steps`` from where the checkpoint left off.

    ``watcher`` (optional; see :mod:`infusenet.trainer.watch`): after every optimiser step rank 0 calls
    ``watcher.on_step(step, scalars)`` with ``loss``, ``lr`` (of that step), ``grad_norm`` (before
    clipping), ``samples_per_s`` and ``memory_gb``; then every rank calls
    ``watcher.maybe_validate(step, trainer)``; :meth:`close` calls ``watcher.close()``."""

    def __init__(self, config: TrainConfig, base_patcher: "host.ModelPatcher", dataset: CachedDataset,
                 modules: tuple[nn.Module, Resampler] | None = None, watcher=None):
        self.config = config
        self.dataset = dataset
        self.watcher = watcher
        # Each rank's device is chosen before anything is loaded (under torchrun: cuda:LOCAL_RANK).
        device = rank_device(base_patcher.load_device)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        self.base = FrozenBase(host.patcher_on_device(base_patcher, device))
        self.config = config = resolved_config(config, self.base)
        self.mu = shift_mu(self.base, config.timesteps)   # None: FLUX.1's resolution shift, per batch
        device = self.base.load()
        self.ctx: DistContext = init_distributed(config.distributed, device)
        o = config.optim
        if not isinstance(o.grad_accum_steps, int) or o.grad_accum_steps < 1:
            raise ValueError(f"optim.grad_accum_steps must be a whole number >= 1, got {o.grad_accum_steps!r}")
        if config.data.batch_size % (self.ctx.world_size * o.grad_accum_steps):
            raise ValueError(f"global batch {config.data.batch_size} is not divisible by {self.ctx.world_size} "
                             f"processes x {o.grad_accum_steps} accumulation steps")
        shard_base = config.distributed.shard_base and self.ctx.strategy == "fsdp"
        if config.distributed.shard_base and self.ctx.strategy == "ddp":
            raise ValueError("distributed.shard_base shards the base with FSDP: set distributed.strategy to 'fsdp' "
                             "(or 'auto'), not 'ddp'")
        self.memory_plan = self._announce_memory_plan(base_patcher, device) if config.schedule.memory_plan else None
        net, resampler = modules if modules is not None else initial_modules(config, self.base)
        self.module = TrainableInfuseNet(net, resampler, self.base, config.timesteps.branch_guidance).to(device)
        self.module.train()
        self.blocks = [*net.double_blocks, *net.single_blocks, *self.base.dm.double_blocks, *self.base.dm.single_blocks]
        p = config.precision
        self.copy_stats = train_blocks(self.blocks, p.gradient_checkpointing, p.saved_activation_copies)
        self.wrapped = wrap(self.module, self.ctx, self.base.dm if shard_base else None)
        self.params = [p for p in self.wrapped.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.params, o, device, self.module.resampler.parameters())
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(o, config.schedule.max_steps))
        self.ema = EMA(self.module, o.ema_decay) if o.ema_decay is not None else None
        self.use_bf16 = config.precision.mixed == "bf16" and _bf16_supported(device)
        self.step = 0
        self.out_dir = Path(config.checkpoint.output_dir)
        self._stream = None
        resume = self._resume_folder()
        if resume is not None:
            self.load(resume)
        if self._stream is None:
            self._stream = self._new_stream()

    def _announce_memory_plan(self, base_patcher, device: torch.device):
        """The memory plan of this run (resolution: the data's largest), logged on rank 0 before anything
        trainable is allocated, so a run that cannot fit says so and which strategy would."""
        from .memory import format_plan, plan_for_run

        sizes = getattr(self.dataset, "buckets", None) or [getattr(self.dataset, "resolution", None)]
        sizes = [tuple(s) for s in sizes if s]
        resolution = max(sizes, key=lambda s: s[0] * s[1]) if sizes else None
        plan = plan_for_run(self.config, self.ctx.world_size, base_patcher, device, resolution=resolution)
        if self.ctx.is_main:
            log.info("InfuseNet trainer memory plan:\n%s", format_plan(plan))
        return plan

    # -------------------------------------------------------- one step
    def _new_stream(self):
        """Micro-batches of this rank from the current step on: micro-step m of optimiser step s holds the
        global positions s * B + m * B / k ... (B: global batch, k: accumulation steps)."""
        cfg = self.config
        k = cfg.optim.grad_accum_steps
        return batch_stream(self.dataset, cfg.data.batch_size // k, self.ctx.rank, self.ctx.world_size, cfg.seed,
                            cfg.data.shuffle, self.step * k)

    def _gradient_sync(self, sync: bool):
        """DDP: all-reduce on the last micro-step only (its gradients are whole on every rank anyway).
        FSDP: reduce-scatter on every micro-step, so that each rank keeps only its shard of the
        gradients (skipping it would accumulate whole unsharded gradients on every rank)."""
        if self.ctx.strategy == "ddp" and not sync:
            return self.wrapped.no_sync()
        return contextlib.nullcontext()

    def _grad_norm(self) -> float:
        """Total gradient norm before clipping; clips to ``optim.grad_clip`` when set."""
        clip = self.config.optim.grad_clip
        if clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.params, clip)  # DTensor-aware under FSDP
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        return float(norm)

    def train_step(self) -> float:
        """One optimiser step (``optim.grad_accum_steps`` micro-steps); returns its loss, mean over ranks."""
        cfg = self.config
        k = cfg.optim.grad_accum_steps
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        with host.training_mode():  # FLUX blocks with autograd-capable kernels, for this step only
            for micro in range(k):
                batch, positions = next(self._stream)
                latent_shape = tuple(batch["latent"].shape[1:])
                p = self.base.dm.patch_size
                n_tokens = math.ceil(latent_shape[-2] / p) * math.ceil(latent_shape[-1] / p)
                sigmas, noise = sample_noise(positions, latent_shape, n_tokens, cfg.timesteps, cfg.seed, self.mu)
                with self._gradient_sync(micro == k - 1):
                    with torch.autocast(self.base.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
                        loss = flow_loss(self.wrapped, self.base, batch, sigmas, noise, cfg.timesteps.guidance)
                    (loss / k).backward()  # equal micro-batches: the mean of their means is the batch mean
                total += float(loss.detach())
        grad_norm = self._grad_norm()
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update()
        self.step += 1
        loss = mean_over_ranks(total / k, self.ctx)
        if self.watcher is not None:
            if self.ctx.is_main:
                self.watcher.on_step(self.step, {
                    "loss": loss, "lr": lr, "grad_norm": grad_norm,
                    "samples_per_s": cfg.data.batch_size / max(time.perf_counter() - start, 1e-9),
                    "memory_gb": memory_gb(self.base.device)})
            self.watcher.maybe_validate(self.step, self)
        return loss

    def run(self) -> TrainResult:
        from tqdm.auto import tqdm

        cfg = self.config
        result = TrainResult(start_step=self.step, module=self.module)
        bar = tqdm(total=cfg.schedule.max_steps, initial=self.step, desc=f"InfuseNet {cfg.stage}",
                   disable=not (cfg.schedule.progress and self.ctx.is_main))
        while self.step < cfg.schedule.max_steps:
            lr = self.scheduler.get_last_lr()[0]
            loss = self.train_step()
            result.losses.append(loss)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            if self.ctx.is_main and cfg.schedule.log_every and self.step % cfg.schedule.log_every == 0:
                log.info("step %d loss %.6f lr %.3g", self.step, loss, lr)
            if cfg.checkpoint.every and (self.step % cfg.checkpoint.every == 0 or self.step == cfg.schedule.max_steps):
                result.last_checkpoint = str(self.save())
        bar.close()
        return result

    # -------------------------------------------------------- whole modules
    def full_modules(self, ema: bool = False) -> tuple[nn.Module, Resampler] | None:
        """Unsharded float32 copies of the trained InfuseNet and Resampler (or of their EMA) on the CPU.
        A collective under FSDP: every rank calls it, rank 0 gets the modules, the others None."""
        if ema and self.ema is None:
            raise ValueError("this run keeps no EMA: set optim.ema_decay")
        if ema:
            sd = self.ema.full_state_dict()
        elif self.ctx.strategy == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            sd = get_model_state_dict(self.wrapped, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        else:
            sd = {k: v.detach().float().cpu().clone() for k, v in self.module.state_dict().items()}
        if not self.ctx.is_main:
            return None
        return modules_from_trainable(sd, "trained InfuseNet")

    # -------------------------------------------------------- checkpoints
    def _resume_folder(self) -> Path | None:
        r = self.config.checkpoint.resume
        if r is None:
            return None
        if r != "latest":
            return Path(r)
        folders = list_checkpoints(self.out_dir)
        return folders[-1] if folders else None

    def save(self) -> Path:
        """Write ``output_dir/step-XXXXXX/``: every rank its shards, rank 0 ``state.pt``; drop checkpoints
        beyond ``keep_last``. A collective under torch.distributed."""
        folder = self.out_dir / f"step-{self.step:06d}"
        tmp = folder.with_name(folder.name + ".tmp")
        if self.ctx.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        barrier(self.ctx)
        write_shards(tmp / SHARDS_DIR, self.wrapped, self.optimizer, self.ema)
        barrier(self.ctx)
        if self.ctx.is_main:
            torch.save({
                "step": self.step, "scheduler": self.scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(), "python_rng": random.getstate(),
                "world_size": self.ctx.world_size, "config": self.config.as_dict(), "stage": self.config.stage,
                "axes_dim": [int(a) for a in self.base.dm.params.axes_dim],
            }, tmp / STATE_FILE)
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)
            prune(self.out_dir, self.config.checkpoint.keep_last)
            log.info("Saved checkpoint %s", folder)
        barrier(self.ctx)
        return folder

    def load(self, folder: Path) -> None:
        """Restore parameters, optimiser, scheduler, EMA, RNG and the step (= data position); each rank
        reads its own part, whatever world size wrote the checkpoint."""
        folder = Path(folder)
        state = read_state(folder)
        differences = config_differences(state.get("config", {}), self.config.as_dict(), TrainConfig().as_dict())
        if differences:
            raise ValueError(
                f"Checkpoint '{folder}' was made with another configuration: {'; '.join(differences)}. Resume it "
                "with the configuration it was made with, or start a new run (another checkpoint.output_dir, or "
                "checkpoint.resume=None).")
        if not (folder / SHARDS_DIR).is_dir():
            raise FileNotFoundError(f"'{folder}' has no '{SHARDS_DIR}/' folder: it was written by an older trainer "
                                    "and cannot be resumed (export it, or start stage 2 from it with models.init_from)")
        read_shards(folder / SHARDS_DIR, self.wrapped, self.optimizer, self.ema)
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
        self.step = int(state["step"])
        self._close_stream()
        self._stream = self._new_stream()
        log.info("Resumed from %s at step %d (written by %d processes, now %d)", folder, self.step,
                 int(state.get("world_size", 1)), self.ctx.world_size)

    def _close_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()  # stops the loader's worker processes, if any
            self._stream = None

    def close(self) -> None:
        """Stop the loader, release the base's blocks and the watcher, and leave the process group. Called from a
        ``finally`` while an error propagates, it leaves without waiting for the other ranks."""
        failed = sys.exc_info()[0] is not None
        self._close_stream()
        release_blocks(self.blocks)
        if self.watcher is not None:
            self.watcher.close()
        shutdown(self.ctx, failed=failed)


def train(config: TrainConfig, base: "host.ModelPatcher | None" = None,
          dataset: CachedDataset | None = None, watcher=None) -> TrainResult:
    """Train stage 1 or 2 as ``config`` says. ``base``: an already loaded FLUX.1 or FLUX.2 [klein] ModelPatcher
    (else ``config.models.base_model`` is loaded with ComfyUI); ``dataset``: else ``config.data.cache_dir``."""
    if base is None:
        if not config.models.base_model:
            raise ValueError("config.models.base_model is not set (a FLUX.1 or FLUX.2 [klein] diffusion model file).")
        base = load_base(config.models.base_model)
    dataset = dataset if dataset is not None else open_dataset(config.data)
    trainer = Trainer(config, base, dataset, watcher=watcher)
    try:
        return trainer.run()
    finally:
        trainer.close()
