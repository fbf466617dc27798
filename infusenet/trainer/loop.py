"""The training loop: forward through the frozen ComfyUI FLUX with InfuseNet residuals, the
rectified-flow loss, AdamW with warm-up, clipping and EMA, exact checkpoints and resume.

Forward (what Apply InfiniteYou does at inference, with gradients): for a noisy latent ``x_t`` at
``sigma`` the base model's ``model_sampling`` gives the model input and timestep; the InfuseNet runs
on the packed input, the packed control latent (``latent_format.process_in`` of the raw VAE latent),
the Resampler's identity tokens of the cached ArcFace embedding, the pooled text and guidance 1.0;
its residuals are mapped onto the base blocks by :func:`infusenet.patch.merge_control` and passed as
the base FLUX's ``control``; the base returns the velocity ``v``.

Loss (FLUX rectified flow as ComfyUI's ``CONST`` sampling defines it): ``x_t = noise_scaling(sigma,
noise, x0) = sigma * noise + (1 - sigma) * x0`` and ``calculate_denoised(sigma, v, x_t) = x_t - sigma
* v``; the denoised output equals ``x0`` exactly when ``v = noise - x0``, so the loss is
``mean((v - (noise - x0))^2)``, uniform weighting, with FLUX timestep sampling (:func:`sample_sigma`).
"""
from __future__ import annotations

import logging
import math
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .. import host
from ..model import InfuseNet
from ..patch import flux_diffusion_model, merge_control
from ..resampler import Resampler, ResamplerConfig
from .config import TimestepConfig, TrainConfig
from .data import CachedDataset, step_batch
from .distributed import (DistContext, barrier, init_distributed, mean_over_ranks, rank_device, shutdown, unwrap,
                          wrap)

log = logging.getLogger(__name__)

TRAINABLE_FILE = "trainable.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "state.pt"
STEP_DIR = re.compile(r"^step-(\d+)$")


# ---------------------------------------------------------------- the frozen base
class FrozenBase:
    """The ComfyUI FLUX model (a ModelPatcher), frozen, loaded by ComfyUI's model management."""

    def __init__(self, patcher: "host.ModelPatcher"):
        self.patcher = patcher
        self.dm = flux_diffusion_model(patcher)
        self.model = patcher.model
        self.model_sampling = patcher.get_model_object("model_sampling")
        self.latent_format = self.model.latent_format

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
    """A FLUX.1 diffusion model file through ComfyUI's own loader."""
    return host.load_diffusion_model(path)


class TrainableInfuseNet(nn.Module):
    """The trained parameters (InfuseNet + Resampler) and the forward through the frozen base.

    The base is held outside the module tree, so DDP/FSDP and ``state_dict`` see only the branch."""

    def __init__(self, infusenet: InfuseNet, resampler: Resampler, base: FrozenBase, branch_guidance: float = 1.0):
        super().__init__()
        self.infusenet = infusenet
        self.resampler = resampler
        self.__dict__["base"] = base
        self.branch_guidance = branch_guidance

    @property
    def branch_dtype(self) -> torch.dtype:
        return self.infusenet.img_in.weight.dtype

    def residuals(self, xc: Tensor, t: Tensor, control: Tensor, embedding: Tensor, pooled: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """xc: model input [B, 16, h, w]; t: [B]; control: processed control latent [B, 16, h, w];
        embedding: ArcFace [B, 512]; pooled: [B, P]. Returns N + M residuals [B, L, hidden]."""
        dm = self.base.dm
        img, img_ids = dm.process_img(xc)
        packed_control, _ = dm.process_img(control)
        tokens = self.resampler(embedding.float().reshape(embedding.shape[0], -1, self.resampler.config.embedding_dim))
        g = torch.full((xc.shape[0],), self.branch_guidance, device=xc.device)
        return self.infusenet(img, img_ids, packed_control, tokens, t.float(), pooled, g, dm.pe_embedder)

    def forward(self, x_t: Tensor, sigma: Tensor, control: Tensor, embedding: Tensor, context: Tensor, pooled: Tensor,
                guidance: Tensor | None) -> Tensor:
        """Velocity [B, 16, h, w] of the base with this branch's residuals (strength 1)."""
        base = self.base
        ms = base.model_sampling
        dtype = base.dtype
        xc = ms.calculate_input(sigma, x_t).to(dtype)
        t = ms.timestep(sigma).float()
        # The branch computes in its own dtype (float32 weights, or autocast), whatever the frozen base holds.
        branch = self.branch_dtype
        double, single = self.residuals(xc.to(branch), t, control.to(branch), embedding, pooled.to(branch))
        dm = base.dm
        ctrl = merge_control(None, [r.to(dtype) for r in double], [r.to(dtype) for r in single],
                             len(dm.double_blocks), len(dm.single_blocks))
        if torch.is_grad_enabled():
            # ComfyUI adds control residuals in place into a view of the block output; when that output
            # has no autograd history (frozen base, no grad-carrying input) autograd refuses the in-place
            # add. An input that carries grad gives every block output a history.
            xc = xc.detach().requires_grad_(True)
        out = dm(xc, t, context.to(dtype), y=pooled.to(dtype), guidance=guidance, control=ctrl, transformer_options={})
        return out.float()


# ---------------------------------------------------------------- objective
def resolution_shift(n_tokens: int, cfg: TimestepConfig) -> float:
    """FLUX's mu: linear in the image token count, base_shift at 256 tokens, max_shift at 4096."""
    m = (cfg.max_shift - cfg.base_shift) / (4096 - 256)
    return cfg.base_shift + m * (n_tokens - 256)


def sample_sigma(n_tokens: int, cfg: TimestepConfig, generator: torch.Generator) -> float:
    """sigma = e^mu / (e^mu + 1/t - 1), t = sigmoid(u), u ~ N(logit_mean, logit_std) (FLUX / SD3)."""
    u = float(torch.randn((), generator=generator)) * cfg.logit_std + cfg.logit_mean
    t = min(max(1.0 / (1.0 + math.exp(-u)), 1e-5), 1.0 - 1e-5)
    if not cfg.shift:
        return t
    e = math.exp(resolution_shift(n_tokens, cfg))
    return e / (e + (1.0 / t - 1.0))


def sample_noise(positions: list[int], shape: tuple[int, ...], n_tokens: int, cfg: TimestepConfig, seed: int) -> tuple[Tensor, Tensor]:
    """(sigmas [B], noise [B, *shape]) drawn per global sample position, so the draw of a sample does
    not depend on the rank that holds it nor on a resume."""
    sigmas, noise = [], []
    for p in positions:
        g = torch.Generator().manual_seed((seed * 1_000_003 + p * 7_919 + 17) % (2 ** 63))
        sigmas.append(sample_sigma(n_tokens, cfg, g))
        noise.append(torch.randn(shape, generator=g))
    return torch.tensor(sigmas), torch.stack(noise)


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
    v = module(x_t, sigmas, control, batch["embedding"].to(device), batch["context"].to(device),
               batch["pooled"].to(device), g)
    return F.mse_loss(v.float(), (noise - x0).float())


# ---------------------------------------------------------------- blocks for training
def _snapshot(t: Tensor):
    # Saved activations are copied at save time: ComfyUI's FLUX blocks update tensors in place
    # (``x += ...`` after a norm saved ``x``), which autograd would otherwise refuse or get wrong.
    return t if isinstance(t, nn.Parameter) else t.clone()


def train_blocks(blocks, gradient_checkpointing: bool) -> None:
    """Make ComfyUI's inference-written transformer blocks trainable, state dict keys unchanged.

    Each block gets a copy of its tensor inputs (the blocks add into them in place) and runs with
    saved activations copied when saved. With ``gradient_checkpointing`` the block runs without
    saving anything and is recomputed in the backward pass (re-entrant checkpoint, so the
    recomputation also runs under the copying hooks)."""
    for block in blocks:
        if "forward" in block.__dict__:
            continue
        original = block.forward

        def forward(*args, _original=original, **kwargs):
            if not torch.is_grad_enabled():
                return _original(*args, **kwargs)
            names = [k for k, v in kwargs.items() if isinstance(v, Tensor)]
            fixed = {k: v for k, v in kwargs.items() if k not in names}
            n_args = len(args)

            def run(*tensors):
                tensors = [t.clone() if isinstance(t, Tensor) else t for t in tensors]
                with torch.autograd.graph.saved_tensors_hooks(_snapshot, lambda t: t):
                    return _original(*tensors[:n_args], **fixed, **dict(zip(names, tensors[n_args:])))

            inputs = [*args, *(kwargs[k] for k in names)]
            if gradient_checkpointing:
                return torch.utils.checkpoint.checkpoint(run, *inputs, use_reentrant=True)
            return run(*inputs)

        block.forward = forward


def release_blocks(blocks) -> None:
    for block in blocks:
        block.__dict__.pop("forward", None)


class EMA:
    """Exponential moving average of the trainable parameters (float32 copies)."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {n: p.detach().float().clone() for n, p in module.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for n, p in module.named_parameters():
            if n in self.shadow:
                self.shadow[n].lerp_(p.detach().float(), 1.0 - self.decay)

    def state_dict(self) -> dict[str, Tensor]:
        return {n: t.contiguous() for n, t in self.shadow.items()}

    def load_state_dict(self, sd: dict[str, Tensor]) -> None:
        for n in self.shadow:
            self.shadow[n].copy_(sd[n])


def warmup_lambda(warmup_steps: int):
    def factor(step: int) -> float:
        return 1.0 if warmup_steps <= 0 else min(1.0, (step + 1) / warmup_steps)
    return factor


# ---------------------------------------------------------------- trainer
@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)     # per step run in this call, mean over ranks
    start_step: int = 0
    last_checkpoint: str | None = None
    module: TrainableInfuseNet | None = None


def _bf16_supported(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def initial_modules(config: TrainConfig, base: FrozenBase) -> tuple[InfuseNet, Resampler]:
    """Stage 1: copied from the base (:func:`init.init_from_base`). Stage 2: a stage-1 checkpoint folder
    or an exported InfuseNet (folder or file, projection beside it or ``models.projection``)."""
    from .init import init_from_base, new_infusenet

    source = config.models.init_from
    if config.stage == "pretrain" and source is None:
        return init_from_base(base.dm, config.shape, config.seed)
    if source is None:
        raise ValueError("Stage 2 (sft) starts from a stage-1 model: set config.models.init_from to a stage-1 "
                         "checkpoint folder (step-XXXXXX) or an exported InfuseNet.")
    path = Path(source)
    if (path / TRAINABLE_FILE).is_file():
        return modules_from_trainable(load_file(str(path / TRAINABLE_FILE)), str(path / TRAINABLE_FILE))
    from ..weights import config_from_state_dict, load_infusenet

    bundle = load_infusenet(str(path), config.models.projection)
    if bundle.resampler is None:
        raise ValueError(f"'{source}' has no identity projection beside it; set config.models.projection.")
    sd = {k: v.float() for k, v in bundle.model.state_dict().items()}
    net = new_infusenet(config_from_state_dict(sd, str(path)))
    net.load_state_dict(sd)
    resampler = Resampler(bundle.resampler.config)
    resampler.load_state_dict(bundle.resampler.state_dict())
    return net.train(), resampler.train()


def modules_from_trainable(sd: dict[str, Tensor], source: str = "") -> tuple[InfuseNet, Resampler]:
    """(InfuseNet, Resampler) from a ``trainable.safetensors`` state dict (``infusenet.*``, ``resampler.*``)."""
    from ..weights import config_from_state_dict
    from .init import new_infusenet

    sd = host.to_host_keys(sd)
    net_sd = {k[len("infusenet."):]: v.float() for k, v in sd.items() if k.startswith("infusenet.")}
    res_sd = {k[len("resampler."):]: v.float() for k, v in sd.items() if k.startswith("resampler.")}
    net = new_infusenet(config_from_state_dict(net_sd, source))
    net.load_state_dict(net_sd)
    resampler = Resampler(ResamplerConfig.from_state_dict(res_sd))
    resampler.load_state_dict(res_sd)
    return net.train(), resampler.train()


class Trainer:
    """One training run; ``run()`` trains to ``schedule.max_steps`` from where the checkpoint left off."""

    def __init__(self, config: TrainConfig, base_patcher: "host.ModelPatcher", dataset: CachedDataset,
                 modules: tuple[InfuseNet, Resampler] | None = None):
        self.config = config
        self.dataset = dataset
        # Each rank's device is chosen before anything is loaded (under torchrun: cuda:LOCAL_RANK).
        device = rank_device(base_patcher.load_device)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        self.base = FrozenBase(host.patcher_on_device(base_patcher, device))
        device = self.base.load()
        self.ctx: DistContext = init_distributed(config.distributed, device)
        if config.data.batch_size % self.ctx.world_size:
            raise ValueError(f"global batch {config.data.batch_size} is not divisible by {self.ctx.world_size} processes")
        if self.ctx.strategy == "fsdp" and config.optim.ema_decay is not None:
            raise NotImplementedError("EMA with FSDP is not supported (the EMA would hold each rank's shard only).")
        net, resampler = modules if modules is not None else initial_modules(config, self.base)
        self.module = TrainableInfuseNet(net, resampler, self.base, config.timesteps.branch_guidance).to(device)
        self.module.train()
        self.blocks = [*net.double_blocks, *net.single_blocks, *self.base.dm.double_blocks, *self.base.dm.single_blocks]
        train_blocks(self.blocks, config.precision.gradient_checkpointing)
        self.wrapped = wrap(self.module, self.ctx)
        o = config.optim
        self.params = [p for p in self.wrapped.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_lambda(o.warmup_steps))
        self.ema = EMA(self.module, o.ema_decay) if o.ema_decay is not None else None
        self.use_bf16 = config.precision.mixed == "bf16" and _bf16_supported(device)
        self.step = 0
        self.out_dir = Path(config.checkpoint.output_dir)
        resume = self._resume_folder()
        if resume is not None:
            self.load(resume)

    # -------------------------------------------------------- one step
    def train_step(self) -> float:
        cfg = self.config
        batch, positions = step_batch(self.dataset, self.step, cfg.data.batch_size, self.ctx.rank, self.ctx.world_size,
                                      cfg.seed, cfg.data.shuffle)
        latent_shape = tuple(batch["latent"].shape[1:])
        p = self.base.dm.patch_size
        n_tokens = math.ceil(latent_shape[-2] / p) * math.ceil(latent_shape[-1] / p)
        sigmas, noise = sample_noise(positions, latent_shape, n_tokens, cfg.timesteps, cfg.seed)
        with host.training_mode():  # FLUX blocks with autograd-capable kernels, for this step only
            with torch.autocast(self.base.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
                loss = flow_loss(self.wrapped, self.base, batch, sigmas, noise, cfg.timesteps.guidance)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        if cfg.optim.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.optim.grad_clip)  # DTensor-aware under FSDP
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.module)
        self.step += 1
        return mean_over_ranks(float(loss.detach()), self.ctx)

    def run(self) -> TrainResult:
        from tqdm.auto import tqdm

        cfg = self.config
        result = TrainResult(start_step=self.step, module=self.module)
        bar = tqdm(total=cfg.schedule.max_steps, initial=self.step, desc=f"InfuseNet {cfg.stage}",
                   disable=not (cfg.schedule.progress and self.ctx.is_main))
        while self.step < cfg.schedule.max_steps:
            loss = self.train_step()
            result.losses.append(loss)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            if self.ctx.is_main and cfg.schedule.log_every and self.step % cfg.schedule.log_every == 0:
                log.info("step %d loss %.6f lr %.3g", self.step, loss, self.scheduler.get_last_lr()[0])
            if cfg.checkpoint.every and (self.step % cfg.checkpoint.every == 0 or self.step == cfg.schedule.max_steps):
                result.last_checkpoint = str(self.save())
        bar.close()
        return result

    # -------------------------------------------------------- checkpoints
    def _resume_folder(self) -> Path | None:
        r = self.config.checkpoint.resume
        if r is None:
            return None
        if r != "latest":
            return Path(r)
        folders = list_checkpoints(self.out_dir)
        return folders[-1] if folders else None

    def _state_dicts(self) -> tuple[dict, dict]:
        if self.ctx.strategy == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

            return get_state_dict(self.wrapped, self.optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return self.module.state_dict(), self.optimizer.state_dict()

    def save(self) -> Path:
        """Write ``output_dir/step-XXXXXX/`` (rank 0) and drop checkpoints beyond ``keep_last``."""
        folder = self.out_dir / f"step-{self.step:06d}"
        model_sd, optim_sd = self._state_dicts()
        if self.ctx.is_main:
            tmp = folder.with_name(folder.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            axes = ",".join(str(a) for a in self.base.dm.params.axes_dim)
            # Key names as published FLUX files have them, so a checkpoint resumes on any ComfyUI.
            save_file(host.to_published_keys({k: v.detach().float().cpu().contiguous() for k, v in model_sd.items()}),
                      str(tmp / TRAINABLE_FILE),
                      metadata={"axes_dim": axes, "stage": self.config.stage, "step": str(self.step)})
            if self.ema is not None:
                save_file(host.to_published_keys(self.ema.state_dict()), str(tmp / EMA_FILE), metadata={"axes_dim": axes})
            torch.save({
                "step": self.step, "optimizer": optim_sd, "scheduler": self.scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(), "python_rng": random.getstate(),
                "world_size": self.ctx.world_size, "config": self.config.as_dict(),
            }, tmp / STATE_FILE)
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)
            keep = self.config.checkpoint.keep_last
            if keep:
                for old in list_checkpoints(self.out_dir)[:-keep]:
                    shutil.rmtree(old, ignore_errors=True)
            log.info("Saved checkpoint %s", folder)
        barrier(self.ctx)
        return folder

    def load(self, folder: Path) -> None:
        """Restore parameters, optimiser, scheduler, EMA, RNG and the step (= data position)."""
        folder = Path(folder)
        if not (folder / STATE_FILE).is_file():
            raise FileNotFoundError(f"'{folder}' is not a trainer checkpoint: {STATE_FILE} is missing")
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
        differences = config_differences(state.get("config", {}), self.config.as_dict())
        if differences:
            raise ValueError(
                f"Checkpoint '{folder}' was made with another configuration: {'; '.join(differences)}. Resume it "
                "with the configuration it was made with, or start a new run (another checkpoint.output_dir, or "
                "checkpoint.resume=None).")
        model_sd = host.to_host_keys(load_file(str(folder / TRAINABLE_FILE)))
        if self.ctx.strategy == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

            set_state_dict(self.wrapped, self.optimizer, model_state_dict=model_sd, optim_state_dict=state["optimizer"],
                           options=StateDictOptions(full_state_dict=True))
        else:
            self.module.load_state_dict(model_sd)
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and (folder / EMA_FILE).is_file():
            self.ema.load_state_dict(host.to_host_keys(load_file(str(folder / EMA_FILE))))
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
        self.step = int(state["step"])
        log.info("Resumed from %s at step %d", folder, self.step)

    def close(self) -> None:
        release_blocks(self.blocks)
        shutdown(self.ctx)


RESUMABLE_CHANGES = ("schedule.", "checkpoint.", "distributed.", "precision.gradient_checkpointing")
"""Settings that may change between a checkpoint and its resumption (how long, how often, on how many
processes, with or without recomputation): the rest shapes what is trained and how."""


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return out


def config_differences(saved: dict, current: dict) -> list[str]:
    """``"field saved -> current"`` for each training setting that differs (see :data:`RESUMABLE_CHANGES`)."""
    a, b = _flatten(saved), _flatten(current)
    return [f"{key} {a.get(key, '(unset)')!r} -> {b.get(key, '(unset)')!r}" for key in sorted(set(a) | set(b))
            if not key.startswith(RESUMABLE_CHANGES) and a.get(key) != b.get(key)]


def list_checkpoints(out_dir: Path) -> list[Path]:
    if not Path(out_dir).is_dir():
        return []
    found = [(int(m.group(1)), p) for p in Path(out_dir).iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def train(config: TrainConfig, base: "host.ModelPatcher | None" = None,
          dataset: CachedDataset | None = None) -> TrainResult:
    """Train stage 1 or 2 as ``config`` says. ``base``: an already loaded FLUX ModelPatcher (else
    ``config.models.base_model`` is loaded with ComfyUI); ``dataset``: else ``config.data.cache_dir``."""
    if base is None:
        if not config.models.base_model:
            raise ValueError("config.models.base_model is not set (a FLUX.1 diffusion model file).")
        base = load_base(config.models.base_model)
    dataset = dataset if dataset is not None else CachedDataset(config.data.cache_dir)
    trainer = Trainer(config, base, dataset)
    try:
        return trainer.run()
    finally:
        trainer.close()
