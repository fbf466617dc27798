"""How much memory a training run needs per rank, before it starts, and what a step really used.

:func:`plan_memory` gives, per rank and for each way of running (one process, DDP, FSDP2 with the
branch sharded, FSDP2 with the frozen base sharded too), the bytes of

* base weights: the frozen FLUX, in its weight dtype;
* trainable weights: InfuseNet + Resampler in float32 (under FSDP2 the rank's shard plus the
  parameters gathered while they run: the unsharded root group and two transformer blocks);
* gradients: float32 like the weights (DDP: views of its all-reduce buckets, no second copy);
* optimiser state: AdamW's two float32 moments, plus the step's temporary (``adamw``: one float32
  tensor as large as all trained parameters; ``adamw_low_memory``: the largest parameter; fused: none);
* EMA: a float32 copy of the trained parameters (sharded under FSDP2) when ``optim.ema_decay`` is set;
* activations: what autograd keeps through one forward and backward pass at the configured
  resolution and batch (see below), plus, with bf16 autocast, the bf16 copies autocast makes of the
  float32 branch weights.

Parameter counts are exact: the base (ComfyUI's ``Flux``), the InfuseNet and the Resampler are built
on the ``meta`` device from their shapes and counted.

Activations are modelled per transformer block. One block of each kind (branch double and single,
base double and single) is run, wrapped exactly as the trainer wraps it
(:func:`infusenet.trainer.blocks.train_blocks`: gradient checkpointing on or off, the saved-activation
copies policy), on ``meta`` tensors of the real sizes: image tokens ``(H/16)*(W/16)``, text tokens,
identity tokens, hidden width, batch and compute dtype. Counting the bytes of every storage alive
after chains of one and of two blocks gives what each block keeps (its difference), and the
backward pass gives the transient peak on top. The attention kernel is stated, not run: ``flash``
(CUDA: scaled-dot-product flash/memory-efficient kernels keep q, k, v, the output and the
log-sum-exp) or ``math`` (the CPU path: the softmax probabilities ``[B, H, L, L]`` are kept).
Per rank: sum over blocks of what each keeps + the largest transient + the branch residuals + the
batch, embedders and final layer. Under bf16 autocast the blocks are run in bf16; autocast computes
LayerNorm in float32, which this does not model (the CUDA figures are predictions; the CPU ones are
checked against measured steps by the tests).

:func:`measure_step` measures the same terms on a real :class:`~infusenet.trainer.loop.Trainer` step
(CUDA: the allocator's peak; elsewhere: a count of every tensor storage alive during the step).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import weakref
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .. import host
from .config import InfuseNetShape, TrainConfig

GIB = 2 ** 30
STRATEGIES = ("single", "ddp", "fsdp", "fsdp_base")
STRATEGY_LABELS = {"single": "one process", "ddp": "DDP", "fsdp": "FSDP2 (branch sharded)",
                   "fsdp_base": "FSDP2 (branch + base sharded)"}
ATTENTION_KINDS = ("flash", "math")


# ---------------------------------------------------------------- the base's shape
@dataclass(frozen=True)
class BaseDims:
    """A frozen FLUX base by its shape: ``params`` are the keyword arguments of ComfyUI's ``Flux``
    (its ``FluxParams`` fields), ``weight_dtype`` the dtype its weights are held in; ``licence`` the
    licence its weights are published under (what a trained InfuseNet's use inherits), empty if unknown."""

    name: str
    params: dict
    weight_dtype: torch.dtype = torch.bfloat16
    text_tokens: int = 512          # the text encoder's sequence length the trainer feeds
    licence: str = ""

    @property
    def hidden_size(self) -> int:
        return int(self.params["hidden_size"])


def flux1_dev(weight_dtype: torch.dtype = torch.bfloat16) -> BaseDims:
    """FLUX.1-dev: 19 double + 38 single blocks at 3072, 24 heads, T5-XXL text (4096 wide, 512 tokens)."""
    return BaseDims("FLUX.1-dev", host.flux_params(
        in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096, hidden_size=3072, mlp_ratio=4.0,
        num_heads=24, depth=19, depth_single_blocks=38, axes_dim=[16, 56, 56], theta=10_000, patch_size=2,
        qkv_bias=True, guidance_embed=True), weight_dtype, 512, "non-commercial licence")


def _flux2(name: str, hidden: int, depth: int, single: int, text_width: int, weight_dtype: torch.dtype,
           licence: str) -> BaseDims:
    # As ComfyUI detects FLUX.2 (comfy/model_detection.py): 128-channel latents, patch 1, rotary axes
    # 4 x 32, global modulation, SiLU-gated MLP of ratio 3, no biases; the text is three hidden layers
    # of a Qwen3 model concatenated (comfy/text_encoders/flux.py), 512 tokens.
    return BaseDims(name, host.flux_params(
        in_channels=128, out_channels=128, vec_in_dim=None, context_in_dim=3 * text_width, hidden_size=hidden,
        mlp_ratio=3.0, num_heads=hidden // 128, depth=depth, depth_single_blocks=single, axes_dim=[32, 32, 32, 32],
        theta=2000, patch_size=1, qkv_bias=False, guidance_embed=False, txt_ids_dims=[3], global_modulation=True,
        mlp_silu_act=True, ops_bias=False), weight_dtype, 512, licence)


def flux2_klein_4b(weight_dtype: torch.dtype = torch.bfloat16) -> BaseDims:
    """FLUX.2 [klein] 4B: 5 double + 20 single blocks at 3072, Qwen3-4B text (3 x 2560)."""
    return _flux2("FLUX.2 [klein] 4B", 3072, 5, 20, 2560, weight_dtype, "Apache-2.0")


def flux2_klein_9b(weight_dtype: torch.dtype = torch.bfloat16) -> BaseDims:
    """FLUX.2 [klein] 9B: 8 double + 24 single blocks at 4096, Qwen3-8B text (3 x 4096)."""
    return _flux2("FLUX.2 [klein] 9B", 4096, 8, 24, 4096, weight_dtype, "non-commercial licence")


def _params_dict(params) -> dict:
    return {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}


def dims_of(base, text_tokens: int = 512) -> BaseDims:
    """:class:`BaseDims` of a loaded base: a ComfyUI ``Flux``, a BaseModel or a ModelPatcher holding one."""
    dm = base if isinstance(base, host.Flux) else host.flux_diffusion_model(base)
    if dm is None:
        raise ValueError(f"expected a ComfyUI FLUX model (Flux, or a ModelPatcher holding one), got {type(base).__name__}")
    p = dm.params
    name = f"FLUX{'.2' if host.is_flux2(dm) else ''} {p.depth}+{p.depth_single_blocks} blocks at {p.hidden_size}"
    return BaseDims(name, _params_dict(p), next(dm.parameters()).dtype, text_tokens)


# ---------------------------------------------------------------- parameter counts (meta device)
@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts and the FSDP2 groups they fall in (elements, not bytes)."""

    base: int
    base_block_max: int          # largest base transformer block
    base_root: int               # base parameters outside its transformer blocks
    branch: int                  # InfuseNet
    resampler: int
    branch_block_max: int        # largest InfuseNet transformer block
    branch_root: int             # trained parameters outside the branch's blocks (incl. the Resampler)
    largest_trained: int         # largest single trained tensor

    @property
    def trained(self) -> int:
        return self.branch + self.resampler


def _blocks(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, (host.DoubleStreamBlock, host.SingleStreamBlock))]


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def meta_base(dims: BaseDims) -> host.Flux:
    """The base's ComfyUI ``Flux`` on the ``meta`` device (no memory), in its weight dtype."""
    return host.Flux(final_layer=True, dtype=dims.weight_dtype, device="meta", operations=host.plain_operations,
                     **dims.params)


def meta_branch(base: host.Flux, shape: InfuseNetShape, dtype: torch.dtype = torch.float32) -> tuple[nn.Module, nn.Module]:
    """(InfuseNet, Resampler) for ``base`` on the ``meta`` device.

    FLUX.1 bases: the pack's :class:`~infusenet.model.InfuseNet` as the trainer builds it. FLUX.2 bases:
    :class:`~infusenet.model_flux2.InfuseNet2` of ``shape``'s depths, its identity tokens (the Resampler's
    output) as wide as the base's text features. ``shape``'s unset fields take the base's defaults."""
    from ..model import InfuseNet
    from ..resampler import Resampler
    from .init import branch_config, resampler_config, shape_for_base

    shape = shape_for_base(base, shape)
    with torch.device("meta"):
        resampler = Resampler(resampler_config(shape)).to(dtype)
    if not host.is_flux2(base):
        net = InfuseNet(branch_config(base, shape), dtype=dtype, device="meta", operations=host.plain_operations)
        return net, resampler
    from ..model_flux2 import InfuseNet2, InfuseNet2Config

    config = InfuseNet2Config.from_base(base, shape.depth, shape.depth_single_blocks)
    return InfuseNet2(config, dtype=dtype, device="meta", operations=host.plain_operations), resampler


def count_params(dims: BaseDims, shape: InfuseNetShape) -> ParamCounts:
    base = meta_base(dims)
    net, resampler = meta_branch(base, shape)
    base_blocks, net_blocks = _blocks(base), _blocks(net)
    n_base, n_net, n_res = _numel(base), _numel(net), _numel(resampler)
    return ParamCounts(
        base=n_base, base_block_max=max(_numel(b) for b in base_blocks),
        base_root=n_base - sum(_numel(b) for b in base_blocks),
        branch=n_net, resampler=n_res, branch_block_max=max((_numel(b) for b in net_blocks), default=0),
        branch_root=n_net + n_res - sum(_numel(b) for b in net_blocks),
        largest_trained=max(p.numel() for m in (net, resampler) for p in m.parameters()),
    )


# ---------------------------------------------------------------- counting live storages
class LiveBytes(TorchDispatchMode):
    """Counts the bytes of every tensor storage created inside the mode while it is alive: ``current``
    and ``peak`` (reset with :meth:`reset_peak`). Storages created before entering, and views of them,
    are not counted.
    Works on the ``meta`` device (nothing is allocated) and on real devices."""

    def __init__(self):
        super().__init__()
        self.current = 0
        self.peak = 0
        self._seen: dict[int, int] = {}

    def reset_peak(self) -> None:
        self.peak = self.current

    def exclude(self, t: Tensor) -> None:
        """Stop counting ``t``'s storage (if it was made inside the mode), from now until it is freed."""
        key = t.untyped_storage()._cdata
        if self._seen.get(key):
            self.current -= self._seen[key]
            self._seen[key] = 0

    def _free(self, key: int) -> None:
        self.current -= self._seen.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # outputs that are views of (or in-place results in) an input allocate nothing
        inputs = {t.untyped_storage()._cdata for t in tree_flatten((args, kwargs))[0] if isinstance(t, Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, Tensor):
                continue
            storage = t.untyped_storage()
            key = storage._cdata
            if key in self._seen or key in inputs:
                continue
            nbytes = storage.nbytes()
            self._seen[key] = nbytes
            self.current += nbytes
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._free, key)
        return out


@contextlib.contextmanager
def _meta_storage_addresses() -> Iterator[None]:
    # Meta storages have no address (data_ptr() is 0 for all), so storage identity checks (the
    # trainer's saved-activation policy) would see every tensor as one. Inside, each meta storage
    # reports the address of its StorageImpl instead, which is unique while it lives.
    original = torch.UntypedStorage.data_ptr

    def data_ptr(self):
        return self._cdata if self.device.type == "meta" else original(self)

    torch.UntypedStorage.data_ptr = data_ptr
    try:
        yield
    finally:
        torch.UntypedStorage.data_ptr = original


# ---------------------------------------------------------------- attention kernels, stated
class _FlashAttention(torch.autograd.Function):
    """Memory behaviour of a flash / memory-efficient attention kernel: keeps q, k, v, the output
    [B, H, L, D] and the log-sum-exp [B, H, L] (float32); the backward makes dq, dk, dv."""

    @staticmethod
    def forward(ctx, q, k, v):
        out = torch.empty_like(q)
        lse = torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, _, _ = ctx.saved_tensors
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _flash_attention(q, k, v, heads, mask=None, skip_reshape=False, **kwargs):
    b, h, n, d = q.shape
    return _FlashAttention.apply(q, k, v).transpose(1, 2).reshape(b, n, h * d)


def _math_attention(q, k, v, heads, mask=None, skip_reshape=False, **kwargs):
    b, h, n, d = q.shape
    probs = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * d ** -0.5, dim=-1)
    return torch.matmul(probs, v).transpose(1, 2).reshape(b, n, h * d)


ATTENTION = {"flash": _flash_attention, "math": _math_attention}


# ---------------------------------------------------------------- activation model
@dataclass(frozen=True)
class Workload:
    """What one rank computes per micro-step: the image size (height, width), text length and batch."""

    resolution: tuple[int, int] = (1024, 1024)
    text_tokens: int = 512
    batch: int = 1

    def image_tokens(self, dims: BaseDims) -> int:
        """``(H/16)*(W/16)`` for FLUX.1 (VAE /8, patch 2) and FLUX.2 (VAE /16, patch 1)."""
        h, w = self.resolution
        return math.ceil(h / 16) * math.ceil(w / 16)


@dataclass(frozen=True)
class BlockCost:
    """Bytes one transformer block keeps until its backward pass (``kept``) and the most it adds
    on top while it runs forward or backward (``transient``)."""

    kept: int
    transient: int


@dataclass(frozen=True)
class ActivationModel:
    blocks: dict[str, BlockCost]          # branch_double, branch_single, base_double, base_single
    counts: dict[str, int]                # how many blocks of each kind
    residuals: int                        # bytes of the branch residuals held through the forward pass
    stem: int                             # batch, latents, embedder inputs, final layer (see _stem_bytes)
    autocast_copies: int                  # bf16 copies of the float32 branch weights under autocast
    image_tokens: int
    attention: str
    gradient_checkpointing: bool

    @property
    def kept(self) -> int:
        return sum(self.counts[k] * c.kept for k, c in self.blocks.items())

    @property
    def transient(self) -> int:
        return max((c.transient for k, c in self.blocks.items() if self.counts[k]), default=0)

    @property
    def total(self) -> int:
        if self.gradient_checkpointing:
            # autocast's weight copies are dropped when the forward pass ends (nothing saved them); the
            # backward pass recomputes one block at a time
            return self.kept + self.residuals + self.stem + max(self.autocast_copies, self.transient)
        return self.kept + self.residuals + self.stem + self.autocast_copies + self.transient


def _leaf(shape, dtype) -> Tensor:
    return torch.empty(shape, dtype=dtype, device="meta", requires_grad=True)


def _drop_grads(module: nn.Module) -> list:
    # Weight gradients are counted in the gradient term; here they live only as long as they are made.
    return [p.register_post_accumulate_grad_hook(lambda p: setattr(p, "grad", None))
            for p in module.parameters() if p.requires_grad]


def _block_cost(run_chain, n_chain: int = 2) -> BlockCost:
    """``run_chain(n)`` runs n chained blocks forward inside a fresh LiveBytes and returns (mode, loss)."""
    kept_after = []
    transient = 0
    for n in (1, n_chain):
        mode, loss = run_chain(n)
        after_forward = mode.current
        kept_after.append(after_forward)
        transient = max(transient, mode.peak - after_forward)
        mode.reset_peak()
        with mode:
            loss.backward()
        transient = max(transient, mode.peak - after_forward)
        del loss
    return BlockCost(kept=(kept_after[1] - kept_after[0]) // (n_chain - 1), transient=transient)


def _modulation(model: host.Flux, vec: Tensor, double: bool):
    """What a block of ``model`` takes as ``vec``: [B, hidden], or the global modulation outputs (FLUX.2)."""
    if not model.params.global_modulation:
        return vec
    with torch.no_grad():
        if double:
            return (model.double_stream_modulation_img(vec), model.double_stream_modulation_txt(vec))
        return model.single_stream_modulation(vec)[0]


def _simulate_blocks(model: host.Flux, projections: dict[str, nn.Module | None], txt_tokens: int, img_tokens: int,
                     batch: int, dtype: torch.dtype, gradient_checkpointing: bool, copies: str) -> dict[str, BlockCost]:
    """Costs of ``model``'s first double and single block as the trainer runs them (meta device).
    ``projections``: per kind (``double``, ``single``) the branch's residual projection after each block,
    or None for the base (which adds a residual into the block output instead)."""
    from .blocks import release_blocks, train_blocks

    h = model.hidden_size
    head_dim = h // model.num_heads
    out: dict[str, BlockCost] = {}
    vec = torch.empty(batch, h, dtype=dtype, device="meta")
    pe = torch.empty(batch, 1, txt_tokens + img_tokens, head_dim // 2, 2, 2, dtype=torch.float32, device="meta")
    for kind, blocks in (("double", model.double_blocks), ("single", model.single_blocks)):
        if len(blocks) == 0 or kind not in projections:
            continue
        block, proj = blocks[0], projections[kind]
        block_vec = _modulation(model, vec, kind == "double")
        train_blocks([block], gradient_checkpointing, copies)
        hooks = _drop_grads(block) + (_drop_grads(proj) if proj is not None else [])
        try:
            def run_chain(n, block=block, kind=kind, block_vec=block_vec, proj=proj):
                mode = LiveBytes()
                img0 = _leaf((batch, img_tokens, h), dtype)
                txt0 = _leaf((batch, txt_tokens, h), dtype)
                add = _leaf((batch, img_tokens, h), dtype)
                x0 = _leaf((batch, txt_tokens + img_tokens, h), dtype)
                residuals = []
                with mode:
                    if kind == "double":
                        img, txt = img0, txt0
                        for _ in range(n):
                            img, txt = block(img=img, txt=txt, vec=block_vec, pe=pe)
                            if proj is None:
                                img[:, :img_tokens] += add          # the base adds the branch residual
                            else:
                                residuals.append(proj(img))         # the branch makes one
                        loss = img.float().sum() + txt.float().sum()
                        del img, txt
                    else:
                        x = x0
                        for _ in range(n):
                            x = block(x, vec=block_vec, pe=pe)
                            if proj is None:
                                x[:, txt_tokens:txt_tokens + img_tokens] += add
                            else:
                                residuals.append(proj(x[:, txt_tokens:]))
                        loss = x.float().sum()
                        del x
                    for r in residuals:
                        loss = loss + r.float().sum()
                residuals.clear()   # counted separately (ActivationModel.residuals); the proj inputs stay
                return mode, loss

            out[kind] = _block_cost(run_chain)
        finally:
            release_blocks([block])
            for hk in hooks:
                hk.remove()
    return out


def _stem_bytes(base: host.Flux, shape: InfuseNetShape, workload: Workload, img_tokens: int, compute: torch.dtype,
                base_dtype: torch.dtype) -> int:
    """What the step keeps outside the transformer blocks: the batch and the latents made from it (float32:
    latent, control, their processed forms, noise, x_t, model input, velocity, target), the text context
    (float32 in the batch, and in the base's dtype), the inputs of the branch's trained embedders (packed
    latent, control and identity tokens) and the base's final layer (normed and modulated image tokens)."""
    b, h, p = workload.batch, base.hidden_size, base.params
    cb, bb = _itemsize(compute), _itemsize(base_dtype)
    packed = p.in_channels * p.patch_size ** 2
    latents = 10 * b * img_tokens * packed * 4
    context = b * workload.text_tokens * p.context_in_dim * (4 + (bb if base_dtype != torch.float32 else 0))
    branch_stem = b * img_tokens * 2 * packed * cb + b * shape.num_tokens * shape.token_dim * cb
    final_layer = b * (workload.text_tokens + 2 * img_tokens) * h * bb
    return latents + context + branch_stem + final_layer


def _residual_bytes(model: nn.Module, shape: InfuseNetShape, img_tokens: int, batch: int, dtype: torch.dtype) -> int:
    h = model.hidden_size
    return (shape.depth + shape.depth_single_blocks) * batch * img_tokens * h * _itemsize(dtype)


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


@functools.lru_cache(maxsize=32)
def _activation_model(dims_key, shape_key, workload: Workload, compute_dtype: torch.dtype, gradient_checkpointing: bool,
                      copies: str, attention: str, autocast: bool) -> ActivationModel:
    dims = BaseDims(dims_key[0], dict(dims_key[1]), dims_key[2], dims_key[3])
    shape = InfuseNetShape(**dict(shape_key))
    img_tokens = workload.image_tokens(dims)
    base = meta_base(dims).requires_grad_(False)     # frozen, as the trainer holds it
    net, _ = meta_branch(base, shape, dtype=compute_dtype)
    base_dtype = compute_dtype if autocast else dims.weight_dtype
    with host.training_mode(), host.flux_attention(ATTENTION[attention]), _meta_storage_addresses():
        base_costs = _simulate_blocks(base, {"double": None, "single": None}, workload.text_tokens, img_tokens,
                                      workload.batch, base_dtype, gradient_checkpointing, copies)
        projections = {}
        if shape.depth:
            projections["double"] = net.controlnet_blocks[0]
        if shape.depth_single_blocks:
            projections["single"] = net.controlnet_single_blocks[0]
        branch_costs = _simulate_blocks(net, projections, shape.num_tokens, img_tokens, workload.batch, compute_dtype,
                                        gradient_checkpointing, copies)
    blocks = {"base_double": base_costs.get("double", BlockCost(0, 0)),
              "base_single": base_costs.get("single", BlockCost(0, 0)),
              "branch_double": branch_costs.get("double", BlockCost(0, 0)),
              "branch_single": branch_costs.get("single", BlockCost(0, 0))}
    counts = {"base_double": len(base.double_blocks), "base_single": len(base.single_blocks),
              "branch_double": shape.depth, "branch_single": shape.depth_single_blocks}
    trained = _numel(net) + sum(p.numel() for p in _resampler_params(shape))
    copies_bytes = trained * 2 if autocast else 0
    return ActivationModel(blocks, counts, _residual_bytes(base, shape, img_tokens, workload.batch, compute_dtype),
                           _stem_bytes(base, shape, workload, img_tokens, compute_dtype, base_dtype),
                           copies_bytes, img_tokens, attention, gradient_checkpointing)


def _resampler_params(shape: InfuseNetShape):
    from ..resampler import Resampler
    from .init import resampler_config

    with torch.device("meta"):
        return list(Resampler(resampler_config(shape)).parameters())


def activation_model(dims: BaseDims, shape: InfuseNetShape, workload: Workload, *, mixed_bf16: bool,
                     gradient_checkpointing: bool, copies: str = "aliased", attention: str = "flash") -> ActivationModel:
    """Activation bytes per rank of one micro-step (see the module docstring). ``mixed_bf16``: bf16
    autocast (the branch computes in bf16, its float32 weights get bf16 copies); otherwise the branch
    computes in float32 and the base in its weight dtype."""
    if attention not in ATTENTION_KINDS:
        raise ValueError(f"attention must be one of {ATTENTION_KINDS}, not {attention!r}")
    from .init import shape_for_base

    shape = shape_for_base(meta_base(dims), shape)
    dims_key = (dims.name, tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in dims.params.items())),
                dims.weight_dtype, dims.text_tokens)
    shape_key = tuple(sorted(vars(shape).items()))
    compute = torch.bfloat16 if mixed_bf16 else torch.float32
    model = _activation_model(dims_key, shape_key, workload, compute, gradient_checkpointing, copies, attention, mixed_bf16)
    return model


# ---------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Terms:
    """Bytes per rank."""

    base_weights: int
    trainable_weights: int
    gradients: int
    optimizer: int               # AdamW moments
    ema: int
    activations: int
    step_temporary: int = 0      # the optimiser step's temporary (activations are gone by then)

    @property
    def total(self) -> int:
        return (self.base_weights + self.trainable_weights + self.gradients + self.optimizer + self.ema
                + max(self.activations, self.step_temporary))


@dataclass(frozen=True)
class Headroom:
    """Room kept free on a GPU: the CUDA context and kernels, and the caching allocator's fragmentation."""

    context_gib: float = 1.0
    fragmentation: float = 0.07

    def usable_gib(self, gpu_gib: float) -> float:
        return gpu_gib * (1.0 - self.fragmentation) - self.context_gib


@dataclass(frozen=True)
class StrategyPlan:
    strategy: str
    terms: Terms
    fits: bool | None            # None when no GPU size was given

    @property
    def label(self) -> str:
        return STRATEGY_LABELS[self.strategy]


@dataclass(frozen=True)
class MemoryPlan:
    base: str
    world_size: int
    workload: Workload
    params: ParamCounts
    activations: ActivationModel
    rows: list[StrategyPlan]
    gpu_gib: float | None = None
    headroom: Headroom = field(default_factory=Headroom)
    optimizer: str = "adamw"
    licence: str = ""               # the base's (BaseDims.licence)

    def row(self, strategy: str) -> StrategyPlan:
        for r in self.rows:
            if r.strategy == strategy:
                return r
        raise KeyError(f"no {strategy!r} row in this plan (it has {[r.strategy for r in self.rows]})")

    @property
    def fitting(self) -> list[str]:
        return [r.strategy for r in self.rows if r.fits]


def _step_temporary(trained_local: int, largest: int, optimizer: str) -> int:
    if optimizer == "adamw":
        return 4 * trained_local
    if optimizer == "adamw_low_memory":
        return 4 * largest
    return 0


def strategy_terms(strategy: str, counts: ParamCounts, acts: ActivationModel, world_size: int, base_dtype_bytes: int,
                   optimizer: str, ema: bool) -> Terms:
    """Per-rank bytes of one strategy (see the module docstring)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, not {strategy!r}")
    n = world_size if strategy in ("fsdp", "fsdp_base") else 1
    trained = counts.trained
    local = math.ceil(trained / n)
    gathered = 0
    unsharded_grads = 0
    if n > 1:
        # FSDP2 keeps the root group (parameters outside the blocks) gathered through the step and gathers
        # the next block while one runs; a block's gradients are whole until reduce-scattered.
        gathered = counts.branch_root + 2 * counts.branch_block_max
        unsharded_grads = counts.branch_block_max
    base = counts.base * base_dtype_bytes
    if strategy == "fsdp_base":
        base = (math.ceil(counts.base / n) + counts.base_root + 2 * counts.base_block_max) * base_dtype_bytes
    return Terms(
        base_weights=base,
        trainable_weights=4 * (local + gathered),
        gradients=4 * (local + unsharded_grads),
        optimizer=8 * local,
        ema=4 * local if ema else 0,
        activations=acts.total,
        step_temporary=_step_temporary(local, counts.largest_trained, optimizer),
    )


def plan_memory(config: TrainConfig, world_size: int, base=None, gpu_gb: float | None = None, *,
                device_type: str = "cuda", resolution: tuple[int, int] | None = None, text_tokens: int | None = None,
                batch_per_rank: int | None = None, attention: str | None = None,
                headroom: Headroom = Headroom()) -> MemoryPlan:
    """Memory per rank of training ``config`` on ``world_size`` processes.

    ``base``: a :class:`BaseDims` (e.g. :func:`flux1_dev`), or a loaded ComfyUI FLUX (``Flux``,
    BaseModel or ModelPatcher); default FLUX.1-dev in bf16. ``gpu_gb``: the card's memory (GiB, as
    cards are sold) to say what fits, after ``headroom``. ``device_type``: ``cuda`` (bf16 autocast when
    ``precision.mixed`` is bf16, flash attention) or ``cpu`` (float32, math attention).
    ``resolution`` (H, W) default the largest of ``data.buckets``, else 1024x1024; ``batch_per_rank``
    default the global batch over ranks and accumulation steps."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    dims = base if isinstance(base, BaseDims) else flux1_dev() if base is None else dims_of(base)
    data = config.data
    if resolution is None:
        buckets = getattr(data, "buckets", None)      # (width, height) pairs: the largest sets the peak
        w, h = max(buckets, key=lambda b: b[0] * b[1]) if buckets else (1024, 1024)
        resolution = (h, w)
    accum = max(1, getattr(config.optim, "grad_accum_steps", 1))
    batch = batch_per_rank if batch_per_rank is not None else max(1, data.batch_size // (world_size * accum))
    workload = Workload(tuple(resolution), text_tokens or dims.text_tokens, batch)
    mixed = config.precision.mixed == "bf16" and device_type == "cuda"
    attention = attention or ("flash" if device_type == "cuda" else "math")
    acts = activation_model(dims, config.shape, workload, mixed_bf16=mixed,
                            gradient_checkpointing=config.precision.gradient_checkpointing,
                            copies=getattr(config.precision, "saved_activation_copies", "aliased"), attention=attention)
    counts = count_params(dims, config.shape)
    optimizer = getattr(config.optim, "optimizer", "adamw")
    if optimizer == "adamw_fused" and device_type not in ("cuda", "cpu"):
        optimizer = "adamw"
    strategies = ["single"] if world_size == 1 else ["ddp", "fsdp", "fsdp_base"]
    base_bytes = _itemsize(dims.weight_dtype)
    rows = []
    for s in strategies:
        terms = strategy_terms(s, counts, acts, world_size, base_bytes, optimizer, config.optim.ema_decay is not None)
        fits = None if gpu_gb is None else terms.total / GIB <= headroom.usable_gib(gpu_gb)
        rows.append(StrategyPlan(s, terms, fits))
    return MemoryPlan(dims.name, world_size, workload, counts, acts, rows, gpu_gb, headroom, optimizer, dims.licence)


def plan_for_run(config: TrainConfig, world_size: int, base, device: torch.device | str,
                 gpu_gb: float | None = None, resolution: tuple[int, int] | None = None,
                 text_tokens: int | None = None) -> MemoryPlan:
    """The plan of a run about to start: ``base`` the loaded FLUX (ModelPatcher), ``device`` this rank's
    device (on CUDA its total memory is the GPU size unless ``gpu_gb`` is given); ``resolution`` and
    ``text_tokens`` as the data has them (default 1024x1024 and 512)."""
    device = torch.device(device)
    if gpu_gb is None and device.type == "cuda":
        gpu_gb = torch.cuda.get_device_properties(device).total_memory / GIB
    dims = dims_of(base, text_tokens or 512)
    return plan_memory(config, world_size, dims, gpu_gb, device_type="cuda" if device.type == "cuda" else "cpu",
                       resolution=resolution)


def format_plan(plan: MemoryPlan) -> str:
    """A text table of ``plan``: one row per strategy, GiB per rank."""
    w = plan.workload
    p = plan.params
    a = plan.activations
    licence = f" ({plan.licence})" if plan.licence else ""
    head = (f"Memory per rank (GiB): {plan.base}{licence} + InfuseNet {p.branch / 1e9:.2f} B + Resampler "
            f"{p.resampler / 1e6:.1f} M params; {plan.world_size} process{'es' if plan.world_size > 1 else ''}, "
            f"{w.resolution[1]}x{w.resolution[0]} ({a.image_tokens} image + {w.text_tokens} text tokens), "
            f"batch {w.batch} per rank, gradient checkpointing {'on' if a.gradient_checkpointing else 'off'}, "
            f"{a.attention} attention, {plan.optimizer}")
    cols = ("strategy", "base", "trainable", "grads", "optimiser", "EMA", "activations", "step temp", "total")
    if plan.gpu_gib is not None:
        cols = cols + (f"fits {plan.gpu_gib:g} GB",)
    rows = []
    for r in plan.rows:
        t = r.terms
        cells = [r.label] + [f"{v / GIB:.1f}" for v in (t.base_weights, t.trainable_weights, t.gradients, t.optimizer,
                                                         t.ema, t.activations, t.step_temporary, t.total)]
        if r.fits is not None:
            cells.append("yes" if r.fits else "no")
        rows.append(cells)
    widths = [max(len(c[i]) for c in [list(cols), *rows]) for i in range(len(cols))]
    line = lambda cells: "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells))
    out = [head, line(cols), *(line(r) for r in rows),
           "(total: weights + grads + optimiser + EMA + the larger of activations and the optimiser step's temporary)"]
    if plan.gpu_gib is not None:
        out.append(f"(fits: total <= {plan.headroom.usable_gib(plan.gpu_gib):.1f} GiB usable of {plan.gpu_gib:g}: "
                   f"{plan.headroom.context_gib:g} GiB CUDA context, {plan.headroom.fragmentation:.0%} allocator headroom)")
    return "\n".join(out)


# ---------------------------------------------------------------- measuring a real step
@dataclass(frozen=True)
class MeasuredStep:
    """Bytes one rank used in a real training step, by the planner's terms. ``activations``: the peak
    of memory made during the forward and backward passes, weight gradients left out (they are the
    ``gradients`` term: those the backward pass makes anew stop being counted once accumulated; on CUDA
    they are subtracted); ``step_peak``: the same through the
    optimiser step too. ``how``: ``cuda allocator`` or ``live tensor storages``."""

    base_weights: int
    trainable_weights: int
    gradients: int
    optimizer: int
    ema: int
    activations: int
    step_peak: int
    how: str


def _local(t: Tensor) -> Tensor:
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def _local_bytes(t: Tensor) -> int:
    t = _local(t)
    return t.numel() * t.element_size()


def measure_step(trainer) -> MeasuredStep:
    """Run one :meth:`Trainer.train_step` on ``trainer`` and measure it. ``activations`` is read when the
    optimiser step begins, so a first step (which creates the optimiser state) measures it too; its
    ``step_peak`` then includes the new state."""
    device = trainer.base.device
    params = trainer.params
    opt = trainer.optimizer
    zero_grad = opt.zero_grad
    opt.zero_grad = functools.partial(type(opt).zero_grad, opt, set_to_none=False)
    seen: dict[str, int] = {"new_grads": 0}
    mode = LiveBytes() if device.type != "cuda" else None
    old_grads = {id(p): _local(p.grad).data_ptr() if p.grad is not None else None for p in params}

    def on_grad(p):
        grad = _local(p.grad) if p.grad is not None else None
        if grad is not None and grad.data_ptr() != old_grads[id(p)]:
            seen["new_grads"] += _local_bytes(grad)
            old_grads[id(p)] = grad.data_ptr()
            if mode is not None:
                mode.exclude(grad)

    handles = [p.register_post_accumulate_grad_hook(on_grad) for p in params]
    try:
        if mode is None:
            torch.cuda.synchronize(device)
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)

            def at_optimizer_step(*_):
                seen["activations"] = torch.cuda.max_memory_allocated(device) - before - seen["new_grads"]

            handles.append(opt.register_step_pre_hook(at_optimizer_step))
            trainer.train_step()
            torch.cuda.synchronize(device)
            step_peak, how = torch.cuda.max_memory_allocated(device) - before, "cuda allocator"
        else:
            def at_optimizer_step(*_):
                seen["activations"] = mode.peak

            handles.append(opt.register_step_pre_hook(at_optimizer_step))
            with mode:
                trainer.train_step()
            step_peak, how = mode.peak, "live tensor storages"
    finally:
        opt.zero_grad = zero_grad
        for h in handles:
            h.remove()
    optimizer = sum(_local_bytes(v) for state in opt.state.values() for v in state.values()
                    if isinstance(v, Tensor) and v.dim() > 0)
    ema = sum(_local_bytes(t) for t in trainer.ema.shadow.values()) if trainer.ema is not None else 0
    return MeasuredStep(
        base_weights=sum(_local_bytes(p) for p in trainer.base.dm.parameters()),
        trainable_weights=sum(_local_bytes(p) for p in params),
        gradients=sum(_local_bytes(p.grad) for p in params if p.grad is not None),
        optimizer=optimizer, ema=ema, activations=seen.get("activations", step_peak), step_peak=step_peak, how=how)
