"""The InfuseNet for FLUX.2 [klein], assembled from ComfyUI's own FLUX.2 layers.

FLUX.2 differs from FLUX.1 in ways the branch must follow, so it is its own class next to
:class:`infusenet.model.InfuseNet`:

* modulation is global: three shared ``Modulation`` layers (``double_stream_modulation_img``,
  ``double_stream_modulation_txt``, ``single_stream_modulation``) turn the timestep embedding into the
  shift/scale/gate every block uses; blocks own none;
* the MLPs are SiLU-gated and no layer has a bias; there is no pooled text vector (``vector_in``); klein
  has no guidance embedder (FLUX.2 dev has one: the branch takes one when its base does);
* the latent is 128 channels at patch size 1 (ComfyUI's ``Flux2`` latent format), so image tokens and
  control tokens are 128 wide;
* rotary embedding has four axes of 32 (theta 2000) and text tokens carry their index on the axes the
  base names in ``txt_ids_dims`` (axis 3): the branch gives its identity tokens the same ids.

The branch is ControlNet-shaped, as on FLUX.1: the base's embedders and global modulation, N double and M
single blocks, one Linear per block (``controlnet_blocks``, ``controlnet_single_blocks``) turning the
image-stream output into a residual, and ``controlnet_x_embedder`` adding the control tokens to the
embedded noisy latent. The identity tokens are its "text", as wide as the base's text features (7680 for
klein 4B), so ``txt_in`` can start as a copy of the base's. The residuals go to ComfyUI's FLUX.2 forward as
its ``control`` dict, with the reference mapping (``i // ceil(n_base / n_branch)``) of
:func:`infusenet.patch.merge_control`.

Default depth for klein 4B (5 double + 20 single blocks): 2 double + 5 single, so the first double residual
serves base double blocks 0-2, the second 3-4, and each single residual 4 base single blocks. That is about a
quarter of the base's blocks, the share InfuseNet v1.0 has of FLUX.1 (4 + 10 of 19 + 38), and 1.35 B
parameters at klein 4B's width (2.40 B for klein 9B), against 2.95 B for v1.0.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from . import host
from .model import start_from_base

DEFAULT_DEPTH = 2
"""Double blocks of the default FLUX.2 [klein] InfuseNet."""
DEFAULT_DEPTH_SINGLE_BLOCKS = 5
"""Single blocks of the default FLUX.2 [klein] InfuseNet."""

COPIED_FROM_BASE = ("img_in", "time_in", "guidance_in", "txt_in", "double_stream_modulation_img",
                    "double_stream_modulation_txt", "single_stream_modulation")
"""Modules :func:`init_from_base` copies from the base (besides the first blocks)."""


@dataclass(frozen=True)
class InfuseNet2Config:
    """Shape of a FLUX.2 InfuseNet: read from a FLUX.2 base with :meth:`from_base`."""

    hidden_size: int              # 3072 for klein 4B
    head_dim: int                 # 128 (= sum of axes_dim)
    depth: int                    # N double blocks
    depth_single_blocks: int      # M single blocks
    in_channels: int              # image token width: latent channels at patch size 1 (128)
    control_in_channels: int      # control token width (128: the same latent format)
    context_in_dim: int           # identity token width = the base's text width (7680 for klein 4B)
    mlp_ratio: float              # 3.0
    guidance_embed: bool          # False for klein, True for FLUX.2 dev
    axes_dim: tuple[int, ...]     # rotary axes (32, 32, 32, 32)
    theta: int                    # 2000
    txt_ids_dims: tuple[int, ...]  # axes on which text (identity) tokens carry their index: (3,)

    @property
    def num_heads(self) -> int:
        return self.hidden_size // self.head_dim

    @classmethod
    def from_base(cls, base: "host.Flux", depth: int = DEFAULT_DEPTH,
                  depth_single_blocks: int = DEFAULT_DEPTH_SINGLE_BLOCKS) -> "InfuseNet2Config":
        """The InfuseNet shape that fits a FLUX.2 ``base`` (ComfyUI's diffusion model); depths are the branch's."""
        p = base.params
        lacks = host.flux2_klein_lacks()
        if lacks:
            raise host.HostMismatch(f"{host.host_label()} cannot load FLUX.2 [klein], which an InfuseNet for FLUX.2 "
                                    f"needs: it lacks {lacks}")
        if not host.is_flux2(base):
            raise ValueError(
                f"expected a FLUX.2 base (global modulation, four rotary axes), found a {type(base).__name__} with "
                f"{len(p.axes_dim)} rotary axes and per-block modulation (FLUX.1-shaped): "
                "use infusenet.model.InfuseNet")
        if p.patch_size != 1:
            raise ValueError(f"expected a FLUX.2 base with patch size 1, found patch size {p.patch_size}")
        n_double, n_single = len(base.double_blocks), len(base.single_blocks)
        if not (1 <= depth <= n_double and 1 <= depth_single_blocks <= n_single):
            raise ValueError(
                f"InfuseNet depth {depth} double / {depth_single_blocks} single must be at least 1 and at most the "
                f"base's {n_double} double / {n_single} single blocks")
        return cls(
            hidden_size=base.hidden_size, head_dim=base.hidden_size // base.num_heads, depth=depth,
            depth_single_blocks=depth_single_blocks, in_channels=p.in_channels, control_in_channels=p.in_channels,
            context_in_dim=p.context_in_dim, mlp_ratio=float(p.mlp_ratio), guidance_embed=bool(p.guidance_embed),
            axes_dim=tuple(p.axes_dim), theta=int(p.theta), txt_ids_dims=tuple(p.txt_ids_dims),
        )

    @classmethod
    def from_state_dict(cls, sd: dict[str, Tensor], source: str = "") -> "InfuseNet2Config":
        """Read the shape from FLUX.2 InfuseNet weights in ComfyUI's layout. The rotary settings are FLUX.2's (four
        equal axes, theta 2000, text index on axis 3): they are not in the weights, and at run time the rotary
        embedding comes from the base anyway."""
        where = f" '{source}'" if source else ""
        if "double_stream_modulation_img.lin.weight" not in sd:
            found = "FLUX.1-shaped weights" if "vector_in.in_layer.weight" in sd else "other weights"
            raise ValueError(f"expected FLUX.2 InfuseNet weights (with double_stream_modulation_img.lin.weight), "
                             f"found{where} {found}")
        sd = host.to_host_keys(sd)  # q/k norms: ``.scale`` in published files, the running ComfyUI's name here
        try:
            hidden, in_channels = sd["img_in.weight"].shape
            depth = _count(sd, "double_blocks.")
            single = _count(sd, "single_blocks.")
            if depth:
                head_dim = sd[f"double_blocks.0.img_attn.norm.key_norm.{host.norm_param_name()}"].shape[0]
                mlp_ratio = sd["double_blocks.0.img_mlp.0.weight"].shape[0] / 2 / hidden
            else:
                head_dim = sd[f"single_blocks.0.norm.key_norm.{host.norm_param_name()}"].shape[0]
                mlp_ratio = (sd["single_blocks.0.linear1.weight"].shape[0] - 3 * hidden) / 2 / hidden
            return cls(
                hidden_size=hidden, head_dim=head_dim, depth=depth, depth_single_blocks=single,
                in_channels=in_channels, control_in_channels=sd["controlnet_x_embedder.weight"].shape[1],
                context_in_dim=sd["txt_in.weight"].shape[1], mlp_ratio=mlp_ratio,
                guidance_embed="guidance_in.in_layer.weight" in sd, axes_dim=(head_dim // 4,) * 4, theta=2000,
                txt_ids_dims=(3,),
            )
        except KeyError as e:
            raise ValueError(f"expected a complete FLUX.2 InfuseNet{where}: tensor {e} is missing") from e

    def flux_params(self) -> dict:
        """Keyword arguments for ComfyUI's ``Flux`` that build a FLUX.2-shaped model of this shape."""
        return host.flux_params(
            in_channels=self.in_channels, out_channels=self.in_channels, vec_in_dim=None,
            context_in_dim=self.context_in_dim, hidden_size=self.hidden_size, mlp_ratio=self.mlp_ratio,
            num_heads=self.num_heads, depth=self.depth, depth_single_blocks=self.depth_single_blocks,
            axes_dim=list(self.axes_dim), theta=self.theta, patch_size=1, qkv_bias=False,
            guidance_embed=self.guidance_embed, txt_ids_dims=list(self.txt_ids_dims), global_modulation=True,
            mlp_silu_act=True, ops_bias=False,
        )

    def as_dict(self) -> dict:
        return asdict(self)


class InfuseNet2(host.Flux):
    """FLUX.2-shaped residual branch.

    ``forward`` returns one residual per double block and one per single block (image tokens only), each
    ``[B, L, hidden]``; scaling by strength and mapping onto base blocks happen where it is applied. The
    residual projections have biases (the FLUX.1 InfuseNet's layout); nothing else has.
    """

    def __init__(self, config: InfuseNet2Config, dtype=None, device=None, operations=None):
        lacks = host.flux2_klein_lacks()
        if lacks:
            raise host.HostMismatch(f"{host.host_label()} cannot load FLUX.2 [klein], which an InfuseNet for FLUX.2 "
                                    f"needs: it lacks {lacks}")
        super().__init__(final_layer=False, dtype=dtype, device=device, operations=operations, **config.flux_params())
        del self.pe_embedder  # rotary comes from the base model
        self.config = config
        self.compute_dtype = dtype
        h = self.hidden_size
        self.controlnet_blocks = nn.ModuleList(
            [operations.Linear(h, h, dtype=dtype, device=device) for _ in range(config.depth)])
        self.controlnet_single_blocks = nn.ModuleList(
            [operations.Linear(h, h, dtype=dtype, device=device) for _ in range(config.depth_single_blocks)])
        self.controlnet_x_embedder = operations.Linear(config.control_in_channels, h, dtype=dtype, device=device)

    def text_ids(self, batch: int, n_tokens: int, n_axes: int, device, dtype) -> Tensor:
        """Position ids [batch, n_tokens, n_axes] of the identity tokens: their index on ``txt_ids_dims``, as the
        base numbers its text tokens."""
        ids = torch.zeros((batch, n_tokens, n_axes), device=device, dtype=dtype)
        for axis in self.config.txt_ids_dims:
            ids[:, :, axis] = torch.arange(n_tokens, device=device, dtype=dtype)
        return ids

    def forward(
        self,
        img: Tensor,
        img_ids: Tensor,
        control: Tensor,
        context: Tensor,
        timesteps: Tensor,
        guidance: Tensor | None,
        pe_embedder: nn.Module,
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Run the branch.

        img: noisy latent tokens [B, L, 128] (ComfyUI's ``process_img`` at patch size 1); img_ids: [B, L, 4];
        control: control latent tokens [B, L, 128]; context: identity tokens [B, Q, context_in_dim];
        timesteps: [B] (sigma, as ComfyUI's FLUX.2 gets it); guidance: [B] or None (used only by a branch with
        a guidance embedder); pe_embedder: the base model's ``EmbedND``.
        Returns (double residuals N x [B, L, hidden], single residuals M x [B, L, hidden]).
        """
        if img.shape[-1] != self.config.in_channels or control.shape[-1] != self.config.control_in_channels:
            raise ValueError(
                f"expected image and control tokens {self.config.in_channels} wide (FLUX.2 latent at patch size 1), "
                f"found {img.shape[-1]} and {control.shape[-1]}")
        if context.shape[-1] != self.config.context_in_dim:
            raise ValueError(f"expected identity tokens {self.config.context_in_dim} wide (the base's text width), "
                             f"found {context.shape[-1]}")
        img = self.img_in(img) + self.controlnet_x_embedder(control)
        vec = self.time_in(host.timestep_embedding(timesteps, 256).to(img.dtype))
        if self.params.guidance_embed and guidance is not None:
            vec = vec + self.guidance_in(host.timestep_embedding(guidance, 256).to(img.dtype))
        txt = self.txt_in(context)

        txt_ids = self.text_ids(img_ids.shape[0], txt.shape[1], img_ids.shape[-1], img_ids.device, img_ids.dtype)
        pe = pe_embedder(torch.cat((txt_ids, img_ids), dim=1))

        double_mod = (self.double_stream_modulation_img(vec), self.double_stream_modulation_txt(vec))
        double_out = []
        for block, proj in zip(self.double_blocks, self.controlnet_blocks):
            img, txt = block(img=img, txt=txt, vec=double_mod, pe=pe)
            double_out.append(proj(img))

        single_mod, _ = self.single_stream_modulation(vec)
        n_txt = txt.shape[1]
        x = torch.cat((txt, img), dim=1)
        single_out = []
        for block, proj in zip(self.single_blocks, self.controlnet_single_blocks):
            x = block(x, vec=single_mod, pe=pe)
            single_out.append(proj(x[:, n_txt:]))
        return double_out, single_out


def new_infusenet2(config: InfuseNet2Config, device: torch.device | str = "cpu") -> InfuseNet2:
    """A FLUX.2 InfuseNet in float32 with trainable ComfyUI operations and PyTorch's default initialisation
    (RMSNorm scales one)."""
    net = InfuseNet2(config, dtype=torch.float32, device=device, operations=host.plain_operations)
    net.compute_dtype = torch.float32
    for module in net.modules():
        if isinstance(module, nn.Linear):
            nn.Linear.reset_parameters(module)
    for name, p in net.named_parameters():
        if name.endswith(("_norm.scale", "_norm.weight")):
            nn.init.ones_(p)
    return net


@torch.no_grad()
def init_from_base(base: "host.Flux", depth: int = DEFAULT_DEPTH,
                   depth_single_blocks: int = DEFAULT_DEPTH_SINGLE_BLOCKS) -> InfuseNet2:
    """A trainable FLUX.2 InfuseNet initialised ControlNet-style from a FLUX.2 ``base``.

    Embedders (``img_in``, ``time_in``, ``guidance_in``, ``txt_in``), the global modulation and the first
    ``depth`` double / ``depth_single_blocks`` single blocks are copies of the base's (in float32);
    ``controlnet_*`` projections are zero, so every residual is exactly zero until training moves them.
    """
    config = InfuseNet2Config.from_base(base, depth, depth_single_blocks)
    net = new_infusenet2(config)
    start_from_base(net, base, COPIED_FROM_BASE)
    return net.train()


def _count(sd: dict, prefix: str) -> int:
    """Number of blocks under ``prefix`` (``double_blocks.``): one more than the highest index."""
    indices = [int(k[len(prefix):].split(".", 1)[0]) for k in sd if k.startswith(prefix)]
    return max(indices) + 1 if indices else 0
