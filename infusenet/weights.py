"""Reading InfuseNet and Resampler weights in every form users have.

* ``.../InfuseNetModel/`` diffusers folder: ``config.json`` + sharded safetensors + index json.
* single safetensors files in bf16 or fp8 e4m3fn (diffusers key names); fp8 stays fp8 in memory and
  is cast per layer for compute by ComfyUI's ``manual_cast`` operations, like ComfyUI's fp8 models.
* scaled fp8 files (a scale per weight, ``<layer>.scale_weight`` or ``<layer>.weight_scale``, as ComfyUI's scaled
  fp8 checkpoints hold them), computed by ComfyUI's own scaled fp8 operations (:func:`host.scaled_fp8_operations`).
* ``image_proj_model.bin`` (``{"image_proj": state_dict}``, read with ``weights_only=True``) or a
  safetensors file holding the same state dict (optionally with the ``image_proj.`` prefix).
* InfuseNets for FLUX.2 [klein], in the same folder or single-file forms but with ComfyUI's own FLUX.2 key
  names (the names klein's published files use), recognised by ``double_stream_modulation_img.lin.weight``.

Every failure raises :class:`InfiniteYouError` naming the file, what was expected and what was found.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import re
from dataclasses import dataclass, field

import torch
from torch import Tensor

from . import host
from .model import InfuseNet, InfuseNetConfig
from .model_flux2 import InfuseNet2, InfuseNet2Config
from .resampler import Resampler, ResamplerConfig

FP8_DTYPES = tuple(t for t in (getattr(torch, "float8_e4m3fn", None), getattr(torch, "float8_e5m2", None)) if t)
DIFFUSERS_INDEX = "diffusion_pytorch_model.safetensors.index.json"
DIFFUSERS_SINGLE = "diffusion_pytorch_model.safetensors"
REQUIRED_DIFFUSERS_KEYS = (
    "x_embedder.weight",
    "controlnet_x_embedder.weight",
    "context_embedder.weight",
    "time_text_embed.timestep_embedder.linear_1.weight",
    "time_text_embed.text_embedder.linear_1.weight",
)
REQUIRED_RESAMPLER_KEYS = ("latents", "proj_in.weight", "proj_out.weight", "norm_out.weight", "layers.0.0.to_q.weight")
FLUX2_KEY = "double_stream_modulation_img.lin.weight"
"""The tensor that tells a FLUX.2 InfuseNet (global modulation) from a FLUX.1 one."""
WEIGHT_SCALE_SUFFIXES = (".scale_weight", ".weight_scale")
"""Per-layer weight scales of scaled fp8 files: ComfyUI's scaled fp8 checkpoints (``scale_weight``) and its newer
quantised ones (``weight_scale``). The layer computes with ``weight * scale``."""
INPUT_SCALE_SUFFIXES = (".scale_input", ".input_scale")
"""Activation scales, which only fp8 matrix products use; the pack computes in the layers' compute dtype."""
FP8_FORMATS = ("float8_e4m3fn", "float8_e5m2")
BASE_NAMES = {"flux1": "FLUX.1", "flux2": "FLUX.2"}
"""The base families an InfuseNet is made for, as the nodes and messages name them."""


class InfiniteYouError(ValueError):
    """A user-facing problem with InfiniteYou inputs (file, model, settings)."""


@dataclass
class InfuseNetBundle:
    """A loaded InfuseNet (managed by ComfyUI), its Resampler and facts for the UI."""

    patcher: "host.ModelPatcher"
    config: InfuseNetConfig | InfuseNet2Config
    resampler: Resampler | None = None
    variant: str = "unknown"        # "aes_stage2" | "sim_stage1" | "unknown" (guessed from the model's names)
    precision: str = "unknown"      # what is held in memory: "bf16" | "fp8_e4m3fn" | ... ("... (bf16 file)")
    files: list[str] = field(default_factory=list)
    projection: "host.ModelPatcher | None" = None  # the Resampler, managed by ComfyUI
    base: str = "flux1"             # the base family it was made for: "flux1" | "flux2" (see BASE_NAMES)

    @property
    def model(self) -> InfuseNet | InfuseNet2:
        return self.patcher.model

    @property
    def base_name(self) -> str:
        return BASE_NAMES[self.base]

    @property
    def pooled_text_width(self) -> int | None:
        """Width of the pooled text vector the branch reads (FLUX.1: 768), None where it reads none (FLUX.2)."""
        return getattr(self.config, "vec_in_dim", None)

    @property
    def num_tokens(self) -> int | None:
        return None if self.resampler is None else self.resampler.num_tokens


# ---------------------------------------------------------------- reading files
def _read_safetensors(path: str) -> dict[str, Tensor]:
    """The tensors of a safetensors file. Bad bytes (truncated, corrupt) say "download it again"; a ComfyUI whose
    loader changed says so, by name and version (:func:`host.load_torch_file` tells the two apart)."""
    try:
        return host.load_torch_file(path)
    except host.UnreadableFile as e:
        size = os.path.getsize(path) if os.path.exists(path) else 0
        raise InfiniteYouError(
            f"Could not read '{path}' ({size} bytes): the safetensors file is truncated or corrupt ({e.reason}). "
            "Download it again.") from e
    except host.HostMismatch as e:
        raise InfiniteYouError(f"Could not read '{path}': {e}") from e


def read_infusenet_state_dict(path: str) -> tuple[dict[str, Tensor], list[str]]:
    """Tensors of an InfuseNet (diffusers key names; ComfyUI's for FLUX.2) from a folder or a single file.

    Returns (state dict, list of files read).
    """
    if os.path.isdir(path):
        index = os.path.join(path, DIFFUSERS_INDEX)
        if os.path.isfile(index):
            try:
                with open(index, encoding="utf-8") as f:
                    weight_map = json.load(f)["weight_map"]
            except (OSError, ValueError, KeyError) as e:
                raise InfiniteYouError(f"'{index}' is not a diffusers weight index (expected a 'weight_map'): {e}") from e
            shards = sorted(set(weight_map.values()))
            missing = [s for s in shards if not os.path.isfile(os.path.join(path, s))]
            if missing:
                raise InfiniteYouError(f"'{path}' is incomplete: shards {missing} listed in {DIFFUSERS_INDEX} are missing.")
            files = [os.path.join(path, s) for s in shards]
        elif os.path.isfile(os.path.join(path, DIFFUSERS_SINGLE)):
            files = [os.path.join(path, DIFFUSERS_SINGLE)]
        else:
            raise InfiniteYouError(
                f"'{path}' is not a diffusers InfuseNetModel folder: expected {DIFFUSERS_INDEX} with its shards "
                f"or {DIFFUSERS_SINGLE}; found {sorted(os.listdir(path))[:10]}."
            )
        sd: dict[str, Tensor] = {}
        for f in files:
            sd.update(_read_safetensors(f))
        return sd, files
    if not os.path.isfile(path):
        raise InfiniteYouError(f"InfuseNet file '{path}' does not exist.")
    if not path.lower().endswith((".safetensors", ".sft")):
        raise InfiniteYouError(f"'{path}': InfuseNet weights must be a .safetensors file or an InfuseNetModel folder.")
    return _read_safetensors(path), [path]


def _strip_prefix(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    for prefix in ("infusenet.", "controlnet.", "model.", "module."):
        if sd and all(k.startswith(prefix) for k in sd):
            return {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _count(sd: dict[str, Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    found = {int(m.group(1)) for k in sd if (m := rx.match(k))}
    return max(found) + 1 if found else 0


def split_fp8_scales(sd: dict[str, Tensor], source: str = "") -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(the tensors, weight key -> its scale) of a scaled fp8 state dict; an unscaled one gives no scales. The marker
    ``scaled_fp8`` and activation scales are dropped. Raises InfiniteYouError for a quantisation other than one fp8
    scale per tensor (block scales, NVFP4, int8), naming the key."""
    tensors: dict[str, Tensor] = {}
    scales: dict[str, Tensor] = {}
    for key, value in sd.items():
        if key == host.SCALED_FP8_MARKER or key.endswith(INPUT_SCALE_SUFFIXES):
            continue
        if key.endswith(".comfy_quant"):
            if value.device.type != "meta":  # the model doctor reads headers only: no format to read
                quant = json.loads(bytes(value.tolist()).decode("utf-8")).get("format")
                if quant not in FP8_FORMATS:
                    raise InfiniteYouError(
                        f"'{source}' quantises {key[:-len('.comfy_quant')]} as {quant!r}; an InfuseNet is read in bf16, "
                        f"fp16, fp32, fp8, or scaled fp8 (one scale per weight: <layer>.scale_weight or "
                        f"<layer>.weight_scale). Use the bf16 or fp8 file.")
            continue
        suffix = next((x for x in WEIGHT_SCALE_SUFFIXES if key.endswith(x)), None)
        if suffix is None:
            tensors[key] = value
        elif value.numel() != 1:
            raise InfiniteYouError(
                f"'{source}' holds {key} with {value.numel()} scales (block-wise quantisation); an InfuseNet is read "
                "with one fp8 scale per weight (ComfyUI's scaled fp8). Use the bf16 or fp8 file.")
        else:
            scales[key[:-len(suffix)] + ".weight"] = value.reshape(()).float()
    return tensors, scales


def _scale_key(weight_key: str) -> str:
    return weight_key[:-len(".weight")] + host.SCALE_WEIGHT


def _fuse(parts: list[tuple[int, Tensor, Tensor | None]]) -> tuple[Tensor, Tensor | None]:
    """Split projections (q, k, v, ...) fused in offset order. Scaled fp8 parts share the largest of their scales:
    the others are rounded to fp8 once more on it (one layer computes with one scale)."""
    parts = sorted(parts, key=lambda p: p[0])
    scales = [s for _, _, s in parts if s is not None]
    if not scales:
        return torch.cat([t for _, t, _ in parts], dim=0), None
    shared = torch.stack(scales).amax()
    rescaled = [(t.float() * ((s if s is not None else torch.ones(())) / shared)).to(t.dtype) for _, t, s in parts]
    return torch.cat(rescaled, dim=0), shared


def to_comfy_keys(sd: dict[str, Tensor], source: str = "") -> dict[str, Tensor]:
    """Diffusers ``FluxControlNetModel`` keys -> this pack's :class:`InfuseNet` keys.

    Uses ComfyUI's diffusers key map (:func:`host.diffusers_key_map`); split q/k/v (and single-block mlp)
    projections are fused in offset order. ``controlnet_*`` keys keep their names.
    Raises InfiniteYouError listing the expected keys that are missing.
    """
    sd, scales = split_fp8_scales(_strip_prefix(dict(sd)), source)
    controlnet = [] if "controlnet_x_embedder.weight" in sd else ["controlnet_x_embedder.weight"]
    if not any(k.startswith(("controlnet_blocks.", "controlnet_single_blocks.")) for k in sd):
        controlnet.append("controlnet_blocks.0.weight or controlnet_single_blocks.0.weight")
    if controlnet:
        sample = ", ".join(sorted(sd)[:3]) or "no tensors"
        raise InfiniteYouError(
            f"'{source}' is not an InfuseNet (a FLUX ControlNet): expected keys missing: {', '.join(controlnet)}. "
            f"Found {len(sd)} tensors, e.g. {sample}: another model was saved under this name?")
    if FLUX2_KEY in sd or ("img_in.weight" in sd and "txt_in.weight" in sd):  # already in ComfyUI layout
        return host.to_host_keys({**sd, **{_scale_key(k): v for k, v in scales.items()}})  # (every FLUX.2 one is)
    missing = [k for k in REQUIRED_DIFFUSERS_KEYS if k not in sd]
    if missing:
        sample = ", ".join(sorted(sd)[:6]) or "no tensors"
        raise InfiniteYouError(
            f"'{source}' is not an InfuseNet (a diffusers FluxControlNetModel): expected keys missing: "
            f"{', '.join(missing)}. Found {len(sd)} tensors, e.g. {sample}."
        )
    hidden = sd["x_embedder.weight"].shape[0]
    key_map = host.diffusers_key_map(_count(sd, r"transformer_blocks\.(\d+)\."),
                                     _count(sd, r"single_transformer_blocks\.(\d+)\."), hidden)
    out: dict[str, Tensor] = {}
    fused: dict[str, list[tuple[int, Tensor, Tensor | None]]] = {}
    for key, tensor in sd.items():
        target = key if key.startswith("controlnet_") else key_map.get(key)
        if target is None:
            logging.debug("InfiniteYou: ignoring tensor %s in %s", key, source)
        elif isinstance(target, str):
            out[target] = tensor
            if key in scales:
                out[_scale_key(target)] = scales[key]
        elif target[1] is not None:
            fused.setdefault(target[0], []).append((target[1][1], tensor, scales.get(key)))
        elif key in scales:
            raise InfiniteYouError(f"'{source}': the scaled fp8 weight {key} is rearranged when read ({target[0]}), "
                                   "which a scale cannot follow. Use the bf16 or fp8 file.")
        else:
            out[target[0]] = target[2](tensor)
    for target, parts in fused.items():
        out[target], scale = _fuse(parts)
        if scale is not None:
            out[_scale_key(target)] = scale
    return host.to_host_keys(out)


def _norm_scale(sd: dict[str, Tensor], prefix: str) -> Tensor:
    """A q/k RMSNorm parameter under either name ComfyUI has used (``.scale``, ``.weight``)."""
    for name in (prefix + ".scale", prefix + ".weight"):
        if name in sd:
            return sd[name]
    raise KeyError(prefix + ".weight")


def config_from_state_dict(sd: dict[str, Tensor], source: str = "") -> InfuseNetConfig:
    """Read the InfuseNet shape from ComfyUI-layout weights (see :func:`to_comfy_keys`)."""
    try:
        hidden, packed_in = sd["img_in.weight"].shape
        depth = _count(sd, r"double_blocks\.(\d+)\.")
        single = _count(sd, r"single_blocks\.(\d+)\.")
        if depth:
            head_dim = _norm_scale(sd, "double_blocks.0.img_attn.norm.key_norm").shape[0]
            mlp_ratio = sd["double_blocks.0.img_mlp.0.weight"].shape[0] / hidden
            qkv_bias = "double_blocks.0.img_attn.qkv.bias" in sd
        else:
            head_dim = _norm_scale(sd, "single_blocks.0.norm.key_norm").shape[0]
            mlp_ratio = (sd["single_blocks.0.linear1.weight"].shape[0] - 3 * hidden) / hidden
            qkv_bias = "single_blocks.0.linear1.bias" in sd
        return InfuseNetConfig(
            hidden_size=hidden, head_dim=head_dim, depth=depth, depth_single_blocks=single,
            in_channels=packed_in // 4, control_in_channels=sd["controlnet_x_embedder.weight"].shape[1],
            vec_in_dim=sd["vector_in.in_layer.weight"].shape[1], context_in_dim=sd["txt_in.weight"].shape[1],
            mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, guidance_embed="guidance_in.in_layer.weight" in sd,
        )
    except KeyError as e:
        raise InfiniteYouError(f"'{source}' is not a complete InfuseNet: tensor {e} is missing.") from e


def base_family(sd: dict[str, Tensor]) -> str:
    """The base family ComfyUI-layout InfuseNet weights were made for: ``"flux2"`` (global modulation) or ``"flux1"``."""
    return "flux2" if FLUX2_KEY in sd else "flux1"


def network_for(sd: dict[str, Tensor], source: str = "") -> tuple[InfuseNetConfig | InfuseNet2Config, type]:
    """The shape and class of the InfuseNet ``sd`` holds (ComfyUI layout): FLUX.1's or FLUX.2's.

    A FLUX.2 InfuseNet needs a ComfyUI that builds FLUX.2 [klein]; on another the error names the ComfyUI
    version and what it lacks (the file is fine)."""
    if base_family(sd) == "flux1":
        return config_from_state_dict(sd, source), InfuseNet
    lacks = host.flux2_klein_lacks()
    if lacks:
        raise InfiniteYouError(
            f"'{source}' is an InfuseNet for FLUX.2 [klein], which {host.host_label()} cannot load: it lacks {lacks}. "
            "The file is fine; update ComfyUI to a release that loads FLUX.2 [klein] (0.30.0 does).")
    return infusenet_shape(sd, source)[0], InfuseNet2


def infusenet_shape(sd: dict[str, Tensor], source: str = "") -> tuple[InfuseNetConfig | InfuseNet2Config, str]:
    """The shape and base family (``"flux1"``/``"flux2"``) of the InfuseNet whose tensors ``sd`` holds, in either key
    layout: every check the loader makes before it builds a network. ``sd`` may hold ``meta`` tensors made from a
    file's header (the model doctor checks files that way, without reading their weights).
    Raises InfiniteYouError naming what is missing."""
    sd = to_comfy_keys(sd, source)
    base = base_family(sd)
    if base == "flux1":
        return config_from_state_dict(sd, source), base
    try:
        return InfuseNet2Config.from_state_dict(sd, source), base
    except ValueError as e:
        raise InfiniteYouError(f"'{source}' is not a complete InfuseNet for FLUX.2: {e}.") from e


def _precision_name(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}.get(
        dtype, str(dtype).replace("torch.float8_", "fp8_")
    )


def precision_label(held: torch.dtype | None, file_dtype: torch.dtype | None) -> str:
    """The precision held in memory, and the file's when it differs (e.g. ``fp8_e4m3fn (bf16 file)``)."""
    if held is None:
        held = file_dtype
    label = _precision_name(held) if held is not None else "unknown"
    if file_dtype is not None and held != file_dtype:
        label += f" ({_precision_name(file_dtype)} file)"
    return label


_VARIANT_WORDS = {"sim": "sim_stage1", "aes": "aes_stage2"}


def guess_variant(path: str) -> str:
    """``aes_stage2`` / ``sim_stage1`` from the model's own names: the file (or ``InfuseNetModel`` folder)
    and the two folders above it, as InfiniteYou lays them out (``<variant>/InfuseNetModel``,
    ``<variant>/infusenet_<aes|sim>_bf16.safetensors``). A word ``sim``/``aes`` must stand alone
    (``sim_stage1``, ``infusenet_sim_bf16``): folders further up, such as a home folder, say nothing."""
    parts = [p for p in re.split(r"[\\/]+", str(path)) if p][-3:]
    for part in reversed(parts):
        words = set(re.split(r"[^a-z0-9]+", part.lower()))
        for word, variant in _VARIANT_WORDS.items():
            if word in words:
                return variant
    return "unknown"


def build_infusenet(
    sd: dict[str, Tensor], source: str = "", dtype: torch.dtype | None = None, reload: tuple | None = None,
    dynamic: bool = True,
) -> tuple["host.ModelPatcher", InfuseNetConfig | InfuseNet2Config, torch.dtype]:
    """Construct the network (FLUX.1's or FLUX.2's, see :func:`network_for`) on the offload device, load ``sd``
    (ComfyUI layout), wrap in a ModelPatcher.

    dtype None: fp8 weights stay fp8 (compute cast per layer); others follow ComfyUI's choice for the
    load device (``model_management.unet_dtype``). ``reload``: how to rebuild it from its files, for
    ComfyUI's multi-GPU clones (see :func:`host.new_patcher`).
    Returns (patcher, config, weight dtype of the file).
    """
    sd = host.to_host_keys(sd)
    config, network = network_for(sd, source)
    file_dtype = host.weight_dtype(sd)
    load_device = host.torch_device()
    offload_device = host.offload_device()
    supported = [torch.bfloat16, torch.float16, torch.float32]
    if dtype is None:
        if file_dtype in FP8_DTYPES:
            dtype = file_dtype
        else:
            dtype = host.unet_dtype(sum(t.numel() for t in sd.values()), supported, file_dtype)
    scaled = [k for k in sd if k.endswith(host.SCALE_WEIGHT)]
    if scaled and dtype not in FP8_DTYPES:  # asked for a wider dtype: the scales go into the weights
        sd, scaled = dequantized(sd), []
    manual_cast = host.manual_cast_dtype(dtype, load_device, supported)
    if scaled:
        try:
            operations, sd = host.scaled_fp8_operations(sd, dtype, manual_cast, load_device)
        except host.HostMismatch as e:
            raise InfiniteYouError(
                f"'{source}' is a scaled fp8 InfuseNet ({len(scaled)} weights carry a scale, e.g. {scaled[0]}), and "
                f"this ComfyUI cannot compute with scaled fp8 weights: {e} Use the bf16 or the plain fp8 file.") from e
    else:
        operations = host.operations_for(dtype, manual_cast, load_device)
    model = network(config, dtype=dtype, device=offload_device, operations=operations)
    model.compute_dtype = manual_cast or dtype
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing and unexpected:
        raise InfiniteYouError(
            f"'{source}' could not be read by this {host.host_label()}: its FLUX blocks name {len(missing)} tensors "
            f"differently from the file (this ComfyUI expects e.g. {missing[0]}; the file has e.g. {unexpected[0]}). "
            f"The file is fine; ComfyUI changed its FLUX layer names. {host.version_note()}"
        )
    if missing:
        raise InfiniteYouError(
            f"'{source}' is not a complete InfuseNet with {config.depth} double / {config.depth_single_blocks} "
            f"single blocks: {len(missing)} tensors missing, e.g. {', '.join(missing[:5])}."
        )
    if unexpected:
        logging.info("InfiniteYou: %d unused tensors in %s (e.g. %s)", len(unexpected), source, unexpected[:3])
    model.eval().requires_grad_(False)
    patcher = host.new_patcher(model, load_device, offload_device, reload=reload, dynamic=dynamic)
    return patcher, config, file_dtype


def dequantized(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """A scaled fp8 state dict (ComfyUI keys) with each scale multiplied into its weight (float32) and dropped."""
    out = {k: v for k, v in sd.items() if not k.endswith(host.SCALE_WEIGHT)}
    for key, scale in sd.items():
        if key.endswith(host.SCALE_WEIGHT):
            weight = key[:-len(host.SCALE_WEIGHT)] + ".weight"
            out[weight] = out[weight].float() * scale.float()
    return out


def is_scaled(sd: dict[str, Tensor]) -> bool:
    """Whether ComfyUI-layout weights carry fp8 scales (see :func:`split_fp8_scales`)."""
    return any(k.endswith(host.SCALE_WEIGHT) for k in sd)


def reload_infusenet_patcher(path: str, dtype: torch.dtype | None = None, disable_dynamic: bool = False):
    """A fresh ModelPatcher of the InfuseNet at ``path``, for ComfyUI's multi-GPU and dynamic-VRAM clones."""
    sd, _ = read_infusenet_state_dict(path)
    sd = to_comfy_keys(sd, path)
    patcher, _, _ = build_infusenet(sd, path, dtype, reload=(reload_infusenet_patcher, (path, dtype)),
                                    dynamic=not disable_dynamic)
    return patcher


# ---------------------------------------------------------------- Resampler
def read_resampler_state_dict(path: str) -> dict[str, Tensor]:
    """The Resampler state dict from ``image_proj_model.bin`` (safe unpickling) or a safetensors file."""
    if not os.path.isfile(path):
        raise InfiniteYouError(f"Identity projection file '{path}' does not exist.")
    if path.lower().endswith((".safetensors", ".sft")):
        sd = _read_safetensors(path)
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise InfiniteYouError(
                f"Refused to load '{path}': the pickle holds Python objects other than tensors, which could run "
                f"code. Expected a dict {{'image_proj': state_dict}} of tensors (InfiniteYou's image_proj_model.bin)."
            ) from e
        except Exception as e:
            raise InfiniteYouError(f"Could not read '{path}' as a torch file (truncated or corrupt?): {e}") from e
        sd = obj
    return projection_state_dict(sd, path)


def projection_state_dict(obj, source: str) -> dict[str, Tensor]:
    """The Resampler tensors in what a projection file holds (``{"image_proj": state_dict}``, the state dict itself,
    or keys under ``image_proj.``), checked for the Resampler's keys and sizes (:class:`ResamplerConfig`): the
    loader's checks, which the model doctor runs on the same files. Raises InfiniteYouError."""
    if not isinstance(obj, dict):
        raise InfiniteYouError(f"'{source}' holds a {type(obj).__name__}; expected a dict {{'image_proj': state_dict}}.")
    sd = obj.get("image_proj", obj)
    if isinstance(sd, dict) and sd and all(k.startswith("image_proj.") for k in sd):
        sd = {k[len("image_proj."):]: v for k, v in sd.items()}
    missing = [k for k in REQUIRED_RESAMPLER_KEYS if not (isinstance(sd, dict) and k in sd)]
    if missing:
        keys = sorted(sd)[:6] if isinstance(sd, dict) else []
        raise InfiniteYouError(
            f"'{source}' is not an InfiniteYou identity projection (Resampler): expected keys missing: "
            f"{', '.join(missing)}. Found e.g. {keys}."
        )
    try:
        ResamplerConfig.from_state_dict(sd)
    except (KeyError, ValueError, IndexError) as e:
        raise InfiniteYouError(f"'{source}': the identity projection weights do not form a Resampler: {e}") from e
    return sd


def load_resampler(path: str) -> Resampler:
    """Build the Resampler with sizes read from the weights (token count 8/16 from ``latents``); float32."""
    sd = read_resampler_state_dict(path)
    try:
        config = ResamplerConfig.from_state_dict(sd)
        model = Resampler(config)
        model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    except (KeyError, ValueError, RuntimeError) as e:
        raise InfiniteYouError(f"'{path}': the identity projection weights do not form a Resampler: {e}") from e
    return model.eval().requires_grad_(False)


def find_projection_file(infusenet_path: str) -> str | None:
    """``image_proj_model.bin`` (or .safetensors) beside a model folder/file, as InfiniteYou lays them out."""
    folder = os.path.dirname(os.path.normpath(infusenet_path))
    for name in ("image_proj_model.bin", "image_proj_model.safetensors"):
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def load_infusenet(path: str, projection_path: str | None = None, dtype: torch.dtype | None = None) -> InfuseNetBundle:
    """Load an InfuseNet (folder or single file) and, if given or found beside it, its Resampler."""
    sd, files = read_infusenet_state_dict(path)
    sd = to_comfy_keys(sd, path)
    patcher, config, file_dtype = build_infusenet(sd, path, dtype, reload=(reload_infusenet_patcher, (path, dtype)))
    base, scaled = base_family(sd), is_scaled(sd)
    del sd
    resampler = projection = None
    if projection_path is None:
        projection_path = find_projection_file(path)
    if projection_path is not None:
        resampler = load_resampler(projection_path)
        check_projection_width(resampler, config, projection_path, path)
        projection = projection_patcher(resampler)
        files.append(projection_path)
    return InfuseNetBundle(
        patcher=patcher, config=config, resampler=resampler, variant=guess_variant(path),
        precision=(precision_label(file_dtype, file_dtype) + " scaled" if scaled and file_dtype in FP8_DTYPES
                   else precision_label(host.weight_dtype(patcher.model.state_dict()), file_dtype)), files=files,
        projection=projection, base=base,
    )


def check_projection_width(resampler: Resampler, config: InfuseNetConfig | InfuseNet2Config, projection_path: str,
                           infusenet_path: str) -> None:
    """The projection's identity tokens must be as wide as the InfuseNet's text input (``txt_in``: 4096 on FLUX.1,
    the base's text width on FLUX.2); a projection trained with another InfuseNet is refused here, not at sampling."""
    made, read = resampler.config.output_dim, config.context_in_dim
    if made != read:
        raise InfiniteYouError(
            f"'{projection_path}' makes identity tokens {made} wide, but the InfuseNet '{infusenet_path}' reads tokens "
            f"{read} wide (its txt_in): this projection was trained with another InfuseNet. Choose the "
            "image_proj_model file from the InfuseNet's own folder.")


def projection_patcher(resampler: Resampler):
    """The Resampler as a ComfyUI-managed model: loaded to the device when used, offloaded by model management
    like every other model (never moved by hand per identity)."""
    return host.new_patcher(resampler, host.torch_device(), host.offload_device(), size=host.module_size(resampler),
                            dynamic=False)


@torch.no_grad()
def project_identity(bundle_or_resampler: InfuseNetBundle | Resampler, embedding: Tensor) -> Tensor:
    """ArcFace embedding [512] (or [R,512] / [1,T,512]) -> identity tokens [1, Q, width] float32 on CPU (width:
    4096 for FLUX.1, the base's text width for FLUX.2)."""
    bundle = bundle_or_resampler if isinstance(bundle_or_resampler, InfuseNetBundle) else None
    resampler = bundle.resampler if bundle is not None else bundle_or_resampler
    if resampler is None:
        raise InfiniteYouError("This InfuseNet was loaded without an identity projection (image_proj_model.bin).")
    x = embedding.float().reshape(1, -1, resampler.config.embedding_dim)
    if bundle is not None and bundle.projection is not None:
        host.load_models([bundle.projection])  # model management loads it (and offloads others as needed)
        resampler = bundle.projection.model
    device = next(resampler.parameters()).device  # a bare Resampler runs where it is
    return resampler(x.to(device)).float().cpu()
