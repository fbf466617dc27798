"""Typed training configuration: one dataclass per concern, gathered in :class:`TrainConfig`.

Every field has a default that trains the real model shape; tests shrink the model and the data.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

Stage = Literal["pretrain", "sft"]
Precision = Literal["bf16", "fp32"]
Strategy = Literal["auto", "none", "ddp", "fsdp"]
Optimizer = Literal["adamw", "adamw_fused", "adamw_low_memory"]
LRSchedule = Literal["constant", "cosine"]
ActivationCopies = Literal["aliased", "all"]


@dataclass
class ModelPaths:
    """Files the trainer reads. ``base_model``: a FLUX.1 or FLUX.2 [klein] diffusion model ComfyUI loads
    (``comfy.sd.load_diffusion_model``). ``init_from``: for stage 2, a stage-1 trainer checkpoint
    folder (``.../step-000100``) or an exported InfuseNet folder/file (its projection beside it)."""

    base_model: str | None = None
    init_from: str | None = None
    projection: str | None = None


@dataclass
class InfuseNetShape:
    """Size of the trained branch. Blocks are copied from the first ``depth`` double and the first
    ``depth_single_blocks`` single blocks of the base; the Resampler is trained from scratch.

    ``None`` takes the base's default (:func:`infusenet.trainer.init.shape_for_base`, resolved when a run
    starts, so checkpoints record numbers): on FLUX.1 the released InfuseNet v1.0's 4 double and 10 single
    blocks and 4096-wide identity tokens (T5-XXL's width); on FLUX.2 the FLUX.2 InfuseNet's 2 double and 5
    single blocks (:mod:`infusenet.model_flux2`) and identity tokens as wide as the base's text features
    (``context_in_dim``: 7680 for klein 4B), the only width its ``txt_in`` takes."""

    depth: int | None = None
    depth_single_blocks: int | None = None
    resampler_dim: int = 1280
    resampler_depth: int = 4
    resampler_heads: int = 20
    resampler_dim_head: int = 64
    num_tokens: int = 8
    embedding_dim: int = 512
    token_dim: int | None = None
    resampler_ff_mult: int = 4


DataFormat = Literal["auto", "files", "shards"]


@dataclass
class DataConfig:
    """``cache_dir``: what :func:`infusenet.trainer.data.prepare_cache` wrote (``index.json``, format
    "files") or :func:`infusenet.trainer.shards.prepare_shards` wrote (``shards.json``, format "shards");
    "auto" reads whichever the folder holds.

    Loader: ``num_workers`` DataLoader processes (0: read in the training process), each ``prefetch``
    batches ahead; ``shuffle_buffer`` samples in the shards' shuffle buffer; ``buckets`` the resolutions
    (width, height) to train on, None for every bucket the cache holds (each batch holds one bucket);
    ``caption_dropout`` the share of samples trained on the empty caption, drawn from (seed, position)."""

    cache_dir: str = "cache"
    batch_size: int = 1            # global batch (split evenly over ranks)
    shuffle: bool = True
    format: DataFormat = "auto"
    num_workers: int = 0
    prefetch: int = 2
    shuffle_buffer: int = 1000
    buckets: list[tuple[int, int]] | None = None
    caption_dropout: float = 0.0


@dataclass
class OptimConfig:
    """AdamW on the float32 branch. ``optimizer``: ``adamw`` (multi-tensor "foreach" kernels),
    ``adamw_fused`` (one fused kernel; where the device has none, the foreach one is used and a
    warning says so) or ``adamw_low_memory`` (one parameter at a time: no multi-tensor temporaries
    as large as all gradients, slower). All three compute the same update.

    Learning rate: linear warm-up over ``warmup_steps`` from ``lr / warmup_steps`` to ``lr``, then
    ``schedule`` ``constant`` or ``cosine`` (down to ``lr * min_lr_ratio`` at ``decay_steps``, default
    ``schedule.max_steps``). ``grad_accum_steps``: micro-steps per optimiser step; ``data.batch_size``
    stays the batch of one optimiser step, so the update does not depend on it (only memory does).

    ``resampler_lr_scale``: the identity projection (Resampler) learns at ``lr`` times this. Lower it (0.1)
    when validation shows the same face for every identity: while drawing the average face is most of the
    loss, the Resampler's attention can saturate onto its learned latents, after which no gradient reaches
    the face embedding again."""

    lr: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-2
    eps: float = 1e-8
    grad_clip: float | None = 1.0
    warmup_steps: int = 0
    schedule: LRSchedule = "constant"
    min_lr_ratio: float = 0.0
    decay_steps: int | None = None
    grad_accum_steps: int = 1
    optimizer: Optimizer = "adamw"
    resampler_lr_scale: float = 1.0
    ema_decay: float | None = None  # e.g. 0.9999; None: no EMA


ShiftSource = Literal["auto", "resolution", "base"]


@dataclass
class TimestepConfig:
    """FLUX timestep sampling (see :func:`infusenet.trainer.loop.sample_sigma`): u ~ N(mean, std),
    t = sigmoid(u), then the shift sigma = e^mu / (e^mu + 1/t - 1) (none when ``shift`` is off).

    ``shift_source`` says where mu comes from: ``resolution`` is FLUX.1's resolution shift mu = base_shift
    + (max_shift - base_shift) * (L - 256) / (4096 - 256) for L image tokens; ``base`` is the base model's
    own sampling shift (``model_sampling.shift``, what ComfyUI samples it with: 2.02 for FLUX.2, BFL's
    empirical mu of a 1024x1024 image at 50 steps); ``auto`` takes ``resolution`` on FLUX.1 and ``base``
    on FLUX.2."""

    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: bool = True
    base_shift: float = 0.5
    max_shift: float = 1.15
    shift_source: ShiftSource = "auto"
    guidance: float = 1.0          # the base model's guidance input (FLUX.1-dev embeds it; klein has none)
    branch_guidance: float = 1.0   # the InfuseNet's guidance input (the reference runs it at 1.0; used by a
                                   # branch with a guidance embedder)


@dataclass
class ScheduleConfig:
    """``memory_plan``: log the per-rank memory plan (:mod:`infusenet.trainer.memory`) before the branch is
    built, on rank 0: every strategy's GB and which fit this GPU."""

    max_steps: int = 1000
    log_every: int = 10
    progress: bool = True
    memory_plan: bool = True


@dataclass
class PrecisionConfig:
    """``bf16``: autocast where the device supports it (weights and optimiser stay float32).
    ``gradient_checkpointing``: each transformer block keeps only its inputs and is recomputed in the
    backward pass. ``saved_activation_copies``: ComfyUI's FLUX blocks add into their inputs in place,
    so activations saved from those inputs are copied when saved; ``aliased`` copies only those (and
    checks every other saved activation is unchanged when used), ``all`` copies every one."""

    mixed: Precision = "bf16"
    gradient_checkpointing: bool = True
    saved_activation_copies: ActivationCopies = "aliased"


@dataclass
class CheckpointConfig:
    """Checkpoints go to ``output_dir/step-XXXXXX/`` (``torch.distributed.checkpoint`` shards, one file
    per rank, plus ``state.pt``); ``output_dir`` must be one folder every node sees. ``resume``:
    "latest", a folder, or None. A checkpoint resumes on any number of processes."""

    output_dir: str = "runs/infusenet"
    every: int = 500
    keep_last: int | None = 3
    resume: str | None = "latest"


@dataclass
class DistributedConfig:
    """``auto``: FSDP2 when launched by torchrun with WORLD_SIZE > 1, one process otherwise. ``fsdp``
    (``torch.distributed.fsdp.fully_shard``) shards each transformer block of the branch and the
    projection, their gradients, optimiser state and EMA; ``shard_base`` shards the frozen base's
    blocks too (each rank then holds 1/N of the base, gathered block by block). ``ddp`` keeps the
    whole branch on every rank (gradients as views of the all-reduce buckets)."""

    strategy: Strategy = "auto"
    backend: str | None = None     # None: nccl on CUDA, gloo otherwise
    shard_base: bool = False


@dataclass
class ValidationIdentity:
    """A held-out person for validation: ``photo`` is the reference photo (its ArcFace identity conditions
    the generation and is what the images are scored against); ``pose``: an optional control image file
    (None: the black control that inference uses without a pose); ``name``: the label in logs and files."""

    name: str
    photo: str
    pose: str | None = None


@dataclass
class WatchConfig:
    """What a run shows while it trains (rank 0): TensorBoard scalars under ``log_dir`` (None:
    ``checkpoint.output_dir/logs``) and, every ``validate_every`` steps (0: never), validation images
    for held-out identities with their identity similarity to the reference photo.

    Validation generates, for each of ``identities`` and each of ``prompts``, one ``width`` x ``height``
    image with ``steps`` sampler steps (ComfyUI's ``sampler`` / ``scheduler``, CFG ``cfg``, FLUX
    ``guidance``) from the fixed ``seed``, through the patch inference uses; ``ema``: score the EMA weights
    (the run must keep one)."""

    tensorboard: bool = True
    log_dir: str | None = None
    validate_every: int = 0
    identities: list[ValidationIdentity] = field(default_factory=list)
    prompts: list[str] = field(default_factory=lambda: ["a portrait photo of a person"])
    width: int = 1024
    height: int = 1024
    steps: int = 28
    seed: int = 0
    cfg: float = 1.0
    guidance: float = 3.5
    sampler: str = "euler"
    scheduler: str = "simple"
    ema: bool = False


@dataclass
class TrainConfig:
    stage: Stage = "pretrain"
    seed: int = 0
    models: ModelPaths = field(default_factory=ModelPaths)
    shape: InfuseNetShape = field(default_factory=InfuseNetShape)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    timesteps: TimestepConfig = field(default_factory=TimestepConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)

    def as_dict(self) -> dict:
        return asdict(self)
