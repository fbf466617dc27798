"""Identity projection: the perceiver resampler that turns one ArcFace embedding into Q tokens.

Layout of the weights (IP-Adapter style, as InfiniteYou ships it in ``image_proj_model.bin``)::

    latents                [1, Q, dim]          learned queries; Q (8 or 16) is read from here
    proj_in.{weight,bias}  [dim, embedding_dim]
    layers.{i}.0           PerceiverAttention: norm1, norm2 (LayerNorm dim), to_q [inner, dim],
                           to_kv [2*inner, dim], to_out [dim, inner] (no biases)
    layers.{i}.1           FeedForward: 0 LayerNorm(dim), 1 Linear dim->mult*dim, 3 Linear back
    proj_out.{weight,bias} [output_dim, dim];  norm_out LayerNorm(output_dim)

Every size is read from the tensors. The head split is not visible in the shapes: heads are of
64 channels (``DIM_HEAD``) as in InfiniteYou (20 heads of 64 at dim 1280).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import Tensor, nn

DIM_HEAD = 64


@dataclass(frozen=True)
class ResamplerConfig:
    dim: int
    depth: int
    heads: int
    dim_head: int
    num_queries: int
    embedding_dim: int
    output_dim: int
    ff_mult: int

    @classmethod
    def from_state_dict(cls, sd: dict[str, Tensor], dim_head: int = DIM_HEAD) -> "ResamplerConfig":
        """Read every size from the weights. Raises KeyError/ValueError on another layout."""
        latents = sd["latents"]
        dim = latents.shape[-1]
        depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"layers\.(\d+)\.", k)))
        inner = sd["layers.0.0.to_q.weight"].shape[0]
        if inner % dim_head:
            raise ValueError(f"attention width {inner} is not a multiple of the head size {dim_head}")
        return cls(
            dim=dim, depth=depth, heads=inner // dim_head, dim_head=dim_head,
            num_queries=latents.shape[1], embedding_dim=sd["proj_in.weight"].shape[1],
            output_dim=sd["proj_out.weight"].shape[0],
            ff_mult=sd["layers.0.1.1.weight"].shape[0] // dim,
        )


class PerceiverAttention(nn.Module):
    """Latents attend over concat(image features, latents)."""

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        inner = heads * dim_head
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def _split(self, t: Tensor) -> Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.heads, self.dim_head).transpose(1, 2)

    def forward(self, x: Tensor, latents: Tensor) -> Tensor:
        """x: [B, T, dim] features; latents: [B, Q, dim]. Returns [B, Q, dim]."""
        x = self.norm1(x)
        latents = self.norm2(latents)
        q = self._split(self.to_q(latents))
        k, v = (self._split(t) for t in self.to_kv(torch.cat((x, latents), dim=1)).chunk(2, dim=-1))
        # q and k are each scaled by dim_head^-1/4 before the product, softmax in float32.
        s = 1.0 / math.sqrt(math.sqrt(self.dim_head))
        weights = ((q * s) @ (k * s).transpose(-2, -1)).float().softmax(dim=-1).to(q.dtype)
        out = (weights @ v).transpose(1, 2).reshape(latents.shape[0], latents.shape[1], -1)
        return self.to_out(out)


def _feed_forward(dim: int, mult: int) -> nn.Sequential:
    return nn.Sequential(
        nn.LayerNorm(dim), nn.Linear(dim, dim * mult, bias=False), nn.GELU(), nn.Linear(dim * mult, dim, bias=False)
    )


class Resampler(nn.Module):
    """[B, T, embedding_dim] face embeddings -> [B, Q, output_dim] identity tokens."""

    def __init__(self, config: ResamplerConfig):
        super().__init__()
        self.config = config
        self.latents = nn.Parameter(torch.zeros(1, config.num_queries, config.dim))
        self.proj_in = nn.Linear(config.embedding_dim, config.dim)
        self.proj_out = nn.Linear(config.dim, config.output_dim)
        self.norm_out = nn.LayerNorm(config.output_dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(config.dim, config.heads, config.dim_head), _feed_forward(config.dim, config.ff_mult)])
            for _ in range(config.depth)
        )

    @property
    def num_tokens(self) -> int:
        return self.config.num_queries

    def forward(self, x: Tensor) -> Tensor:
        latents = self.latents.expand(x.shape[0], -1, -1)
        x = self.proj_in(x)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))
