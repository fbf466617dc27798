"""ControlNet-style initialisation of a trainable InfuseNet from the frozen FLUX base.

* double block i <- base double block i (i < N), single block j <- base single block j (j < M);
* ``img_in``, ``time_in``, ``vector_in``, ``guidance_in`` <- the base's embedders;
* ``txt_in`` takes identity tokens (width ``token_dim``, 4096): copied from the base when the base
  text width is the same (FLUX.1 with T5-XXL: 4096), otherwise freshly initialised (PyTorch's
  default Linear initialisation);
* ``controlnet_blocks``, ``controlnet_single_blocks`` and ``controlnet_x_embedder`` are zero, as in
  diffusers' ``FluxControlNetModel``: every residual is exactly zero at step 0, so the base's
  prediction is unchanged bit for bit.
"""
from __future__ import annotations

import torch
from torch import nn

from .. import host

from ..model import InfuseNet, InfuseNetConfig, start_from_base
from ..resampler import Resampler, ResamplerConfig
from .config import InfuseNetShape

COPIED_EMBEDDERS = ("img_in", "time_in", "vector_in", "guidance_in")


def branch_config(base: "host.Flux", shape: InfuseNetShape) -> InfuseNetConfig:
    """The InfuseNet shape that fits ``base`` (hidden, heads, channels from the base; depths from ``shape``)."""
    p = base.params
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


@torch.no_grad()
def init_from_base(base: "host.Flux", shape: InfuseNetShape, seed: int = 0) -> tuple[InfuseNet, Resampler]:
    """A trainable (InfuseNet, Resampler) pair initialised from ``base`` (see the module docstring)."""
    torch.manual_seed(seed)
    config = branch_config(base, shape)
    net = new_infusenet(config)
    same_text_width = base.txt_in.weight.shape == net.txt_in.weight.shape
    start_from_base(net, base, COPIED_EMBEDDERS + (("txt_in",) if same_text_width else ()))
    resampler = Resampler(resampler_config(shape))
    # IP-Adapter's initialisation of the learned queries.
    resampler.latents.normal_(0.0, shape.resampler_dim ** -0.5)
    return net.train(), resampler.train()
