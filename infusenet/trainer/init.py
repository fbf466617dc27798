"""ControlNet-style initialisation of a trainable InfuseNet from the frozen FLUX base.

FLUX.1 bases (:class:`infusenet.model.InfuseNet`):

* double block i <- base double block i (i < N), single block j <- base single block j (j < M);
* ``img_in``, ``time_in``, ``vector_in``, ``guidance_in`` <- the base's embedders;
* ``txt_in`` takes identity tokens (width ``token_dim``, 4096): copied from the base when the base
  text width is the same (FLUX.1 with T5-XXL: 4096), otherwise freshly initialised (PyTorch's
  default Linear initialisation);
* ``controlnet_blocks``, ``controlnet_single_blocks`` and ``controlnet_x_embedder`` are zero, as in
  diffusers' ``FluxControlNetModel``: every residual is exactly zero at step 0, so the base's
  prediction is unchanged bit for bit.

FLUX.2 [klein] bases (:class:`infusenet.model_flux2.InfuseNet2`, :func:`infusenet.model_flux2.init_from_base`):
the same, with the global modulation copied too and ``txt_in`` always copied (identity tokens are as wide
as the base's text features, so the Resampler's output width is the base's ``context_in_dim``).
"""
from __future__ import annotations

import torch
from torch import nn

import dataclasses

from .. import host

from ..model import InfuseNet, InfuseNetConfig, start_from_base
from ..resampler import Resampler, ResamplerConfig
from .config import InfuseNetShape

COPIED_EMBEDDERS = ("img_in", "time_in", "vector_in", "guidance_in")
FLUX1_DEPTHS = (4, 10)
"""Double and single blocks of the released InfuseNet v1.0: the default on FLUX.1."""
FLUX1_TOKEN_DIM = 4096
"""Identity token width of InfuseNet v1.0 (T5-XXL's width): the default on FLUX.1."""
FLUX2_MARKER = "double_stream_modulation_img.lin.weight"
"""The tensor that tells FLUX.2 InfuseNet weights (and FLUX.2 bases) from FLUX.1 ones."""


def is_flux2_base(base: "host.Flux") -> bool:
    return host.is_flux2(base)


def base_kind(base: "host.Flux") -> str:
    """``"FLUX.2"`` or ``"FLUX.1"``: which InfuseNet a base takes."""
    return "FLUX.2" if is_flux2_base(base) else "FLUX.1"


def branch_kind(net) -> str:
    """``"FLUX.2"`` or ``"FLUX.1"``: which base an InfuseNet (or its config) was made for."""
    from ..model_flux2 import InfuseNet2, InfuseNet2Config

    return "FLUX.2" if isinstance(net, (InfuseNet2, InfuseNet2Config)) else "FLUX.1"


def check_host_trains_flux2() -> None:
    """HostMismatch naming the ComfyUI version when it cannot build FLUX.2 [klein] (what training on FLUX.2 needs)."""
    lacks = host.flux2_klein_lacks()
    if lacks:
        raise host.HostMismatch(
            f"{host.host_label()} cannot train an InfuseNet for FLUX.2 [klein]: it lacks {lacks}. Train on a ComfyUI "
            f"that loads FLUX.2 [klein] (of the tested releases: {host.TESTED_VERSIONS[-1]}), or on a FLUX.1 base.")


def shape_for_base(base: "host.Flux", shape: InfuseNetShape) -> InfuseNetShape:
    """``shape`` with its ``None`` fields set to the base's defaults (see :class:`InfuseNetShape`). On FLUX.2 the
    identity token width must be the base's text width; ValueError names both otherwise."""
    p = base.params
    if is_flux2_base(base):
        from ..model_flux2 import DEFAULT_DEPTH, DEFAULT_DEPTH_SINGLE_BLOCKS

        depths = (DEFAULT_DEPTH, DEFAULT_DEPTH_SINGLE_BLOCKS)
        token_dim = int(p.context_in_dim)
        if shape.token_dim is not None and shape.token_dim != token_dim:
            raise ValueError(
                f"shape.token_dim is {shape.token_dim}, but a FLUX.2 InfuseNet's identity tokens are as wide as the "
                f"base's text features ({token_dim}): leave shape.token_dim None or set it to {token_dim}")
    else:
        depths, token_dim = FLUX1_DEPTHS, shape.token_dim if shape.token_dim is not None else FLUX1_TOKEN_DIM
    return dataclasses.replace(
        shape, depth=depths[0] if shape.depth is None else shape.depth,
        depth_single_blocks=depths[1] if shape.depth_single_blocks is None else shape.depth_single_blocks,
        token_dim=token_dim)


def branch_config(base: "host.Flux", shape: InfuseNetShape) -> InfuseNetConfig:
    """The FLUX.1 InfuseNet shape that fits ``base`` (hidden, heads, channels from the base; depths from ``shape``)."""
    p = base.params
    shape = shape_for_base(base, shape)
    if shape.depth > len(base.double_blocks) or shape.depth_single_blocks > len(base.single_blocks):
        raise ValueError(
            f"InfuseNet depth {shape.depth}/{shape.depth_single_blocks} exceeds the base's "
            f"{len(base.double_blocks)} double / {len(base.single_blocks)} single blocks it is copied from."
        )
    return InfuseNetConfig(
        hidden_size=base.hidden_size, head_dim=sum(p.axes_dim), depth=shape.depth,
        depth_single_blocks=shape.depth_single_blocks, in_channels=p.in_channels,
        control_in_channels=p.in_channels * 4, vec_in_dim=p.vec_in_dim, context_in_dim=shape.token_dim,
        mlp_ratio=p.mlp_ratio, qkv_bias=p.qkv_bias, guidance_embed=p.guidance_embed,
    )


def resampler_config(shape: InfuseNetShape) -> ResamplerConfig:
    """The Resampler of ``shape`` (its ``token_dim`` set: see :func:`shape_for_base`)."""
    if shape.token_dim is None:
        raise ValueError("shape.token_dim is None: resolve the shape against its base first (shape_for_base)")
    return ResamplerConfig(
        dim=shape.resampler_dim, depth=shape.resampler_depth, heads=shape.resampler_heads,
        dim_head=shape.resampler_dim_head, num_queries=shape.num_tokens, embedding_dim=shape.embedding_dim,
        output_dim=shape.token_dim, ff_mult=shape.resampler_ff_mult,
    )


def new_infusenet(config: InfuseNetConfig, device: torch.device | str = "cpu") -> InfuseNet:
    """An InfuseNet in float32 with trainable ComfyUI operations (no weight casting)."""
    net = InfuseNet(config, dtype=torch.float32, device=device, operations=host.plain_operations)
    net.compute_dtype = torch.float32
    # disable_weight_init skips initialisation: give every Linear PyTorch's default first.
    for module in net.modules():
        if isinstance(module, nn.Linear):
            nn.Linear.reset_parameters(module)
        elif isinstance(module, (nn.LayerNorm, host.plain_operations.LayerNorm)) and module.weight is not None:
            nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    for name, p in net.named_parameters():
        if name.endswith(("_norm.scale", "_norm.weight")):  # q/k RMSNorm scales (either ComfyUI's name)
            nn.init.ones_(p)
    return net


def new_branch(config):
    """A float32 InfuseNet of ``config``: :class:`InfuseNetConfig` (FLUX.1) or
    :class:`~infusenet.model_flux2.InfuseNet2Config` (FLUX.2)."""
    from ..model_flux2 import InfuseNet2Config, new_infusenet2

    if isinstance(config, InfuseNet2Config):
        check_host_trains_flux2()
        return new_infusenet2(config)
    return new_infusenet(config)


def config_from_weights(sd: dict, source: str = ""):
    """The InfuseNet config of weights in ComfyUI's layout (running host's key names): FLUX.2 when they hold
    :data:`FLUX2_MARKER`, FLUX.1 otherwise."""
    if FLUX2_MARKER in sd:
        from ..model_flux2 import InfuseNet2Config

        check_host_trains_flux2()
        return InfuseNet2Config.from_state_dict(sd, source)
    from ..weights import config_from_state_dict

    return config_from_state_dict(sd, source)


def check_branch_fits_base(net, base: "host.Flux", source: str = "") -> None:
    """ValueError when an InfuseNet (stage 2's start) was made for another base than ``base``: another FLUX
    generation, width or text width."""
    where = f" '{source}'" if source else ""
    c = net.config
    if branch_kind(net) != base_kind(base):
        raise ValueError(f"the InfuseNet{where} was made for a {branch_kind(net)} base, but the base is "
                         f"{base_kind(base)}: start stage 2 from a stage-1 model of this base")
    if c.hidden_size != base.hidden_size:
        raise ValueError(f"the InfuseNet{where} is {c.hidden_size} wide, but the base is {base.hidden_size} wide: "
                         "start stage 2 from a stage-1 model of this base")
    if is_flux2_base(base) and c.context_in_dim != base.params.context_in_dim:
        raise ValueError(f"the InfuseNet{where} takes identity tokens {c.context_in_dim} wide, but the base's text is "
                         f"{base.params.context_in_dim} wide: start stage 2 from a stage-1 model of this base")


@torch.no_grad()
def init_from_base(base: "host.Flux", shape: InfuseNetShape, seed: int = 0) -> tuple[InfuseNet, Resampler]:
    """A trainable (InfuseNet, Resampler) pair initialised from ``base`` (see the module docstring): a FLUX.1
    :class:`InfuseNet` or, on a FLUX.2 base, an :class:`~infusenet.model_flux2.InfuseNet2`."""
    torch.manual_seed(seed)
    shape = shape_for_base(base, shape)
    if is_flux2_base(base):
        from ..model_flux2 import init_from_base as init_flux2

        check_host_trains_flux2()
        net = init_flux2(base, shape.depth, shape.depth_single_blocks)
    else:
        config = branch_config(base, shape)
        net = new_infusenet(config)
        same_text_width = base.txt_in.weight.shape == net.txt_in.weight.shape
        start_from_base(net, base, COPIED_EMBEDDERS + (("txt_in",) if same_text_width else ()))
    resampler = Resampler(resampler_config(shape))
    # IP-Adapter's initialisation of the learned queries.
    resampler.latents.normal_(0.0, shape.resampler_dim ** -0.5)
    return net.train(), resampler.train()
