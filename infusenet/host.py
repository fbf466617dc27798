"""The one module that touches ComfyUI's internals.

Everything the pack needs from ComfyUI beyond the public node API (``comfy_api.latest``) is reached
through this module: FLUX classes and their parameters, state-dict key names, model management,
patcher classes and the wrapper API, ComfyUI's loaders and samplers, the model folders and the
server. Where ComfyUI releases differ, the difference is handled here, by looking at what the
running ComfyUI has (never by its version number alone):

* ``FluxParams`` gained required fields (``txt_ids_dims``, ComfyUI 0.4): :func:`flux_params` fills in
  what the running ``FluxParams`` requires, with the FLUX.1 value.
* FLUX q/k norm parameters are ``.weight`` since ComfyUI 0.14 (``.scale`` before, and in the files
  Black Forest Labs published): :func:`to_host_keys` renames to what the running blocks use.
* Rotary embedding needs ``model_management.in_training`` for autograd since ComfyUI 0.14:
  :func:`training_mode`.
* ``flux_to_diffusers`` maps several diffusers names to one key (FLUX.2, LoKr):
  :func:`diffusers_key_map` keeps one name per tensor.
* Dynamic-VRAM patchers (``CoreModelPatcher``) and multi-GPU clones (``cached_patcher_init``):
  :func:`new_patcher`.

* Scaled fp8 weights: ``scaled_fp8_ops`` (0.3.x) or ``convert_old_quants`` and quantised-tensor operations
  (later): :func:`scaled_fp8_operations`.

:data:`CONTRACT` lists every internal the pack relies on and how: parameters by name and by position, instance
attributes, the ``transformer_options`` keys it reads. :func:`check_contract` checks them on the running ComfyUI
when the pack loads (``tests/infusenet/test_host_contract.py`` runs it on every test host, and checks that the
pack's code reads nothing of ComfyUI's that the contract lacks). A loader that fails inside ComfyUI tells a bad file
(:class:`UnreadableFile`: download it again) from a changed ComfyUI (:class:`HostMismatch`, naming the internal,
what the contract check found and the version: :func:`changed_internal`, :func:`drift_note`).
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import functools
import importlib
import inspect
import json
import linecache
import logging
import pickle
import re
import sys
import zipfile
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import safetensors
import torch

import comfy.ldm.flux.layers
import comfy.ldm.flux.model
import comfy.model_management
import comfy.model_patcher
import comfy.ops
import comfy.patcher_extension
import comfy.utils
import folder_paths

log = logging.getLogger("InfiniteYou")

TESTED_VERSIONS = ("0.3.75", "0.30.0")
"""ComfyUI releases the whole test suite runs on (see README, "Supported ComfyUI")."""
OLDEST_SUPPORTED = "0.3.75"

FLUX1_VALUES = {"txt_ids_dims": []}
"""FLUX.1 values for ``FluxParams`` fields newer ComfyUI requires and older ones lack."""


class HostMismatch(RuntimeError):
    """The running ComfyUI differs from every ComfyUI this pack knows, in a way it cannot adapt to."""


# ---------------------------------------------------------------- the running ComfyUI
def comfy_version() -> str:
    """The running ComfyUI's version (``comfyui_version.py`` at its root), or ``"unknown"``."""
    try:
        return str(importlib.import_module("comfyui_version").__version__)
    except Exception:  # a checkout without the file, or a renamed module
        return "unknown"


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


def version_note(version: str | None = None) -> str:
    """One line for the log: the ComfyUI version and whether this pack was tested on it."""
    version = version or comfy_version()
    if version in TESTED_VERSIONS:
        return f"ComfyUI {version}: tested with this pack."
    if version == "unknown":
        return "ComfyUI version unknown (no comfyui_version.py): not a release this pack was tested on."
    newest = max(TESTED_VERSIONS, key=_version_tuple)
    if _version_tuple(version) > _version_tuple(newest):
        return (f"ComfyUI {version}: newer than the releases this pack was tested on ({', '.join(TESTED_VERSIONS)}); "
                "the pack checks the ComfyUI internals it uses at start and names any that changed.")
    if _version_tuple(version) < _version_tuple(OLDEST_SUPPORTED):
        return f"ComfyUI {version}: older than {OLDEST_SUPPORTED}, the oldest release this pack supports. Update ComfyUI."
    return f"ComfyUI {version}: between the tested releases {', '.join(TESTED_VERSIONS)}; not tested itself."


def host_label() -> str:
    return f"ComfyUI {comfy_version()}"


# ---------------------------------------------------------------- FLUX classes and parameters
Flux = comfy.ldm.flux.model.Flux
FluxParams = comfy.ldm.flux.model.FluxParams
DoubleStreamBlock = comfy.ldm.flux.layers.DoubleStreamBlock
SingleStreamBlock = comfy.ldm.flux.layers.SingleStreamBlock
timestep_embedding = comfy.ldm.flux.layers.timestep_embedding


def flux_params(**wanted: Any) -> dict:
    """Keyword arguments for ``Flux(...)`` that the running ``FluxParams`` accepts.

    Fields it requires and ``wanted`` lacks get their FLUX.1 value (:data:`FLUX1_VALUES`); a wanted
    field it does not have is dropped when it holds the FLUX.1 value, otherwise HostMismatch."""
    fields = {f.name: f for f in dataclasses.fields(FluxParams)}
    out = {}
    for name, value in wanted.items():
        if name in fields:
            out[name] = value
        elif name not in FLUX1_VALUES or value != FLUX1_VALUES[name]:
            raise HostMismatch(f"{host_label()}: FLUX parameters have no field '{name}' (wanted {value!r}); "
                               "this ComfyUI cannot build that FLUX variant.")
    for name, f in fields.items():
        if name in out or f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            continue
        if name not in FLUX1_VALUES:
            raise HostMismatch(
                f"{host_label()}: FLUX parameters now require '{name}', which this pack does not know "
                f"(it knows {', '.join(TESTED_VERSIONS)}). Report this with your ComfyUI version.")
        out[name] = FLUX1_VALUES[name]
    return out


def flux_diffusion_model(model) -> Flux | None:
    """The FLUX diffusion model inside a ModelPatcher (or a BaseModel), or None."""
    dm = getattr(getattr(model, "model", model), "diffusion_model", None)
    return dm if isinstance(dm, Flux) else None


# ---------------------------------------------------------------- state-dict key names
_NORM_KEY = re.compile(r"(\.(?:query_norm|key_norm))\.(scale|weight)$")


def norm_param_name() -> str:
    """What the running FLUX blocks call their q/k RMSNorm parameter: ``"scale"`` or ``"weight"``."""
    with torch.device("meta"):
        norm = comfy.ldm.flux.layers.QKNorm(8, operations=comfy.ops.disable_weight_init)
    return "scale" if "key_norm.scale" in norm.state_dict() else "weight"


def to_host_keys(sd: dict) -> dict:
    """FLUX-layout keys renamed to what the running ComfyUI's blocks use (q/k norm ``scale``/``weight``)."""
    name = norm_param_name()
    return {_NORM_KEY.sub(rf"\1.{name}", k): v for k, v in sd.items()}


def to_published_keys(sd: dict) -> dict:
    """FLUX-layout keys as Black Forest Labs' files name them (q/k norm ``.scale``), whatever the host."""
    return {_NORM_KEY.sub(r"\1.scale", k): v for k, v in sd.items()}


def diffusers_key_map(depth: int, depth_single_blocks: int, hidden_size: int) -> dict[str, Any]:
    """diffusers ``FluxTransformer2DModel``/``FluxControlNetModel`` name -> ComfyUI FLUX key (or
    ``(key, (dim, offset, size))`` for a slice of a fused tensor), one diffusers name per tensor.

    ComfyUI's own map also carries aliases (FLUX.2's fused projections, LoKr names) that point at
    tensors already covered; those are left out so that writing the map back gives no duplicates.
    Targets use the running ComfyUI's key names (see :func:`to_host_keys`)."""
    full = comfy.utils.flux_to_diffusers(
        {"depth": depth, "depth_single_blocks": depth_single_blocks, "hidden_size": hidden_size})
    sliced = {t[0] for t in full.values() if isinstance(t, tuple) and t[1] is not None}
    out: dict[str, Any] = {}
    seen: set = set()
    for name, target in full.items():
        if isinstance(target, str):
            if target in sliced or target in seen:
                continue
            seen.add(target)
        elif target[1] is not None:
            slot = (target[0], tuple(target[1]))
            if slot in seen:
                continue
            seen.add(slot)
        out[name] = target
    return out


# ---------------------------------------------------------------- devices, dtypes, operations
def torch_device() -> torch.device:
    return comfy.model_management.get_torch_device()


def offload_device() -> torch.device:
    return comfy.model_management.unet_offload_device()


def load_models(patchers: list, force_full_load: bool = False) -> None:
    """Have ComfyUI's model management load these ModelPatchers to their device (offloading others)."""
    comfy.model_management.load_models_gpu(patchers, force_full_load=force_full_load)


def unload_patcher(patcher) -> None:
    """Have ComfyUI's model management unload this ModelPatcher (not its clones) and forget it, so that a
    short-lived model (a validation copy) neither stays on the device nor is reported as leaked."""
    mm = comfy.model_management
    for i in reversed(range(len(mm.current_loaded_models))):
        loaded = mm.current_loaded_models[i]
        if loaded.model is patcher:
            loaded.model_unload()
            mm.current_loaded_models.pop(i)


def module_size(module: torch.nn.Module) -> int:
    return comfy.model_management.module_size(module)


def unet_dtype(params: int, supported: list[torch.dtype], weight_dtype: torch.dtype | None) -> torch.dtype:
    return comfy.model_management.unet_dtype(model_params=params, supported_dtypes=supported, weight_dtype=weight_dtype)


def manual_cast_dtype(dtype: torch.dtype, device: torch.device, supported: list[torch.dtype]) -> torch.dtype | None:
    return comfy.model_management.unet_manual_cast(dtype, device, supported)


def operations_for(dtype: torch.dtype, manual_cast: torch.dtype | None, device: torch.device):
    """ComfyUI's layer classes for weights stored in ``dtype`` and computed in ``manual_cast``."""
    return comfy.ops.pick_operations(dtype, manual_cast, load_device=device)


SCALE_WEIGHT = ".scale_weight"
"""The per-layer weight scale of ComfyUI's scaled fp8 checkpoints (``<layer>.scale_weight``, a float32 scalar: the
layer computes with ``weight * scale``); newer ComfyUI names it ``<layer>.weight_scale``."""
SCALED_FP8_MARKER = "scaled_fp8"
"""The key that marks a scaled fp8 checkpoint (an empty tensor of the fp8 dtype)."""


def scaled_fp8_machinery() -> str | None:
    """How this ComfyUI computes with scaled fp8 weights: ``"scaled_fp8_ops"`` (``pick_operations(scaled_fp8=...)``,
    ComfyUI 0.3.x), ``"quantized"`` (``convert_old_quants`` then the quantised-tensor operations
    ``pick_operations(model_config=...)`` chooses, later releases), or None where it has neither."""
    params = inspect.signature(comfy.ops.pick_operations).parameters
    if "scaled_fp8" in params and hasattr(comfy.ops, "scaled_fp8_ops"):
        return "scaled_fp8_ops"
    quantized = hasattr(comfy.utils, "convert_old_quants") and hasattr(comfy.ops, "mixed_precision_ops")
    if "model_config" in params and quantized:
        return "quantized"
    return None


def scaled_fp8_operations(sd: dict, weight_dtype: torch.dtype, manual_cast: torch.dtype | None,
                          device: torch.device) -> tuple[Any, dict]:
    """ComfyUI's own layer classes for a scaled fp8 state dict (ComfyUI keys, ``<layer>.scale_weight`` beside each
    scaled weight), and the state dict in the form those layers load. They compute with ``weight * scale``, as
    ComfyUI runs its own scaled fp8 checkpoints on this device. HostMismatch on a ComfyUI without them."""
    machinery = scaled_fp8_machinery()
    if machinery == "scaled_fp8_ops":
        return comfy.ops.pick_operations(weight_dtype, manual_cast, load_device=device, scaled_fp8=weight_dtype), sd
    if machinery == "quantized":
        marked = {**sd, SCALED_FP8_MARKER: torch.empty(0, dtype=weight_dtype)}
        converted, _ = comfy.utils.convert_old_quants(marked, "", {})
        config = _QuantConfig(quant_config={"mixed_ops": True})
        return comfy.ops.pick_operations(weight_dtype, manual_cast, load_device=device, model_config=config), converted
    raise HostMismatch(f"{host_label()} has none of ComfyUI's scaled fp8 operations (comfy.ops.scaled_fp8_ops, or "
                       f"comfy.utils.convert_old_quants with comfy.ops.mixed_precision_ops). {version_note()}")


@dataclass
class _QuantConfig:
    """What ``pick_operations`` reads of a model config to choose the quantised-tensor operations."""

    quant_config: dict


plain_operations = comfy.ops.disable_weight_init
"""Layer classes without weight initialisation (for building a model that is loaded next)."""


def device_supports(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether ComfyUI would run ``dtype`` (fp16/bf16) on ``device``."""
    if dtype == torch.float16:
        return bool(comfy.model_management.should_use_fp16(device, prioritize_performance=False))
    if dtype == torch.bfloat16:
        return bool(comfy.model_management.should_use_bf16(device, prioritize_performance=False))
    return dtype == torch.float32


@contextlib.contextmanager
def training_mode() -> Iterator[None]:
    """Run FLUX blocks with autograd-capable kernels (ComfyUI >= 0.14 switches its rotary embedding
    on ``model_management.in_training``); the previous value is restored on exit."""
    mm = comfy.model_management
    has_flag = hasattr(mm, "in_training")
    previous = getattr(mm, "in_training", False)
    if has_flag:
        mm.in_training = True
    try:
        yield
    finally:
        if has_flag:
            mm.in_training = previous


@contextlib.contextmanager
def flux_attention(fn: Callable) -> Iterator[None]:
    """FLUX blocks call ``fn`` instead of ComfyUI's chosen attention while inside (same signature as
    ``optimized_attention``: q, k, v [B, H, L, D], heads, ``skip_reshape=True``; returns [B, L, H*D]).
    Used by the memory planner to run blocks on the ``meta`` device with a stated attention kernel."""
    import comfy.ldm.flux.math as flux_math

    previous = flux_math.optimized_attention
    flux_math.optimized_attention = fn
    try:
        yield
    finally:
        flux_math.optimized_attention = previous


# ---------------------------------------------------------------- files: the file's fault, or ComfyUI's
class UnreadableFile(ValueError):
    """A weights file whose bytes are not what its format says: truncated, corrupt, a web page, a pickle that
    carries objects. The file's fault: another download fixes it. ``reason`` is the format library's own words."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"'{path}': {reason}")
        self.path, self.reason = str(path), reason


FILE_FORMAT_ERRORS = (safetensors.SafetensorError, OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile)
"""What the readers of the file formats raise on bad bytes: safetensors' header errors (ComfyUI re-raises some as
ValueError, chained to them), a read past the end (OSError, EOFError), torch's pickle and zip readers."""


def file_format_error(exc: BaseException) -> BaseException | None:
    """The error in ``exc``'s chain that says a file's bytes are bad (see :data:`FILE_FORMAT_ERRORS`; torch's zip
    reader raises a RuntimeError naming itself), or None: then the file was not the problem."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, FILE_FORMAT_ERRORS) or (isinstance(exc, RuntimeError) and "PytorchStreamReader" in str(exc)):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def load_torch_file(path: str) -> dict:
    """Tensors from a safetensors or torch file, never unpickling objects (``safe_load``).

    Raises :class:`UnreadableFile` when the file's bytes are bad, and :class:`HostMismatch` naming
    ``comfy.utils.load_torch_file`` and the ComfyUI version when anything else fails: a changed signature, a
    moved function. Only the first is worth another download."""
    try:
        return comfy.utils.load_torch_file(str(path), safe_load=True)
    except Exception as exc:
        bad = file_format_error(exc)
        if bad is not None:
            words = str(bad).strip().splitlines()
            raise UnreadableFile(path, f"{type(bad).__name__}: {words[0] if words else 'no details'}") from exc
        raise changed_internal("comfy.utils.load_torch_file", exc) from exc


def weight_dtype(sd: dict) -> torch.dtype | None:
    return comfy.utils.weight_dtype(sd)


def resize(samples: torch.Tensor, width: int, height: int, method: str = "bilinear", crop: str = "center") -> torch.Tensor:
    return comfy.utils.common_upscale(samples, width, height, method, crop)


def load_diffusion_model(path: str):
    """A diffusion model file through ComfyUI's own loader (a ModelPatcher)."""
    import comfy.sd

    return comfy.sd.load_diffusion_model(path)


# ---------------------------------------------------------------- patchers and wrappers
ModelPatcher = comfy.model_patcher.ModelPatcher
WrappersMP = comfy.patcher_extension.WrappersMP


def patcher_class() -> type:
    """The patcher class core loaders use on this ComfyUI: ``CoreModelPatcher`` (the dynamic-VRAM
    patcher where ComfyUI enabled it) when the host has one, else ``ModelPatcher``."""
    return getattr(comfy.model_patcher, "CoreModelPatcher", ModelPatcher)


def new_patcher(model: torch.nn.Module, load_device: torch.device, offload_device: torch.device, size: int = 0,
                reload: tuple[Callable, tuple] | None = None, dynamic: bool = True):
    """Wrap ``model`` in ComfyUI's patcher so model management loads and offloads it.

    ``reload``: ``(factory, args)`` with ``factory(*args, disable_dynamic=False)`` building a fresh
    patcher of the same model from its files. ComfyUI's multi-GPU mode and dynamic-VRAM clones
    rebuild models through it (``cached_patcher_init``); without it those fail for this model."""
    cls = patcher_class() if dynamic else ModelPatcher
    patcher = cls(model, load_device=load_device, offload_device=offload_device, size=size)
    if reload is not None and hasattr(patcher, "cached_patcher_init"):
        patcher.cached_patcher_init = reload
    return patcher


def add_wrapper(patcher, wrapper_type: str, key: str, wrapper: Callable) -> None:
    patcher.add_wrapper_with_key(wrapper_type, key, wrapper)


def additional_models(patcher, key: str) -> list:
    return list(patcher.get_additional_models_with_key(key))


def set_additional_models(patcher, key: str, models: list) -> None:
    patcher.set_additional_models(key, models)


def patcher_on_device(patcher, device: torch.device):
    """``patcher`` itself when model management already loads it to ``device``, else a clone (same weights)
    that loads there: how a training process puts the shared base model on its own GPU."""
    if patcher.load_device == device:
        return patcher
    clone = patcher.clone()
    clone.load_device = device
    return clone


def model_object(patcher, name: str):
    """``model_sampling`` and other objects of a patched model (object patches applied)."""
    return patcher.get_model_object(name)


def sample(model, noise, steps: int, cfg: float, sampler_name: str, scheduler: str, positive, negative, latent,
           **options):
    """ComfyUI's KSampler path (``denoise``, ``seed``, ``disable_pbar``... passed through)."""
    import comfy.sample

    return comfy.sample.sample(model, noise, steps, cfg, sampler_name, scheduler, positive, negative, latent, **options)


def prepare_noise(latent: torch.Tensor, seed: int) -> torch.Tensor:
    import comfy.sample

    return comfy.sample.prepare_noise(latent, seed)


# ---------------------------------------------------------------- model folders
def models_dir() -> str:
    return folder_paths.models_dir


def add_model_folder(folder_name: str, path: str) -> None:
    folder_paths.add_model_folder_path(folder_name, path)


def model_folder_entry(folder_name: str):
    """``(paths, extensions)`` registered under ``folder_name``, or None."""
    return folder_paths.folder_names_and_paths.get(folder_name)


def set_model_folder_entry(folder_name: str, paths: list[str], extensions) -> None:
    folder_paths.folder_names_and_paths[folder_name] = (paths, extensions)


def model_folder_paths(folder_name: str) -> list[str]:
    try:
        return list(folder_paths.get_folder_paths(folder_name))
    except KeyError:
        return []


def model_filenames(folder_name: str) -> list[str]:
    """The files under a model folder, as ComfyUI lists them. ComfyUI's listing cache checks the time stamp of each
    folder it listed last time; a folder removed since then (a user tidying ``models/`` while ComfyUI runs) raises
    ``FileNotFoundError`` there instead of listing nothing. The stale listing is dropped and the folders read again."""
    try:
        return list(folder_paths.get_filename_list(folder_name))
    except FileNotFoundError:
        folder_paths.filename_list_cache.pop(folder_name, None)
        return list(folder_paths.get_filename_list(folder_name))


def input_directory() -> str:
    """ComfyUI's input folder (where ``Load Image`` lists files; ``--input-directory`` or the base folder's)."""
    return folder_paths.get_input_directory()


# ---------------------------------------------------------------- the server
def add_get_route(path: str, handler: Callable) -> bool:
    """Serve ``handler`` (an aiohttp handler) for GET ``path`` on ComfyUI's server, also under ``/api``.

    ComfyUI copies ``PromptServer.instance.routes`` into its app (and under ``/api``) after loading the
    custom nodes, so this must be called while the pack loads. Returns False where no server runs (a
    script or an in-process test imports the pack)."""
    try:
        import server
    except ImportError:
        return False
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    if instance is None:
        return False
    instance.routes.get(path)(handler)
    return True


PROMPT_PATHS = ("/prompt", "/api/prompt")


def rewrite_prompt_answers(rewrite: Callable[[dict], dict]) -> bool:
    """Pass the JSON answer of ``POST /prompt`` (also under ``/api``) through ``rewrite`` before it leaves ComfyUI.

    ComfyUI builds a prompt's ``node_errors`` itself, after every node's ``validate_inputs``; a middleware on its
    aiohttp app is the one place a pack sees them. It must be added while the pack loads (aiohttp freezes the
    middlewares when the server starts). Returns False where no server runs. An answer ``rewrite`` fails on goes
    out as ComfyUI made it."""
    try:
        import server
    except ImportError:
        return False
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    if instance is None:
        return False
    from aiohttp import web

    @web.middleware
    async def prompt_answer(request, handler):
        response = await handler(request)
        if (request.method != "POST" or request.path not in PROMPT_PATHS or not isinstance(response, web.Response)
                or response.content_type != "application/json" or not isinstance(response.body, bytes)):
            return response
        try:
            answer = rewrite(json.loads(response.body))
        except Exception as exc:  # never in the way of a prompt
            log.warning("InfiniteYou: the answer to a prompt went out unchanged (%s: %s)", type(exc).__name__, exc)
            return response
        return web.json_response(answer, status=response.status)

    instance.app.middlewares.append(prompt_answer)
    return True


# ---------------------------------------------------------------- the contract
@dataclass(frozen=True)
class Contact:
    """One internal symbol the pack uses, and how it uses it. Every part is checked against the running ComfyUI
    (:func:`check_contact`): a name only exists, or a signature only accepts, is not enough."""

    path: str
    params: tuple[str, ...] = ()      # passed by name: each must be a named parameter (``**kwargs`` takes any name,
    #                                   so it does not count)
    positional: tuple[str, ...] = ()  # passed by position, in this order: the first parameters (after ``self``)
    fields: tuple[str, ...] = ()      # for dataclasses: fields the pack sets
    attributes: tuple[str, ...] = ()  # read on instances: a class attribute or property, or ``self.<name> =`` in the
    #                                   source of the class or of a base (attributes made in ``__init__``)
    keys: tuple[str, ...] = ()        # dict keys the source sets (``["key"] = ...``), e.g. the transformer_options
    #                                   keys the pack reads
    literals: tuple[str, ...] = ()    # text in string constants of the source, e.g. the key of multi-GPU additional
    #                                   models, the key names of a checkpoint format
    when: str = ""                    # checked only where this symbol exists: a feature of newer ComfyUI releases
    #                                   that the pack uses when it is there
    server_only: bool = False         # only where ComfyUI's ``server`` module is loaded (a server, not a script)


FLUX_FORWARD_ARGS = ("x", "timestep", "context", "y", "guidance", "ref_latents", "control", "transformer_options")
"""What ComfyUI's FLUX forward passes to DIFFUSION_MODEL wrappers and ``_forward``, in this order."""
TRANSFORMER_OPTIONS_READ = ("cond_or_uncond", "sigmas", "sample_sigmas")
"""The keys of ``transformer_options`` the pack reads at each model call (batch chunks, the current sigma, the run's
schedule); ComfyUI's sampler sets them (``comfy/samplers.py``)."""
MULTIGPU_KEY = "multigpu"
"""The additional-models key of ComfyUI's multi-GPU clones (ComfyUI releases with ``comfy.multigpu``)."""

CONTRACT: tuple[Contact, ...] = (
    Contact("comfy.ldm.flux.model.Flux", ("final_layer", "dtype", "device", "operations")),
    Contact("comfy.ldm.flux.model.FluxParams", fields=(
        "in_channels", "out_channels", "vec_in_dim", "context_in_dim", "hidden_size", "mlp_ratio", "num_heads",
        "depth", "depth_single_blocks", "axes_dim", "theta", "patch_size", "qkv_bias", "guidance_embed",
        "global_modulation")),
    # the DIFFUSION_MODEL wrapper (patch.py) gets these from Flux.forward and hands them on, by position
    Contact("comfy.ldm.flux.model.Flux.forward", positional=FLUX_FORWARD_ARGS),
    Contact("comfy.ldm.flux.model.Flux._forward", positional=FLUX_FORWARD_ARGS),
    Contact("comfy.ldm.flux.model.Flux.forward_orig", ("img", "img_ids", "txt", "txt_ids", "timesteps", "y",
                                                       "guidance", "control", "transformer_options")),
    Contact("comfy.ldm.flux.model.Flux.process_img", ("transformer_options",), positional=("x",)),
    Contact("comfy.ldm.flux.layers.DoubleStreamBlock.forward", ("img", "txt", "vec", "pe")),
    Contact("comfy.ldm.flux.layers.SingleStreamBlock.forward", ("x", "vec", "pe")),
    Contact("comfy.ldm.flux.layers.QKNorm", ("dim", "operations")),
    Contact("comfy.ldm.flux.math.optimized_attention"),
    Contact("comfy.ldm.flux.layers.timestep_embedding", ("t", "dim")),
    Contact("comfy.model_patcher.ModelPatcher", ("model", "load_device", "offload_device", "size")),
    Contact("comfy.model_patcher.ModelPatcher.clone"),
    Contact("comfy.model_patcher.ModelPatcher.add_wrapper_with_key", ("wrapper_type", "key", "wrapper")),
    Contact("comfy.model_patcher.ModelPatcher.set_additional_models", ("key", "models")),
    Contact("comfy.model_patcher.ModelPatcher.get_additional_models_with_key", ("key",)),
    Contact("comfy.model_patcher.ModelPatcher.get_model_object", ("name",)),
    Contact("comfy.patcher_extension.WrappersMP.OUTER_SAMPLE"),
    Contact("comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL"),
    Contact("comfy.model_management.get_torch_device"),
    Contact("comfy.model_management.unet_offload_device"),
    Contact("comfy.model_management.load_models_gpu", ("models", "force_full_load")),
    Contact("comfy.model_management.module_size", ("module",)),
    Contact("comfy.model_management.unet_dtype", ("model_params", "supported_dtypes", "weight_dtype")),
    Contact("comfy.model_management.unet_manual_cast", ("weight_dtype", "inference_device", "supported_dtypes")),
    Contact("comfy.model_management.should_use_fp16", ("device", "prioritize_performance")),
    Contact("comfy.model_management.should_use_bf16", ("device", "prioritize_performance")),
    Contact("comfy.ops.pick_operations", ("weight_dtype", "compute_dtype", "load_device")),
    Contact("comfy.ops.disable_weight_init"),
    Contact("comfy.utils.load_torch_file", ("ckpt", "safe_load")),
    Contact("comfy.utils.weight_dtype", ("sd",)),
    Contact("comfy.utils.common_upscale", ("samples", "width", "height", "upscale_method", "crop")),
    Contact("comfy.utils.flux_to_diffusers", ("mmdit_config",)),
    Contact("comfy.sd.load_diffusion_model", ("unet_path",)),
    Contact("comfy.sample.sample", ("model", "noise", "steps", "cfg", "sampler_name", "scheduler", "positive",
                                    "negative", "latent_image", "denoise", "seed")),
    Contact("comfy.sample.prepare_noise", ("latent_image", "seed")),
    Contact("comfy.samplers.CFGGuider.outer_sample"),
    Contact("comfy.model_sampling.ModelSamplingFlux.percent_to_sigma", ("percent",)),
    Contact("comfy.latent_formats.Flux.process_in", ("latent",)),
    Contact("comfy.sd.VAE.encode", ("pixel_samples",)),
    Contact("comfy.sd.VAE.spacial_compression_encode"),
    Contact("folder_paths.models_dir"),
    Contact("folder_paths.folder_names_and_paths"),
    Contact("folder_paths.add_model_folder_path", ("folder_name", "full_folder_path")),
    Contact("folder_paths.get_folder_paths", ("folder_name",)),
    Contact("folder_paths.get_filename_list", ("folder_name",)),
    Contact("folder_paths.filename_list_cache"),
    Contact("folder_paths.get_input_directory"),
    # the running server (routes, the prompt answers' middleware: aiohttp's own API from there on)
    Contact("server.PromptServer", attributes=("instance", "routes", "app"), server_only=True),
)


def _resolve(path: str):
    """The object at a dotted path, importing modules along the way (their own import errors surface)."""
    parts = path.split(".")
    obj = importlib.import_module(parts[0])
    for i, attr in enumerate(parts[1:], 2):
        if hasattr(obj, attr):
            obj = getattr(obj, attr)
            continue
        if not inspect.ismodule(obj):
            raise AttributeError(f"{'.'.join(parts[:i - 1])} has no attribute '{attr}'")
        name = ".".join(parts[:i])
        try:
            obj = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            raise AttributeError(f"module '{'.'.join(parts[:i - 1])}' has no attribute '{attr}'") from e
    return obj


def _exists(path: str) -> bool:
    try:
        _resolve(path)
    except Exception:
        return False
    return True


@functools.lru_cache(maxsize=None)
def _parsed_file(filename: str) -> tuple[list[str], ast.Module] | None:
    """A source file's lines and syntax tree, read once per server start (the check looks into several classes
    of the same ComfyUI module; ``inspect.getsource`` would parse that module again for each)."""
    lines = linecache.getlines(filename)
    if not lines:
        return None
    try:
        return lines, ast.parse("".join(lines), filename)
    except (SyntaxError, ValueError):
        return None


def _class_source(cls) -> str | None:
    """The source of a class, found in its file's syntax tree by its qualified name (None when not found there)."""
    try:
        filename = inspect.getsourcefile(cls)
    except TypeError:
        return None
    parsed = _parsed_file(filename) if filename else None
    if parsed is None:
        return None
    lines, tree = parsed
    scope: list[ast.AST] = [tree]
    for part in [p for p in cls.__qualname__.split(".") if p != "<locals>"]:
        found = [n for body in scope for n in getattr(body, "body", ())
                 if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == part]
        if not found:
            return None
        scope = found
    node = scope[-1]  # a name defined twice (e.g. under an if): the last definition is the one that ran
    if not isinstance(node, ast.ClassDef):
        return None
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    return "".join(lines[first - 1:node.end_lineno])


def _source(obj) -> str:
    """The source of a module, class or function ('' where there is none, e.g. a builtin)."""
    if inspect.isclass(obj):
        found = _class_source(obj)
        if found is not None:
            return found
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


def _defines_attribute(cls, name: str) -> bool:
    """Whether instances of ``cls`` have ``name``: a class attribute or property, a dataclass field, or an
    assignment ``self.<name> = ...`` (or ``<Class>.<name> = ...``) in the source of ``cls`` or of a base class."""
    if hasattr(cls, name) or name in getattr(cls, "__dataclass_fields__", {}):
        return True
    owner = re.escape(getattr(cls, "__name__", "self"))
    assigned = re.compile(rf"\b(?:self|{owner})\.{re.escape(name)}\s*(?::[^=\n]+)?=(?!=)")
    return any(assigned.search(source) for k in getattr(cls, "__mro__", ())[:-1] for source in _method_sources(k))


def _method_sources(cls):
    """The source of each function defined in the body of ``cls`` (methods, static and class methods, property
    accessors), in definition order: where ``self.<name> = ...`` can be. Read function by function (a few lines
    each), not by parsing the class's whole module: the check runs at every server start."""
    for value in list(vars(cls).values()):
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        functions = [value.fget, value.fset] if isinstance(value, property) else [value]
        for function in functions:
            function = inspect.unwrap(function) if inspect.isfunction(function) else function
            if inspect.isfunction(function):
                yield _source(function)


def _signature_problem(contact: Contact, obj) -> str | None:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError) as e:
        return f"signature unreadable on {host_label()} ({e})"
    parameters = list(sig.parameters.values())
    named = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    lost = [p for p in contact.params if p not in named]
    if lost:
        return f"does not take {lost} on {host_label()} (signature {sig})"
    if contact.positional:
        order = [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if order and order[0] in ("self", "cls") and inspect.isfunction(obj):
            order = order[1:]
        if order[:len(contact.positional)] != list(contact.positional):
            return (f"takes its first positional parameters as ({', '.join(order[:len(contact.positional)])}) on "
                    f"{host_label()}; the pack passes ({', '.join(contact.positional)}) in that order (signature {sig})")
    return None


def _source_problem(contact: Contact, obj) -> str | None:
    source = _source(obj)
    unset = [k for k in contact.keys if not re.search(rf"\[\s*['\"]{re.escape(k)}['\"]\s*\]\s*=(?!=)", source)]
    if unset:
        return f"no longer sets the keys {unset} on {host_label()}"
    unused = [t for t in contact.literals if not re.search(rf"['\"][^'\"\n]*{re.escape(t)}[^'\"\n]*['\"]", source)]
    if unused:
        return f"no longer uses {unused} on {host_label()}"
    return None


def check_contact(contact: Contact) -> str | None:
    """None when the symbol exists and is used as the pack uses it; otherwise what is wrong (symbol first)."""
    if contact.server_only and "server" not in sys.modules:
        return None  # a script or test importing the pack: there is no server to check
    if contact.when and not _exists(contact.when):
        return None  # a ComfyUI without the feature: the pack does without it
    try:
        obj = _resolve(contact.path)
    except AttributeError as e:
        return f"{contact.path}: missing on {host_label()} ({e})"
    except Exception as e:  # the module itself fails to import
        return f"{contact.path}: cannot be imported on {host_label()} ({type(e).__name__}: {e})"
    if contact.fields:
        names = {f.name for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else set()
        lost = [f for f in contact.fields if f not in names]
        if lost:
            return f"{contact.path}: fields {lost} missing on {host_label()}"
    if contact.params or contact.positional:
        problem = _signature_problem(contact, obj)
        if problem:
            return f"{contact.path}: {problem}"
    lost = [a for a in contact.attributes if not _defines_attribute(obj, a)]
    if lost:
        return f"{contact.path}: instances have no attributes {lost} on {host_label()}"
    if contact.keys or contact.literals:
        problem = _source_problem(contact, obj)
        if problem:
            return f"{contact.path}: {problem}"
    return None


_CHANGED: list[tuple[str, str]] | None = None
"""(symbol, what changed) as :func:`check_contract` last found them; None before the first check."""


def check_contract() -> list[str]:
    """Every problem with :data:`CONTRACT` on the running ComfyUI (empty when all is in place). The pack runs it
    when it loads; what it finds is kept, so that a node that fails later can name the changed internal."""
    global _CHANGED
    try:
        _CHANGED = [(c.path, problem) for c in CONTRACT if (problem := check_contact(c))]
    finally:
        _parsed_file.cache_clear()  # the syntax trees are not kept in the server's memory
    return [problem for _, problem in _CHANGED]


def changed_internals(*symbols: str) -> list[str]:
    """What the contract check found changed on this ComfyUI, for ``symbols`` (a symbol or anything under it) or
    for every symbol when none is given. Checks once if nothing has checked yet."""
    if _CHANGED is None:
        check_contract()
    return [problem for path, problem in _CHANGED
            if not symbols or any(path == s or path.startswith(s + ".") or s.startswith(path + ".") for s in symbols)]


def drift_note(*symbols: str) -> str:
    """One sentence naming the ComfyUI internals (of ``symbols``, or all) that changed on this ComfyUI, or ''."""
    problems = changed_internals(*symbols)
    if not problems:
        return ""
    return (f"The ComfyUI internals this pack relies on that changed on {host_label()} (checked when the pack loaded): "
            + "; ".join(problems) + ".")


def changed_internal(symbol: str, exc: BaseException) -> HostMismatch:
    """The error for a ComfyUI internal that failed in a way no input explains (TypeError from a changed
    signature, AttributeError from a moved function): names ``symbol``, what the contract check found about it
    and the ComfyUI version. Never advice to download a file again."""
    words = str(exc).strip().splitlines()
    detail = f"{type(exc).__name__}: {words[0]}" if words else type(exc).__name__
    note = drift_note(symbol)
    return HostMismatch(
        f"ComfyUI's {symbol}, which this pack calls, failed on {host_label()} ({detail}). Your files are not the "
        f"problem: this ComfyUI internal changed. {note + ' ' if note else ''}{version_note()}")


# ---- added for base models
def model_options_clone(model_options: dict) -> dict:
    """A per-run copy of a model's options (nested dicts and lists copied), as core's EasyCache makes one."""
    return comfy.model_patcher.create_model_options_clone(model_options)


def wrappers_innermost(model_options: dict, wrapper_type: str, mine: Callable[[str], bool]) -> None:
    """Reorder ``wrapper_type`` wrappers in ``model_options`` (a per-run copy) so that those registered under
    keys ``mine`` accepts run innermost. ComfyUI runs wrappers in the order of their keys in
    ``transformer_options["wrappers"][wrapper_type]``, the first outermost (``get_all_wrappers``)."""
    by_key = model_options.get("transformer_options", {}).get("wrappers", {}).get(wrapper_type)
    if not by_key:
        return
    ordered = [k for k in by_key if not mine(k)] + [k for k in by_key if mine(k)]
    if ordered != list(by_key):
        items = dict(by_key)
        by_key.clear()
        by_key.update((k, items[k]) for k in ordered)


CONTRACT += (
    Contact("comfy.model_patcher.create_model_options_clone", ("orig_model_options",)),
    Contact("comfy.patcher_extension.get_all_wrappers", ("wrapper_type", "transformer_options")),
)


def model_family(model) -> str:
    """The model family ComfyUI detected for a ModelPatcher (its ``unet_config["image_model"]``, e.g.
    ``"flux"``, ``"flux2"``, ``"chroma"``), else the diffusion model's class name."""
    base = getattr(model, "model", model)
    config = getattr(getattr(base, "model_config", None), "unet_config", None) or {}
    return str(config.get("image_model") or type(getattr(base, "diffusion_model", base)).__name__)


CONTRACT += (
    Contact("comfy.supported_models_base.BASE.unet_config"),
)


# ---- added for FLUX.2 [klein]
FLUX2_PARAM_FIELDS = ("global_modulation", "mlp_silu_act", "ops_bias", "txt_ids_dims")
"""``FluxParams`` fields a FLUX.2 [klein] model (and an InfuseNet for it) is built with."""


def flux2_klein_lacks() -> str | None:
    """None when the running ComfyUI can build and load FLUX.2 [klein]; otherwise what it lacks (a phrase).

    FLUX.2 [klein] needs FLUX.2's model options in ``FluxParams`` (global modulation, SiLU-gated MLP, no
    biases, text position ids on chosen axes: ``txt_ids_dims``) and the klein text encoders (Qwen3)."""
    names = {f.name for f in dataclasses.fields(FluxParams)}
    lacking = [f"FluxParams.{f}" for f in FLUX2_PARAM_FIELDS if f not in names]
    try:
        text_encoders = importlib.import_module("comfy.text_encoders.flux")
    except Exception as e:  # the module itself fails to import
        lacking.append(f"comfy.text_encoders.flux ({type(e).__name__}: {e})")
    else:
        if not hasattr(text_encoders, "klein_te"):
            lacking.append("the klein text encoders (comfy.text_encoders.flux.klein_te)")
    return ", ".join(lacking) or None


def is_flux2(diffusion_model) -> bool:
    """Whether a ComfyUI ``Flux`` diffusion model is FLUX.2-shaped (global modulation, one shared set per stream)."""
    return bool(getattr(getattr(diffusion_model, "params", None), "global_modulation", False))


CONTRACT += (
    Contact("comfy.ldm.flux.layers.Modulation.forward", ("vec",)),
)


# ---- added for training on FLUX.2 [klein]
def sampling_context(model, context: torch.Tensor) -> torch.Tensor:
    """The text context ``model`` (a BaseModel) hands its diffusion model when sampling with ``context`` [B, T, C]:
    what its ``extra_conds`` make of it. FLUX.2 left-pads it with zeros to 512 tokens (``model_base.Flux2``), so a
    trainer feeds the base what inference feeds it."""
    return model.extra_conds(cross_attn=context)["c_crossattn"].cond


def sampling_shift(model_sampling) -> float | None:
    """The shift (FLUX's mu) of a FLUX ``model_sampling`` (2.02 for FLUX.2, 1.15 for FLUX.1 unless a node set
    another), or None for a sampling without one."""
    shift = getattr(model_sampling, "shift", None)
    return None if shift is None else float(shift)


CONTRACT += (
    Contact("comfy.model_base.BaseModel.extra_conds"),
    Contact("comfy.conds.CONDRegular", ("cond",)),
    Contact("comfy.model_sampling.ModelSamplingFlux.set_parameters", ("shift",)),
)


# ---- added for Apply InfiniteYou on FLUX.2 [klein]
CONTRACT += (
    Contact("comfy.latent_formats.LatentFormat.latent_channels"),  # the control latent's expected channels
    Contact("comfy.latent_formats.Flux2.process_in", ("latent",)),
)


# ---- what the pack reads on ComfyUI's objects: attributes, dict keys, methods called on what nodes receive
KLEIN = "comfy.text_encoders.flux.klein_te"
CONTRACT += (
    # the InfuseNet is a Flux subclass; a branch starts from a base's modules; Apply reads the base's rotary
    # embedder, patch size and block counts at each call
    Contact("comfy.ldm.flux.model.Flux", attributes=(
        "params", "dtype", "pe_embedder", "patch_size", "img_in", "time_in", "vector_in", "guidance_in", "txt_in",
        "double_blocks", "single_blocks")),
    Contact("comfy.ldm.flux.model.Flux", attributes=(
        "double_stream_modulation_img", "double_stream_modulation_txt", "single_stream_modulation"), when=KLEIN),
    Contact("comfy.ldm.flux.layers.DoubleStreamBlock", attributes=("hidden_size", "num_heads")),
    Contact("comfy.ops.disable_weight_init", attributes=("Linear", "LayerNorm")),
    Contact("comfy.samplers", keys=TRANSFORMER_OPTIONS_READ),
    Contact("comfy.patcher_extension", literals=("wrappers",)),  # wrappers_innermost reorders them
    Contact("comfy.patcher_extension.WrapperExecutor", attributes=("class_obj",)),
    Contact("comfy.samplers.CFGGuider", attributes=("model_patcher", "model_options")),
    Contact("comfy.model_patcher.ModelPatcher", attributes=("model", "load_device", "offload_device", "model_options")),
    Contact("comfy.model_patcher.ModelPatcher", attributes=("clone_base_uuid",), when="comfy.multigpu"),
    Contact("comfy.model_patcher", literals=(MULTIGPU_KEY,), when="comfy.multigpu"),
    Contact("comfy.model_base.BaseModel", attributes=(
        "diffusion_model", "latent_format", "model_sampling", "manual_cast_dtype", "model_config")),
    Contact("comfy.model_base.BaseModel.get_dtype"),
    # the trainer's loss: ComfyUI's own FLUX sampling (ModelSamplingFlux schedule, CONST noise maths)
    Contact("comfy.model_sampling.ModelSamplingFlux", attributes=("shift",)),
    Contact("comfy.model_sampling.CONST.calculate_input", positional=("sigma", "noise")),
    Contact("comfy.model_sampling.ModelSamplingFlux.timestep", positional=("sigma",)),
    Contact("comfy.model_sampling.CONST.noise_scaling", positional=("sigma", "noise", "latent_image")),
    # the trainer's captions and synthesis, the nodes' pose encoding: ComfyUI's CLIP and VAE objects
    Contact("comfy.sd.CLIP.tokenize", positional=("text",)),
    Contact("comfy.sd.CLIP.encode_from_tokens", ("return_pooled",), positional=("tokens",)),
    Contact("comfy.sd.VAE.decode", positional=("samples_in",)),
    Contact("comfy.sd.VAE", attributes=("latent_channels",)),
)


# ---- added for Apply's per-call plan (decided before the diffusion model, outside a compiled region)
APPLY_MODEL_ARGS = ("x", "t", "c_concat", "c_crossattn", "control", "transformer_options")
"""What ``BaseModel.apply_model`` passes to APPLY_MODEL wrappers and ``_apply_model``, in this order; the rest
(``y``, ``guidance``... and a patch's own plan) are keyword arguments that ``_apply_model`` hands on to the
diffusion model, and ``Flux.forward`` to its DIFFUSION_MODEL wrappers."""
TORCH_COMPILE_OPTIONS_KEY = "torch_compile_kwargs"
"""Where ``TorchCompileModel`` (``comfy_api.torch_helpers.set_torch_compile_wrapper``) leaves its torch.compile
options in the model options."""


TORCH_COMPILE_PARAMS = ("backend", "mode", "options", "fullgraph", "dynamic")


def compile_options(model_options: dict) -> dict | None:
    """The ``torch.compile`` options ``TorchCompileModel`` compiles this model's diffusion model with (those of
    ``torch.compile``'s parameters), or None."""
    options = model_options.get(TORCH_COMPILE_OPTIONS_KEY)
    if not isinstance(options, dict):
        return None
    return {k: v for k, v in options.items() if k in TORCH_COMPILE_PARAMS}


CONTRACT += (
    Contact("comfy.patcher_extension.WrappersMP.APPLY_MODEL"),
    Contact("comfy.model_base.BaseModel.apply_model", positional=APPLY_MODEL_ARGS),
    Contact("comfy.model_base.BaseModel._apply_model", positional=APPLY_MODEL_ARGS),
    Contact("comfy_api.torch_helpers.torch_compile.TORCH_COMPILE_KWARGS"),
    Contact("comfy_api.torch_helpers.torch_compile", literals=(TORCH_COMPILE_OPTIONS_KEY,)),
)


# ---- scaled fp8 InfuseNets: ComfyUI's own operations, whichever this ComfyUI has
CONTRACT += (
    Contact("comfy.ops.pick_operations", ("weight_dtype", "compute_dtype", "load_device", "scaled_fp8"),
            when="comfy.ops.scaled_fp8_ops"),
    Contact("comfy.ops.pick_operations", ("weight_dtype", "compute_dtype", "load_device", "model_config"),
            when="comfy.utils.convert_old_quants"),
    Contact("comfy.utils.convert_old_quants", ("state_dict", "model_prefix", "metadata"),
            literals=(SCALED_FP8_MARKER, SCALE_WEIGHT, ".weight_scale", ".comfy_quant"),
            when="comfy.utils.convert_old_quants"),
    Contact("comfy.ops.mixed_precision_ops", when="comfy.utils.convert_old_quants"),
)
