"""The InfuseNet network, assembled from ComfyUI's own FLUX layers.

InfuseNet is a FLUX-shaped branch (diffusers ``FluxControlNetModel`` layout without a hint encoder):
FLUX embedders and N double + M single transformer blocks, one Linear per block that turns the
block's image-stream output into a residual, and ``controlnet_x_embedder`` that adds the packed
control latent to the embedded noisy latent. It takes the identity tokens as its "text".

The class reuses ComfyUI's ``Flux`` (embedders, blocks, ComfyUI operations and dtype
casting) and adds only the residual projections and its own forward. Rotary embeddings are not
owned by the branch: the caller passes the base model's ``pe_embedder`` so that positional settings
always follow the model the branch is applied to.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from . import host

DEFAULT_THETA = 10_000


@dataclass(frozen=True)
class InfuseNetConfig:
    """Shape of an InfuseNet, as read from its weights (see ``weights.config_from_state_dict``)."""

    hidden_size: int
    head_dim: int
    depth: int                 # N double blocks
    depth_single_blocks: int   # M single blocks
    in_channels: int           # latent channels before 2x2 packing (16 for FLUX)
    control_in_channels: int   # packed control latent channels (64 for FLUX)
    vec_in_dim: int            # pooled text size (768)
    context_in_dim: int        # identity token size (4096)
    mlp_ratio: float
    qkv_bias: bool
    guidance_embed: bool

    @property
    def num_heads(self) -> int:
        return self.hidden_size // self.head_dim

    def flux_params(self) -> dict:
        """Keyword arguments for ComfyUI's ``Flux`` (``FluxParams``), as the running ComfyUI takes them."""
        # axes_dim only satisfies Flux's constructor; forward uses the base model's pe_embedder.
        return host.flux_params(
            in_channels=self.in_channels, out_channels=self.in_channels, vec_in_dim=self.vec_in_dim,
            context_in_dim=self.context_in_dim, hidden_size=self.hidden_size, mlp_ratio=self.mlp_ratio,
            num_heads=self.num_heads, depth=self.depth, depth_single_blocks=self.depth_single_blocks,
            axes_dim=[self.head_dim], theta=DEFAULT_THETA, patch_size=2, qkv_bias=self.qkv_bias,
            guidance_embed=self.guidance_embed,
        )

    def as_dict(self) -> dict:
        return asdict(self)


class InfuseNet(host.Flux):
    """FLUX-shaped residual branch.

    ``forward`` returns one residual per double block and one per single block (image tokens only),
    each ``[B, L, hidden]``; scaling by strength and mapping onto base blocks happen in the patch.
    """

    def __init__(self, config: InfuseNetConfig, dtype=None, device=None, operations=None):
        super().__init__(final_layer=False, dtype=dtype, device=device, operations=operations, **config.flux_params())
        del self.pe_embedder  # rotary comes from the base model
        self.config = config
        self.compute_dtype = dtype
        h = self.hidden_size
        self.controlnet_blocks = nn.ModuleList(
            [operations.Linear(h, h, dtype=dtype, device=device) for _ in range(config.depth)]
        )
        self.controlnet_single_blocks = nn.ModuleList(
            [operations.Linear(h, h, dtype=dtype, device=device) for _ in range(config.depth_single_blocks)]
        )
        self.controlnet_x_embedder = operations.Linear(config.control_in_channels, h, dtype=dtype, device=device)

    def forward(
        self,
        img: Tensor,
        img_ids: Tensor,
        control: Tensor,
        context: Tensor,
        timesteps: Tensor,
        y: Tensor,
        guidance: Tensor | None,
        pe_embedder: nn.Module,
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Run the branch.

        img: packed noisy latent [B, L, in_channels*4]; img_ids: [B, L, n_axes];
        control: packed control latent [B, L, control_in_channels]; context: identity tokens [B, Q, C];
        timesteps: [B] (sigma, as ComfyUI FLUX gets it); y: pooled text [B, vec_in_dim];
        guidance: [B] or None; pe_embedder: the base model's ``EmbedND``.
        Returns (double residuals N x [B, L, hidden], single residuals M x [B, L, hidden]).
        """
        img = self.img_in(img) + self.controlnet_x_embedder(control)
        vec = self.time_in(host.timestep_embedding(timesteps, 256).to(img.dtype))
        if self.params.guidance_embed:
            if guidance is None:
                guidance = torch.ones_like(timesteps)
            vec = vec + self.guidance_in(host.timestep_embedding(guidance, 256).to(img.dtype))
        vec = vec + self.vector_in(y[:, : self.params.vec_in_dim])
        txt = self.txt_in(context)

        txt_ids = torch.zeros(
            (img_ids.shape[0], txt.shape[1], img_ids.shape[-1]), device=img_ids.device, dtype=img_ids.dtype
        )
        pe = pe_embedder(torch.cat((txt_ids, img_ids), dim=1))

        double_out = []
        for block, proj in zip(self.double_blocks, self.controlnet_blocks):
            img, txt = block(img=img, txt=txt, vec=vec, pe=pe)
            double_out.append(proj(img))

        n_txt = txt.shape[1]
        x = torch.cat((txt, img), dim=1)
        single_out = []
        for block, proj in zip(self.single_blocks, self.controlnet_single_blocks):
            x = block(x, vec=vec, pe=pe)
            single_out.append(proj(x[:, n_txt:]))
        return double_out, single_out


@torch.no_grad()
def start_from_base(net: nn.Module, base: nn.Module, embedders: tuple[str, ...]) -> None:
    """ControlNet-style start of a branch: the ``embedders`` both models have and the branch's first double and
    single blocks copied from ``base`` (as float32), every residual projection zero, so that the branch leaves
    the base's prediction unchanged until it trains."""
    def as_float(sd: dict) -> dict:
        return {k: v.detach().float().cpu() for k, v in sd.items()}

    for name in embedders:
        src, dst = getattr(base, name, None), getattr(net, name, None)
        if isinstance(src, nn.Module) and isinstance(dst, nn.Module):
            dst.load_state_dict(as_float(src.state_dict()))
    for i, block in enumerate(net.double_blocks):
        block.load_state_dict(as_float(base.double_blocks[i].state_dict()))
    for j, block in enumerate(net.single_blocks):
        block.load_state_dict(as_float(base.single_blocks[j].state_dict()))
    for proj in [*net.controlnet_blocks, *net.controlnet_single_blocks, net.controlnet_x_embedder]:
        nn.init.zeros_(proj.weight)
        nn.init.zeros_(proj.bias)

