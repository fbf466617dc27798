"""Export trained weights in the layouts :func:`infusenet.weights.load_infusenet` reads.

FLUX.1 InfuseNets:

* ``<out>/InfuseNetModel/``: diffusers ``FluxControlNetModel`` folder (config.json, safetensors
  shards, index json), as ``save_pretrained`` writes it;
* ``<out>/infusenet_<name>_<precision>.safetensors``: one file, diffusers key names;
* ``<out>/image_proj_model.bin`` (``{"image_proj": state_dict}``) and ``image_proj_model.safetensors``.

Keys go back through the inverse of ComfyUI's diffusers key map (:func:`infusenet.host.diffusers_key_map`,
the map :func:`infusenet.weights.to_comfy_keys` reads with, one diffusers name per tensor): fused
qkv / linear1 weights are split at the offsets the map gives.

FLUX.2 InfuseNets (:class:`~infusenet.model_flux2.InfuseNet2`): no diffusers class exists for a FLUX.2
ControlNet, so the tensors keep ComfyUI's FLUX.2 names as FLUX.2 [klein] files publish them (q/k norms
``.scale``: :func:`infusenet.host.to_published_keys`), ``controlnet_*`` beside them; the same three
layouts, with the folder's ``config.json`` naming ``InfuseNet2Model`` (:func:`flux2_config_json`) and the
single file carrying ``{"infusenet_base": "flux2", "depth": N, "depth_single_blocks": M}`` as metadata.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from .. import host
from ..model import InfuseNetConfig
from ..weights import DIFFUSERS_INDEX, config_from_state_dict
from .init import FLUX2_MARKER

MAX_SHARD_BYTES = 5 * 1024 ** 3
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
FLUX1_AXES = (16, 56, 56)
FLUX2_CLASS_NAME = "InfuseNet2Model"


def to_diffusers_keys(sd: dict[str, Tensor], config: InfuseNetConfig) -> dict[str, Tensor]:
    """ComfyUI-layout InfuseNet weights -> diffusers ``FluxControlNetModel`` names. Raises ValueError
    if a tensor has no diffusers name (nothing is dropped silently)."""
    key_map = host.diffusers_key_map(config.depth, config.depth_single_blocks, config.hidden_size)
    sd = host.to_host_keys(sd)
    out: dict[str, Tensor] = {}
    used: set[str] = set()
    for name, target in key_map.items():
        if name.startswith("controlnet_"):
            continue  # kept under their own names (see to_comfy_keys)
        if isinstance(target, str):
            if target in sd:
                out[name] = sd[target]
                used.add(target)
        elif target[1] is not None:
            comfy_key, (dim, offset, size) = target
            if comfy_key in sd:
                out[name] = sd[comfy_key].narrow(dim, offset, size).contiguous()
                used.add(comfy_key)
        elif target[0] in sd:
            raise ValueError(f"'{target[0]}' needs a transform to export; an InfuseNet has no final layer")
    for key, tensor in sd.items():
        if key.startswith("controlnet_"):
            out[key] = tensor
            used.add(key)
    left = sorted(set(sd) - used)
    if left:
        raise ValueError(f"{len(left)} InfuseNet tensors have no diffusers name, e.g. {left[:5]}")
    return out


def diffusers_config(config: InfuseNetConfig, axes_dim: list[int] | tuple[int, ...]) -> dict:
    """``config.json`` of the folder (what diffusers and the official files carry)."""
    return {
        "_class_name": "FluxControlNetModel", "_diffusers_version": "0.32.0",
        "attention_head_dim": config.head_dim, "axes_dims_rope": list(axes_dim),
        "conditioning_embedding_channels": None, "guidance_embeds": config.guidance_embed,
        "in_channels": config.in_channels * 4, "joint_attention_dim": config.context_in_dim,
        "num_attention_heads": config.hidden_size // config.head_dim, "num_layers": config.depth, "num_mode": None,
        "num_single_layers": config.depth_single_blocks, "patch_size": 1,
        "pooled_projection_dim": config.vec_in_dim,
    }


def flux2_config_json(config, axes_dim: list[int] | tuple[int, ...] | None = None) -> dict:
    """``config.json`` of a FLUX.2 InfuseNet folder (an :class:`~infusenet.model_flux2.InfuseNet2Config`)."""
    return {
        "_class_name": FLUX2_CLASS_NAME, "base": "flux2", "num_layers": config.depth,
        "num_single_layers": config.depth_single_blocks, "hidden_size": config.hidden_size,
        "attention_head_dim": config.head_dim, "in_channels": config.in_channels,
        "joint_attention_dim": config.context_in_dim, "guidance_embeds": config.guidance_embed,
        "axes_dims_rope": list(axes_dim if axes_dim is not None else config.axes_dim),
    }


def write_folder(folder: Path, sd: dict[str, Tensor], config_json: dict, max_shard_bytes: int = MAX_SHARD_BYTES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "config.json", "w", encoding="utf-8") as f:
        json.dump(config_json, f, indent=2)
    shards: list[dict[str, Tensor]] = [{}]
    size = 0
    for key in sorted(sd):
        n = sd[key].numel() * sd[key].element_size()
        if shards[-1] and size + n > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = sd[key]
        size += n
    if len(shards) == 1:
        save_file(shards[0], str(folder / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
        return folder
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / name), metadata={"format": "pt"})
        for k, v in shard.items():
            weight_map[k] = name
            total += v.numel() * v.element_size()
    with open(folder / DIFFUSERS_INDEX, "w", encoding="utf-8") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return folder


def export_infusenet(infusenet_sd: dict[str, Tensor], resampler_sd: dict[str, Tensor], out_dir: str | os.PathLike,
                     axes_dim=None, precision: str = "bf16", name: str = "custom",
                     max_shard_bytes: int = MAX_SHARD_BYTES) -> dict[str, str]:
    """Write every layout. ``infusenet_sd``: ComfyUI keys (``TrainableInfuseNet.infusenet.state_dict()``), of a
    FLUX.1 or a FLUX.2 InfuseNet; ``axes_dim``: the base's rotary axes (default FLUX.1's, or FLUX.2's for FLUX.2
    weights). Returns {"folder", "single", "projection_bin", "projection_safetensors"} paths."""
    if precision not in DTYPES:
        raise ValueError(f"precision must be one of {sorted(DTYPES)}, not {precision!r}")
    dtype = DTYPES[precision]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    host_sd = host.to_host_keys(infusenet_sd)
    if FLUX2_MARKER in host_sd:
        from .init import config_from_weights

        config = config_from_weights(host_sd, "trained InfuseNet")
        sd = {k: v.detach().to("cpu", dtype).contiguous() for k, v in host.to_published_keys(infusenet_sd).items()}
        config_json = flux2_config_json(config, axes_dim)
        metadata = {"infusenet_base": "flux2", "depth": str(config.depth),
                    "depth_single_blocks": str(config.depth_single_blocks)}
    else:
        config = config_from_state_dict(host_sd, "trained InfuseNet")
        sd = {k: v.detach().to("cpu", dtype).contiguous() for k, v in to_diffusers_keys(host_sd, config).items()}
        config_json = diffusers_config(config, axes_dim if axes_dim is not None else FLUX1_AXES)
        metadata = None
    folder = write_folder(out / "InfuseNetModel", sd, config_json, max_shard_bytes)
    single = out / f"infusenet_{name}_{precision}.safetensors"
    save_file(sd, str(single), metadata=metadata)
    proj = {k: v.detach().float().cpu().contiguous() for k, v in resampler_sd.items()}
    torch.save({"image_proj": proj}, out / "image_proj_model.bin")
    save_file(proj, str(out / "image_proj_model.safetensors"))
    return {"folder": str(folder), "single": str(single), "projection_bin": str(out / "image_proj_model.bin"),
            "projection_safetensors": str(out / "image_proj_model.safetensors")}


def export_checkpoint(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, precision: str = "bf16",
                      use_ema: bool = False, name: str = "custom",
                      max_shard_bytes: int = MAX_SHARD_BYTES) -> dict[str, str]:
    """Export a trainer checkpoint folder (``step-XXXXXX``; its shards are consolidated in this process,
    whatever number of processes wrote them); ``use_ema`` takes the EMA weights."""
    from .checkpoint import read_trainable

    sd, axes = read_trainable(checkpoint, ema=use_ema)
    net = {k[len("infusenet."):]: v for k, v in sd.items() if k.startswith("infusenet.")}
    res = {k[len("resampler."):]: v for k, v in sd.items() if k.startswith("resampler.")}
    return export_infusenet(net, res, out_dir, axes, precision, name, max_shard_bytes)
