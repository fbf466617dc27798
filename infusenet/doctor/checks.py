"""The doctor's file checks: whether a model file is there, whole, and the model its name says.

No model is built and no weights are read: a safetensors file is checked from its header (made into ``meta``
tensors), a pickle is opened memory-mapped with ``weights_only``. What a file must hold is checked by the loaders'
own functions (``weights.infusenet_shape``, ``weights.projection_state_dict``, ``encoder.arcface_state_dict``,
``analysis.check_onnx_file``), so the doctor and the loaders never disagree about a file. Results are remembered
per file size and modification time.
"""
from __future__ import annotations

import json
import pickle
import re
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from .places import safe_relative, shown_path

STATUS_OK, STATUS_MISSING, STATUS_BROKEN, STATUS_REFUSED, STATUS_MISPLACED = (
    "ok", "missing", "broken", "refused", "misplaced")


@dataclass
class Check:
    status: str
    detail: str = ""
    info: dict = field(default_factory=dict)


CHECKS_KEPT = 256
"""How many checked files the doctor remembers (the least recently asked for goes first): a server that sees
files come and go, or one file rewritten again and again, keeps a bounded memory."""
_CACHE: OrderedDict[tuple[str, str], tuple[tuple, Check]] = OrderedDict()
"""(path, role) -> (the file's size and modification stamps when checked, the check)."""
_CACHE_LOCK = threading.Lock()  # the route checks in a worker thread while validation checks in another


def _stamp(path: Path) -> tuple:
    """What changes when the file (or a file of the folder) is written: sizes and modification times."""
    if path.is_dir():
        return tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_file()))
    st = path.stat()
    return (st.st_size, st.st_mtime_ns)


def check_file(path: Path, role: str) -> Check:
    """Check one file (or InfuseNetModel folder) for ``role``; remembered while the file is unchanged."""
    path = Path(path)
    if not path.exists():
        return Check(STATUS_MISSING, "not found")
    key, stamp = (str(path), role), _stamp(path)
    with _CACHE_LOCK:
        remembered = _CACHE.get(key)
        if remembered is not None and remembered[0] == stamp:
            _CACHE.move_to_end(key)
            return remembered[1]
    try:
        check = CHECKS[role](path)
    except Exception as exc:  # a check never takes the server down
        check = Check(STATUS_BROKEN, f"could not be checked ({type(exc).__name__}: {str(exc)[:200]})")
    with _CACHE_LOCK:
        _CACHE[key] = (stamp, check)
        _CACHE.move_to_end(key)
        while len(_CACHE) > CHECKS_KEPT:
            _CACHE.popitem(last=False)
    return check


# ---------------------------------------------------------------- safetensors headers
SAFETENSORS_DTYPES = {"BF16": "bf16", "F16": "fp16", "F32": "fp32", "F8_E4M3": "fp8_e4m3fn", "F8_E5M2": "fp8_e5m2"}


def read_safetensors_header(path: Path) -> tuple[dict | None, str]:
    """``(header, "")`` or ``(None, what is wrong)``: the JSON header, checked against the file length."""
    size = path.stat().st_size
    if size < 8:
        return None, f"{size} bytes: empty or cut short"
    with open(path, "rb") as f:
        head = f.read(8)
        if head.lstrip()[:1] in (b"<", b"{"):
            return None, "a web page or text, not a safetensors file (download the file, not its page)"
        (n,) = struct.unpack("<Q", head)
        if n <= 1 or n > 100_000_000 or 8 + n > size:
            return None, f"not a safetensors file (header length {n} in a {size}-byte file): corrupt or truncated"
        try:
            header = json.loads(f.read(n))
        except ValueError:
            return None, "the safetensors header does not parse: corrupt download"
    if not isinstance(header, dict):
        return None, "the safetensors header is not a table of tensors"
    header.pop("__metadata__", None)
    end = max((int(t["data_offsets"][1]) for t in header.values() if isinstance(t, dict) and "data_offsets" in t),
              default=0)
    if 8 + n + end > size:
        return None, f"truncated: {size} bytes of {8 + n + end} (the download stopped early); download it again"
    return header, ""


def precision(header: dict) -> str:
    """The dtype holding most of the weights (fp8 files keep their norms and biases in bf16)."""
    elements: dict[str, int] = {}
    for t in header.values():
        if isinstance(t, dict):
            n = 1
            for d in t.get("shape", []):
                n *= int(d)
            elements[t.get("dtype", "?")] = elements.get(t.get("dtype", "?"), 0) + n
    if not elements:
        return "unknown"
    top = max(elements, key=elements.get)
    return SAFETENSORS_DTYPES.get(top, top.lower())


def meta_tensors(header: dict) -> dict:
    """The tensors a header describes, as ``meta`` tensors (shape and dtype, no data): what the loaders' checks
    read of a state dict."""
    import torch

    dtypes = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64,
              "F8_E4M3": getattr(torch, "float8_e4m3fn", torch.uint8),
              "F8_E5M2": getattr(torch, "float8_e5m2", torch.uint8),
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}
    return {k: torch.empty([int(d) for d in t.get("shape", [])], dtype=dtypes.get(t.get("dtype"), torch.float32),
                           device="meta")
            for k, t in header.items() if isinstance(t, dict)}


def _infusenet_headers(path: Path) -> tuple[list[dict], str]:
    if path.is_file():
        if path.suffix.lower() not in (".safetensors", ".sft"):
            return [], f"an InfuseNet is a .safetensors file or an InfuseNetModel folder, not {path.suffix}"
        header, err = read_safetensors_header(path)
        return ([header] if header else []), err
    index = path / "diffusion_pytorch_model.safetensors.index.json"
    single = path / "diffusion_pytorch_model.safetensors"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError):
            return [], "the weight index does not parse (expected a 'weight_map')"
    elif single.is_file():
        shards = [single.name]
    else:
        return [], "not a diffusers InfuseNetModel folder (no diffusion_pytorch_model.safetensors[.index.json])"
    headers = []
    for shard in shards:
        shard_path = path / safe_relative(shard)
        if not shard_path.is_file():
            return [], f"shard {shard} listed in the index is missing"
        header, err = read_safetensors_header(shard_path)
        if header is None:
            return [], f"shard {shard}: {err}"
        headers.append(header)
    return headers, ""


# ---------------------------------------------------------------- one check per role
def check_infusenet(path: Path) -> Check:
    """The header(s) whole, then the loader's own reading of the tensors' names and shapes."""
    from ..weights import WEIGHT_SCALE_SUFFIXES, InfiniteYouError, guess_variant, infusenet_shape

    headers, err = _infusenet_headers(path)
    if not headers:
        return Check(STATUS_BROKEN, err)
    merged = {k: v for h in headers for k, v in h.items()}
    try:
        config, base = infusenet_shape(meta_tensors(merged), shown_path(path))
    except InfiniteYouError as exc:
        return Check(STATUS_BROKEN, str(exc))
    double, single, width = config.depth, config.depth_single_blocks, config.hidden_size
    scaled = any(k.endswith(WEIGHT_SCALE_SUFFIXES) for k in merged)
    info = {"variant": guess_variant(str(path)), "precision": precision(merged) + (" scaled" if scaled else ""),
            "double_blocks": double,
            "single_blocks": single, "hidden_size": width, "tensors": len(merged), "base": base}
    if base == "flux2":  # the layout COMMON to the FLUX.2 loader and exporter: global modulation, 128-wide latent
        detail = f"FLUX.2 [klein] InfuseNet · {info['precision']} · {double} double + {single} single blocks"
        detail += f" · for a {width}-wide base (klein 4B: 3072, 9B: 4096)"
        return Check(STATUS_OK, detail, info)
    detail = f"{info['variant']} · {info['precision']} · {double} double + {single} single blocks"
    if width != 3072:  # usable only with a base of the same width (Apply checks that)
        detail += f" · for a {width}-wide base, not FLUX.1 (3072)"
    return Check(STATUS_OK, detail, info)


def _torch_tensors(path: Path) -> tuple[dict | None, Check | None]:
    """Tensors of a pickle, read with ``weights_only`` (no code runs); a refusal or failure as a Check."""
    import torch

    with open(path, "rb") as f:
        head = f.read(64).lstrip()
    if head[:1] in (b"<", b"{"):
        return None, Check(STATUS_BROKEN, "a web page or text, not a weights file (download the file, not its page)")
    try:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # legacy (non-zip) pickles cannot be memory-mapped
            if "mmap" not in str(exc):
                raise
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" (it calls {found.group(1)})" if found else ""
        return None, Check(STATUS_REFUSED, f"refused: the pickle holds Python objects other than tensors{what}, which "
                                           "could run code when loaded. Delete it and download the official file.")
    except Exception as exc:
        return None, Check(STATUS_BROKEN, f"cannot be read as a torch file ({type(exc).__name__}): truncated or corrupt")
    if not isinstance(obj, dict):
        return None, Check(STATUS_BROKEN, f"holds a {type(obj).__name__}, not a dict of tensors")
    return obj, None


def _tensors(path: Path) -> tuple[dict | None, Check | None]:
    """The tensors of a safetensors file (as ``meta`` tensors) or a pickle (memory-mapped), or what is wrong."""
    if path.suffix.lower() in (".safetensors", ".sft"):
        header, err = read_safetensors_header(path)
        return (meta_tensors(header), None) if header is not None else (None, Check(STATUS_BROKEN, err))
    return _torch_tensors(path)


def check_projection(path: Path) -> Check:
    from ..resampler import ResamplerConfig
    from ..weights import InfiniteYouError, projection_state_dict

    obj, failed = _tensors(path)
    if failed:
        return failed
    try:
        sd = projection_state_dict(obj, shown_path(path))
    except InfiniteYouError as exc:
        return Check(STATUS_BROKEN, str(exc))
    config = ResamplerConfig.from_state_dict(sd)
    return Check(STATUS_OK, f"{config.num_queries} identity tokens, {config.output_dim} wide",
                 {"tokens": config.num_queries, "width": config.output_dim})


def check_arcface(path: Path) -> Check:
    from ..face.encoder import arcface_state_dict
    from ..face.errors import FaceError

    obj, failed = _tensors(path)
    if failed:
        return failed
    try:
        state = arcface_state_dict(obj, shown_path(path))
    except FaceError as exc:
        return Check(STATUS_BROKEN, str(exc))
    return Check(STATUS_OK, f"IR-SE50, {len(state)} tensors", {"tensors": len(state)})


def _onnx_kind(model) -> str:
    """What insightface would take this ONNX model for, from its signature."""
    outputs = len(model.graph.output)
    if outputs >= 5:
        return "detector"
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] if model.graph.input else []
    side = dims[2] if len(dims) == 4 and dims[2] == dims[3] else 0
    if side == 192:
        return "landmark"
    if side == 96:
        return "attribute"
    if side >= 112 and side % 16 == 0:
        return "recognition"
    return "unknown"


EXPECTED_ONNX_KIND = {"scrfd_10g_bnkps.onnx": "detector", "glintr100.onnx": "recognition", "1k3d68.onnx": "landmark",
                      "2d106det.onnx": "landmark", "genderage.onnx": "attribute"}


def check_onnx(path: Path) -> Check:
    """The face loader's ONNX check (parses; a detector has its outputs), then the role insightface would give it."""
    from ..face.analysis import check_onnx_file
    from ..face.errors import FaceError

    wanted = EXPECTED_ONNX_KIND.get(path.name)
    try:
        model = check_onnx_file(path, "face detector" if wanted == "detector" else "antelopev2 model", shown_path(path))
    except FaceError as exc:
        return Check(STATUS_BROKEN, str(exc))
    kind = _onnx_kind(model)
    info = {"kind": kind, "inputs": len(model.graph.input), "outputs": len(model.graph.output)}
    if wanted and kind != wanted:
        return Check(STATUS_BROKEN, f"an ONNX {kind} model ({info['outputs']} outputs), expected the {wanted}: "
                                    "another model was saved under this name", info)
    return Check(STATUS_OK, f"ONNX {kind}, {info['outputs']} outputs", info)


GGUF_MAGIC = b"GGUF"


def check_gguf(path: Path) -> Check:
    """A GGUF file (ComfyUI-GGUF's quantised models) starts with ``GGUF``, a version and its tensor count."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(24)
    if head.lstrip()[:1] in (b"<", b"{"):
        return Check(STATUS_BROKEN, "a web page or text, not a GGUF model (download the file, not its page)")
    if len(head) < 24 or head[:4] != GGUF_MAGIC:
        return Check(STATUS_BROKEN, f"not a GGUF model (it does not start with GGUF; {size} bytes): corrupt or "
                                    "another file saved under this name")
    version, tensors = struct.unpack("<IQ", head[4:16])
    return Check(STATUS_OK, f"GGUF v{version}, {tensors} tensors", {"version": version, "tensors": tensors})


def check_generic(path: Path) -> Check:
    if path.suffix.lower() in (".safetensors", ".sft"):
        header, err = read_safetensors_header(path)
        if header is None:
            return Check(STATUS_BROKEN, err)
        kind = precision(header)
        return Check(STATUS_OK, f"{len(header)} tensors, {kind}", {"tensors": len(header), "precision": kind})
    return Check(STATUS_OK, "present (not checked)")


CHECKS = {"infusenet": check_infusenet, "projection": check_projection, "arcface": check_arcface,
          "detector": check_onnx, "face_onnx": check_onnx, "gguf": check_gguf, "flux": check_generic,
          "vae": check_generic, "text_encoder": check_generic}
