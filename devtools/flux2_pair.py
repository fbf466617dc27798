"""Tiny FLUX.2 pairs for parity tests: ComfyUI's FLUX.2 model (built in-process with a small width and
depth, the real key layout: the one FLUX.2 [klein] files have) with random weights, the same weights in
diffusers' ``Flux2Transformer2DModel`` (keys converted by diffusers' own FLUX.2 checkpoint conversion), and
reference helpers that add InfuseNet residuals with diffusers' FLUX.2 classes.

diffusers' FLUX.2 transformer takes no ControlNet inputs, so the reference adds residuals with forward
hooks on its blocks (its own forward runs unchanged) and runs the branch with diffusers' FLUX.2 blocks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

import comfy.supported_models

HIDDEN, AXES = 256, (32, 32, 32, 32)     # 2 heads of 128 (4 rotary axes of 32, as klein); klein 4B: 3072 wide
HEAD_DIM = sum(AXES)
LATENT_CHANNELS = 128                    # FLUX.2 latent at patch size 1 (as in klein)
TEXT_DIM = 48                            # klein 4B: 7680 (three Qwen3-4B layers)
MLP_RATIO, THETA = 3.0, 2000


@dataclass
class Flux2Pair:
    transformer: nn.Module   # diffusers Flux2Transformer2DModel (float32)
    model: nn.Module         # ComfyUI's model_base.Flux2 (diffusion_model is its FLUX.2 Flux)

    @property
    def diffusion_model(self) -> nn.Module:
        return self.model.diffusion_model


def unet_config(n_double: int, n_single: int, guidance_embed: bool = False) -> dict:
    """What ComfyUI's model detection returns for a FLUX.2 [klein] file, at the tiny width."""
    return dict(
        image_model="flux2", in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, vec_in_dim=None,
        context_in_dim=TEXT_DIM, hidden_size=HIDDEN, mlp_ratio=MLP_RATIO, num_heads=HIDDEN // HEAD_DIM,
        depth=n_double, depth_single_blocks=n_single, axes_dim=list(AXES), theta=THETA, patch_size=1,
        qkv_bias=False, guidance_embed=guidance_embed, txt_ids_dims=[3], global_modulation=True,
        mlp_silu_act=True, ops_bias=False, default_ref_method="index", ref_index_scale=10.0,
    )


def random_state_dict(shapes: dict[str, torch.Size], seed: int) -> dict[str, Tensor]:
    """Random float32 weights for a FLUX-layout state dict: Linear weights N(0, 1/fan_in), norm scales 1 + N(0, 0.1)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in sorted(shapes.items()):
        if len(shape) == 2:
            out[name] = torch.randn(shape, generator=gen) / math.sqrt(shape[1])
        else:
            out[name] = 1.0 + 0.1 * torch.randn(shape, generator=gen)
    return out


def to_diffusers(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """A FLUX.2 state dict in ComfyUI's (Black Forest Labs') layout in diffusers' names (diffusers' own conversion)."""
    from diffusers.loaders.single_file_utils import convert_flux2_transformer_checkpoint_to_diffusers

    return convert_flux2_transformer_checkpoint_to_diffusers({k: v.clone() for k, v in sd.items()})


def diffusers_flux2(n_double: int, n_single: int, text_dim: int, guidance_embed: bool) -> nn.Module:
    from diffusers import Flux2Transformer2DModel

    return Flux2Transformer2DModel(
        patch_size=1, in_channels=LATENT_CHANNELS, num_layers=n_double, num_single_layers=n_single,
        attention_head_dim=HEAD_DIM, num_attention_heads=HIDDEN // HEAD_DIM, joint_attention_dim=text_dim,
        mlp_ratio=MLP_RATIO, axes_dims_rope=AXES, rope_theta=THETA, eps=1e-6, guidance_embeds=guidance_embed,
    ).eval()


def make_flux2_base(n_double: int, n_single: int, seed: int = 0, guidance_embed: bool = False) -> Flux2Pair:
    """ComfyUI's FLUX.2 (float32, CPU) with random weights and the same weights in diffusers."""
    config = comfy.supported_models.Flux2(unet_config(n_double, n_single, guidance_embed))
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({}, device=torch.device("cpu"))
    dm = model.diffusion_model
    sd = random_state_dict({k: v.shape for k, v in dm.state_dict().items()}, seed)
    dm.load_state_dict(sd, strict=True)
    model.eval()
    transformer = diffusers_flux2(n_double, n_single, TEXT_DIM, guidance_embed)
    transformer.load_state_dict(to_diffusers(sd), strict=True)
    return Flux2Pair(transformer, model)


# ---------------------------------------------------------------- tokens and ids (patch size 1)
def tokens(x: Tensor) -> Tensor:
    """[B, C, H, W] -> [B, H*W, C] (row-major), as ComfyUI's ``process_img`` at patch size 1."""
    return x.flatten(2).transpose(1, 2)


def untokens(x: Tensor, h: int, w: int) -> Tensor:
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)


def image_ids(h: int, w: int) -> Tensor:
    """[H*W, 4]: (index 0, row, column, 0), as ComfyUI and diffusers number FLUX.2 image tokens."""
    ids = torch.zeros(h, w, 4)
    ids[..., 1] = torch.arange(h)[:, None]
    ids[..., 2] = torch.arange(w)[None, :]
    return ids.reshape(-1, 4)


def text_ids(n: int) -> Tensor:
    """[n, 4]: the token index on axis 3, as diffusers' FLUX.2 pipeline numbers text tokens."""
    ids = torch.zeros(n, 4)
    ids[:, 3] = torch.arange(n)
    return ids


# ---------------------------------------------------------------- the reference, with diffusers classes
class DiffusersBranch(nn.Module):
    """An InfuseNet for FLUX.2 on diffusers' FLUX.2 classes: a ``Flux2Transformer2DModel`` of the branch's depth
    (its embedders, global modulation, rotary and blocks; no output layer is used) and the residual projections."""

    def __init__(self, net: nn.Module):
        super().__init__()
        c = net.config
        self.transformer = diffusers_flux2(c.depth, c.depth_single_blocks, c.context_in_dim, c.guidance_embed)
        sd = {k: v.detach().clone() for k, v in net.state_dict().items() if not k.startswith("controlnet_")}
        missing, unexpected = self.transformer.load_state_dict(to_diffusers(sd), strict=False)
        assert not unexpected and set(missing) == {"norm_out.linear.weight", "proj_out.weight"}, (missing, unexpected)
        h = c.hidden_size
        self.controlnet_blocks = nn.ModuleList([nn.Linear(h, h) for _ in range(c.depth)])
        self.controlnet_single_blocks = nn.ModuleList([nn.Linear(h, h) for _ in range(c.depth_single_blocks)])
        self.controlnet_x_embedder = nn.Linear(c.control_in_channels, h)
        self.load_state_dict(
            {k: v for k, v in net.state_dict().items() if k.startswith("controlnet_")}, strict=False)

    @torch.no_grad()
    def forward(self, hidden_states: Tensor, control: Tensor, id_tokens: Tensor, timestep: Tensor, img_ids: Tensor,
                guidance: Tensor | None = None) -> tuple[list[Tensor], list[Tensor]]:
        """hidden_states, control: [B, L, 128]; id_tokens: [B, Q, C]; timestep: [B] sigma; img_ids: [L, 4].
        Returns the double and single residuals, each [B, L, hidden]."""
        tr = self.transformer
        t = timestep * 1000
        temb = tr.time_guidance_embed(t, None if guidance is None else guidance * 1000)
        mod_img, mod_txt = tr.double_stream_modulation_img(temb), tr.double_stream_modulation_txt(temb)
        mod_single = tr.single_stream_modulation(temb)
        hs = tr.x_embedder(hidden_states) + self.controlnet_x_embedder(control)
        enc = tr.context_embedder(id_tokens)
        img_rot, txt_rot = tr.pos_embed(img_ids), tr.pos_embed(text_ids(id_tokens.shape[1]))
        rotary = (torch.cat([txt_rot[0], img_rot[0]]), torch.cat([txt_rot[1], img_rot[1]]))
        double = []
        for block, proj in zip(tr.transformer_blocks, self.controlnet_blocks):
            enc, hs = block(hidden_states=hs, encoder_hidden_states=enc, temb_mod_img=mod_img, temb_mod_txt=mod_txt,
                            image_rotary_emb=rotary)
            double.append(proj(hs))
        n_txt = enc.shape[1]
        x = torch.cat([enc, hs], dim=1)
        single = []
        for block, proj in zip(tr.single_transformer_blocks, self.controlnet_single_blocks):
            x = block(hidden_states=x, encoder_hidden_states=None, temb_mod=mod_single, image_rotary_emb=rotary)
            single.append(proj(x[:, n_txt:]))
        return double, single


def reference_block_map(n_base: int, n_branch: int) -> list[int]:
    """InfiniteYou's mapping: base block i gets branch residual ``i // ceil(n_base / n_branch)``."""
    step = math.ceil(n_base / n_branch)
    return [i // step for i in range(n_base)]


@torch.no_grad()
def reference_velocity(pair: Flux2Pair, x: Tensor, sigma: Tensor, context: Tensor, double: list[Tensor] | None = None,
                       single: list[Tensor] | None = None, guidance: Tensor | None = None) -> Tensor:
    """diffusers' FLUX.2 output [B, 128, H, W] for latent x [B, 128, H, W], with branch residuals added to the image
    tokens after each block by the reference mapping (forward hooks; diffusers' forward itself is unchanged)."""
    tr = pair.transformer
    b, _, h, w = x.shape
    n_txt = context.shape[1]
    hooks = []
    if double:
        for i, k in enumerate(reference_block_map(len(tr.transformer_blocks), len(double))):
            hooks.append(tr.transformer_blocks[i].register_forward_hook(
                lambda _m, _a, out, r=double[k]: (out[0], out[1] + r)))
    if single:
        def add_single(_m, _a, out, r):
            out = out.clone()
            out[:, n_txt:] += r
            return out
        for i, k in enumerate(reference_block_map(len(tr.single_transformer_blocks), len(single))):
            hooks.append(tr.single_transformer_blocks[i].register_forward_hook(
                lambda m, a, out, r=single[k]: add_single(m, a, out, r)))
    try:
        out = tr(hidden_states=tokens(x), encoder_hidden_states=context, timestep=sigma, img_ids=image_ids(h, w),
                 txt_ids=text_ids(n_txt), guidance=guidance, return_dict=False)[0]
    finally:
        for hook in hooks:
            hook.remove()
    return untokens(out, h, w)


# ---------------------------------------------------------------- InfuseNet files for FLUX.2 (the published layout)
def infusenet2_state_dict(n_double: int, n_single: int, seed: int, text_dim: int = TEXT_DIM,
                          guidance_embed: bool = False, projection_scale: float = 0.05) -> dict[str, Tensor]:
    """Random float32 weights of a FLUX.2 InfuseNet with ``n_double`` / ``n_single`` blocks, named as FLUX.2 InfuseNet
    files name them (ComfyUI's FLUX.2 layout, q/k norms ``.scale``, plus ``controlnet_*``). The FLUX.2 tensors take
    their shapes from ComfyUI's own FLUX.2 ``Flux`` built on the meta device with the options the running
    ``FluxParams`` has, so the file can be written on a ComfyUI that cannot load FLUX.2 [klein] too. The residual
    projections are random and non-zero (weights N(0, projection_scale), biases N(0, 0.02))."""
    import dataclasses

    import comfy.ldm.flux.model
    import comfy.ops

    fields = {f.name for f in dataclasses.fields(comfy.ldm.flux.model.FluxParams)}
    options = {k: v for k, v in unet_config(n_double, n_single, guidance_embed).items() if k in fields}
    options["context_in_dim"] = text_dim
    with torch.device("meta"):
        flux = comfy.ldm.flux.model.Flux(final_layer=False, operations=comfy.ops.disable_weight_init, **options)
    shapes = {k: v.shape for k, v in flux.state_dict().items()}
    sd = {k.replace("_norm.weight", "_norm.scale"): v for k, v in random_state_dict(shapes, seed).items()}
    gen = torch.Generator().manual_seed(seed + 1)
    for name, count in (("controlnet_blocks", n_double), ("controlnet_single_blocks", n_single)):
        for i in range(count):
            sd[f"{name}.{i}.weight"] = projection_scale * torch.randn(HIDDEN, HIDDEN, generator=gen)
            sd[f"{name}.{i}.bias"] = 0.02 * torch.randn(HIDDEN, generator=gen)
    sd["controlnet_x_embedder.weight"] = torch.randn(HIDDEN, LATENT_CHANNELS, generator=gen) / math.sqrt(LATENT_CHANNELS)
    sd["controlnet_x_embedder.bias"] = 0.02 * torch.randn(HIDDEN, generator=gen)
    return sd


def infusenet2_config_json(sd: dict[str, Tensor]) -> dict:
    """``config.json`` of a FLUX.2 ``InfuseNetModel`` folder, read from its weights."""
    def count(prefix: str) -> int:
        return len({k.split(".")[1] for k in sd if k.startswith(prefix)})

    return {"_class_name": "InfuseNet2Model", "base": "flux2", "num_layers": count("double_blocks."),
            "num_single_layers": count("single_blocks."), "hidden_size": sd["img_in.weight"].shape[0],
            "attention_head_dim": HEAD_DIM, "in_channels": sd["img_in.weight"].shape[1],
            "joint_attention_dim": sd["txt_in.weight"].shape[1], "guidance_embeds": "guidance_in.in_layer.weight" in sd,
            "axes_dims_rope": list(AXES)}


def write_infusenet2_file(path: str, sd: dict[str, Tensor], dtype: torch.dtype = torch.bfloat16) -> str:
    """One safetensors file (``infusenet_<name>_<bf16|fp16|fp32>.safetensors``) with the FLUX.2 InfuseNet metadata."""
    import os

    from safetensors.torch import save_file

    config = infusenet2_config_json(sd)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file({k: v.to(dtype).contiguous() for k, v in sd.items()}, path, metadata={
        "infusenet_base": "flux2", "depth": str(config["num_layers"]),
        "depth_single_blocks": str(config["num_single_layers"])})
    return path


def write_infusenet2_folder(folder: str, sd: dict[str, Tensor], shards: int = 2, dtype: torch.dtype = torch.bfloat16) -> str:
    """``folder/InfuseNetModel/``: config.json, the tensors in ``shards`` safetensors files and their index json."""
    import json
    import os

    from safetensors.torch import save_file

    path = os.path.join(folder, "InfuseNetModel")
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
        json.dump(infusenet2_config_json(sd), f, indent=2)
    keys = sorted(sd)
    per = -(-len(keys) // shards)
    weight_map, total = {}, 0
    for i in range(shards):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: sd[k].to(dtype).contiguous() for k in keys[i * per:(i + 1) * per]}
        save_file(part, os.path.join(path, name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, name))
        total += sum(v.numel() * v.element_size() for v in part.values())
    with open(os.path.join(path, "diffusion_pytorch_model.safetensors.index.json"), "w", encoding="utf-8") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return path


# ---------------------------------------------------------------- the ComfyUI side, and the reference with references
TEXT_TOKENS = 512
"""ComfyUI's FLUX.2 model left-pads the text context with zeros to this many tokens (``model_base.Flux2``)."""


def comfy_patcher(pair: Flux2Pair):
    """The tiny FLUX.2 as a ComfyUI ModelPatcher on the CPU (what a diffusion-model loader returns)."""
    import comfy.model_patcher

    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(pair.model, load_device=cpu, offload_device=cpu)


def conds(context: Tensor, references: list[Tensor] | None = None) -> list:
    """A FLUX.2 conditioning: the text features and, for multi-reference editing, the reference latents."""
    extra = {} if references is None else {"reference_latents": list(references)}
    return [[context, extra]]


def padded_context(context: Tensor) -> Tensor:
    """The text context the FLUX.2 transformer gets from a conditioning (zeros in front, to 512 tokens)."""
    return torch.nn.functional.pad(context, (0, 0, TEXT_TOKENS - context.shape[1], 0))


@torch.no_grad()
def reference_velocity_with_references(pair: Flux2Pair, x: Tensor, sigma: Tensor, context: Tensor,
                                       references: list[Tensor], double: list[Tensor] | None = None,
                                       single: list[Tensor] | None = None, guidance: Tensor | None = None) -> Tensor:
    """diffusers' FLUX.2 output [B, 128, H, W] for latent x with reference latents [1, 128, h, w] appended as its
    multi-reference pipeline appends them (ids from the pipeline's ``_prepare_image_ids``: time 10, 20, ...), and the
    branch residuals added to the noisy latent's tokens only (the reference tokens get none)."""
    from diffusers.pipelines.flux2.pipeline_flux2_klein import Flux2KleinPipeline

    tr = pair.transformer
    b, _, h, w = x.shape
    n_img, n_txt = h * w, context.shape[1]
    ref_tokens = torch.cat([tokens(r) for r in references], dim=1).expand(b, -1, -1)
    ref_ids = Flux2KleinPipeline._prepare_image_ids(list(references))[0].float()

    def add_double(_m, _a, out, r):
        img = out[1].clone()
        img[:, :n_img] += r
        return out[0], img

    def add_single(_m, _a, out, r):
        out = out.clone()
        out[:, n_txt:n_txt + n_img] += r
        return out

    hooks = []
    if double:
        for i, k in enumerate(reference_block_map(len(tr.transformer_blocks), len(double))):
            hooks.append(tr.transformer_blocks[i].register_forward_hook(
                lambda m, a, out, r=double[k]: add_double(m, a, out, r)))
    if single:
        for i, k in enumerate(reference_block_map(len(tr.single_transformer_blocks), len(single))):
            hooks.append(tr.single_transformer_blocks[i].register_forward_hook(
                lambda m, a, out, r=single[k]: add_single(m, a, out, r)))
    try:
        out = tr(hidden_states=torch.cat([tokens(x), ref_tokens], dim=1), encoder_hidden_states=context,
                 timestep=sigma, img_ids=torch.cat([image_ids(h, w), ref_ids]), txt_ids=text_ids(n_txt),
                 guidance=guidance, return_dict=False)[0]
    finally:
        for hook in hooks:
            hook.remove()
    return untokens(out[:, :n_img], h, w)
