"""The model doctor: every model file the pack can use, where it goes, whether it is there and opens.

:func:`inventory` lists the files of the README's model table (InfuseNets, identity projections, the
antelopev2 face pack, ArcFace IR-SE50, FLUX, its VAE and text encoders; FLUX.2 [klein] 4B, its text encoder and
VAE, and the FLUX.2 InfuseNet the user trains, which has no download) plus any other InfuseNet or
projection found in the InfiniteYou folders, and checks each one without loading a model:

* safetensors: the header reads and the file is as long as the header says (truncated downloads);
  for an InfuseNet, its keys are a FLUX ControlNet's, with block counts and precision;
* pickles (``.bin``/``.pth``): read with ``torch.load(weights_only=True)``; a pickle that carries code
  or other objects is *refused*; the tensors must be the expected model's (projection tokens, ArcFace);
* ONNX: the graph parses and has the signature of its role (the detector has >= 5 outputs, the
  recogniser a square 112 input, ...), the way insightface routes files.

Every missing or unusable file comes with its official download link, the exact folder, and one shell
line (run in ComfyUI's ``models`` folder) that puts it there. Paths in reports are relative to
ComfyUI's models folder; folders registered elsewhere are named, never shown as absolute paths.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from . import host

HF_INFU = "https://huggingface.co/ByteDance/InfiniteYou/resolve/main/infu_flux_v1.0/"
HF_INFU_PAGE = "https://huggingface.co/ByteDance/InfiniteYou/tree/main/infu_flux_v1.0/"
HF_FLUX_DEV = "https://huggingface.co/black-forest-labs/FLUX.1-dev/resolve/main/"
HF_FLUX_SCHNELL = "https://huggingface.co/black-forest-labs/FLUX.1-schnell/resolve/main/"
HF_TEXT = "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/"
ARCFACE_URL = "https://github.com/xinntao/facexlib/releases/download/v0.1.0/recognition_arcface_ir_se50.pth"
HF_KLEIN = "https://huggingface.co/Comfy-Org/flux2-klein/resolve/main/split_files/"
HF_FLUX2_VAE = "https://huggingface.co/Comfy-Org/flux2-dev/resolve/main/split_files/vae/flux2-vae.safetensors"
TRAIN_YOUR_OWN = ("no download exists: train one, see README (FLUX.2 [klein]: train your own InfuseNet), and export "
                  "it into infiniteyou/flux2_klein_4b/")
"""What the doctor says for a FLUX.2 InfuseNet: no one publishes one, the user trains it."""
ANTELOPE_URL = "https://github.com/deepinsight/insightface/releases/download/v0.7/antelopev2.zip"
ANTELOPE_DIR = "insightface/models/antelopev2"
GATED_NOTE = ("gated on Hugging Face: accept the licence on the model page, create a token, then "
              "`export HF_TOKEN=...` before running the line")

STATUS_OK, STATUS_MISSING, STATUS_BROKEN, STATUS_REFUSED, STATUS_MISPLACED = (
    "ok", "missing", "broken", "refused", "misplaced")


@dataclass(frozen=True)
class ModelSpec:
    """One file the pack can use, as the official download pages lay it out."""

    key: str
    title: str
    role: str        # infusenet | projection | detector | face_onnx | arcface | flux | vae | text_encoder
    folders: tuple[str, ...]  # ComfyUI folder names searched, in order (the first is where it goes)
    name: str        # path under the folder, "/"-separated
    group: str       # entries of one group are alternatives: one usable file satisfies it
    need: str        # "required" | "optional"
    url: str
    page: str = ""
    note: str = ""
    gated: bool = False
    archive: str = ""  # the zip this file comes in (antelopev2)

    @property
    def trained_by_you(self) -> bool:
        """No download exists (url empty): the file comes out of the pack's trainer."""
        return not self.url


def _infu(key, title, role, name, group, need="required", note=""):
    variant = name.split("/")[0]
    return ModelSpec(key, title, role, ("infiniteyou",), name, group, need, HF_INFU + name, HF_INFU_PAGE + variant, note)


def _antelope(file, title, role, need):
    return ModelSpec("antelopev2/" + file, title, role, ("insightface",), "models/antelopev2/" + file, "detector"
                     if role == "detector" else "antelopev2_other", need, ANTELOPE_URL,
                     "https://github.com/deepinsight/insightface/releases/tag/v0.7",
                     "comes in antelopev2.zip; the .onnx files go directly into insightface/models/antelopev2/",
                     archive=ANTELOPE_URL)


SPECS: tuple[ModelSpec, ...] = (
    _infu("infusenet_aes_bf16", "InfuseNet aes_stage2 (bf16)", "infusenet", "aes_stage2/infusenet_aes_bf16.safetensors",
          "infusenet", note="better text alignment and aesthetics; 24 GB+ GPUs"),
    _infu("infusenet_aes_fp8", "InfuseNet aes_stage2 (fp8, low VRAM)", "infusenet",
          "aes_stage2/infusenet_aes_fp8e4m3fn.safetensors", "infusenet", note="half the memory of bf16"),
    _infu("projection_aes", "Identity projection aes_stage2", "projection", "aes_stage2/image_proj_model.bin",
          "projection", note="goes beside the aes_stage2 InfuseNet"),
    _infu("infusenet_sim_bf16", "InfuseNet sim_stage1 (bf16)", "infusenet", "sim_stage1/infusenet_sim_bf16.safetensors",
          "infusenet_sim", "optional", "higher identity similarity"),
    _infu("projection_sim", "Identity projection sim_stage1", "projection", "sim_stage1/image_proj_model.bin",
          "projection_sim", "optional", "goes beside the sim_stage1 InfuseNet"),
    _antelope("scrfd_10g_bnkps.onnx", "Face detector SCRFD (antelopev2)", "detector", "required"),
    _antelope("glintr100.onnx", "antelopev2 recogniser (not used for the identity)", "face_onnx", "optional"),
    _antelope("1k3d68.onnx", "antelopev2 3D landmarks", "face_onnx", "optional"),
    _antelope("2d106det.onnx", "antelopev2 2D landmarks", "face_onnx", "optional"),
    _antelope("genderage.onnx", "antelopev2 gender/age", "face_onnx", "optional"),
    ModelSpec("arcface", "ArcFace IR-SE50 (identity embedding)", "arcface", ("insightface", "facexlib"),
              "recognition_arcface_ir_se50.pth", "arcface", "required", ARCFACE_URL,
              "https://github.com/xinntao/facexlib/releases/tag/v0.1.0",
              "the projection was trained on this ArcFace, not glintr100"),
    ModelSpec("flux_dev", "FLUX.1-dev", "flux", ("diffusion_models",), "flux1-dev.safetensors", "flux", "required",
              HF_FLUX_DEV + "flux1-dev.safetensors", "https://huggingface.co/black-forest-labs/FLUX.1-dev",
              "workflows 01-04, 06, 07", gated=True),
    ModelSpec("flux_schnell", "FLUX.1-schnell", "flux", ("diffusion_models",), "flux1-schnell.safetensors", "flux_schnell",
              "optional", HF_FLUX_SCHNELL + "flux1-schnell.safetensors",
              "https://huggingface.co/black-forest-labs/FLUX.1-schnell", "workflow 05 (fast)"),
    ModelSpec("vae", "FLUX VAE", "vae", ("vae",), "ae.safetensors", "vae", "required", HF_FLUX_DEV + "ae.safetensors",
              "https://huggingface.co/black-forest-labs/FLUX.1-dev", gated=True),
    ModelSpec("clip_l", "CLIP-L text encoder", "text_encoder", ("text_encoders",), "clip_l.safetensors", "clip_l",
              "required", HF_TEXT + "clip_l.safetensors", "https://huggingface.co/comfyanonymous/flux_text_encoders"),
    ModelSpec("t5_fp16", "T5-XXL text encoder (fp16)", "text_encoder", ("text_encoders",), "t5xxl_fp16.safetensors", "t5",
              "required", HF_TEXT + "t5xxl_fp16.safetensors", "https://huggingface.co/comfyanonymous/flux_text_encoders"),
    ModelSpec("t5_fp8", "T5-XXL text encoder (fp8, low VRAM)", "text_encoder", ("text_encoders",),
              "t5xxl_fp8_e4m3fn.safetensors", "t5", "required", HF_TEXT + "t5xxl_fp8_e4m3fn.safetensors",
              "https://huggingface.co/comfyanonymous/flux_text_encoders", "workflow 06 (low VRAM)"),
    ModelSpec("flux2_klein_4b", "FLUX.2 [klein] 4B", "flux", ("diffusion_models",), "flux-2-klein-4b.safetensors",
              "flux2_klein", "optional", HF_KLEIN + "diffusion_models/flux-2-klein-4b.safetensors",
              "https://huggingface.co/Comfy-Org/flux2-klein", "workflow 15; Apache-2.0; needs ComfyUI 0.30 or newer"),
    ModelSpec("qwen3_4b", "Qwen3-4B text encoder (FLUX.2 [klein] 4B)", "text_encoder", ("text_encoders",),
              "qwen_3_4b.safetensors", "flux2_text", "optional", HF_KLEIN + "text_encoders/qwen_3_4b.safetensors",
              "https://huggingface.co/Comfy-Org/flux2-klein", "workflow 15 (Load CLIP, type flux2)"),
    ModelSpec("flux2_vae", "FLUX.2 VAE", "vae", ("vae",), "flux2-vae.safetensors", "flux2_vae", "optional",
              HF_FLUX2_VAE, "https://huggingface.co/Comfy-Org/flux2-dev", "workflow 15"),
    ModelSpec("infusenet_flux2_klein_4b", "Your InfuseNet for FLUX.2 [klein] 4B", "infusenet", ("infiniteyou",),
              "flux2_klein_4b/InfuseNetModel", "infusenet_flux2", "optional", "", "", TRAIN_YOUR_OWN),
    ModelSpec("projection_flux2_klein_4b", "Identity projection of your FLUX.2 [klein] InfuseNet", "projection",
              ("infiniteyou",), "flux2_klein_4b/image_proj_model.bin", "projection_flux2", "optional", "", "",
              TRAIN_YOUR_OWN),
)
SPECS_BY_KEY = {s.key: s for s in SPECS}

GROUP_TITLES = {
    "infusenet": "InfuseNet (one of bf16 / fp8)", "projection": "Identity projection", "detector": "Face detector",
    "arcface": "ArcFace", "flux": "FLUX.1-dev", "vae": "VAE", "clip_l": "CLIP-L", "t5": "T5-XXL (fp16 or fp8)",
    "infusenet_sim": "sim_stage1 InfuseNet (optional)", "projection_sim": "sim_stage1 projection (optional)",
    "antelopev2_other": "other antelopev2 files (optional)", "flux_schnell": "FLUX.1-schnell (optional)",
    "flux2_klein": "FLUX.2 [klein] 4B (optional, workflow 15)", "flux2_text": "Qwen3-4B (optional, workflow 15)",
    "flux2_vae": "FLUX.2 VAE (optional, workflow 15)",
    "infusenet_flux2": "your FLUX.2 [klein] InfuseNet (optional, trained by you)",
    "projection_flux2": "its identity projection (optional, trained by you)",
    "extra": "other files found",
}


class UnsafePath(ValueError):
    """A requested name leaves the model folders (``..``, an absolute path, an encoded separator)."""


# ---------------------------------------------------------------------------------------------
# Where things are: folders, and paths shown relative to ComfyUI's models folder
def folder_roots(folder: str) -> list[Path]:
    return [Path(p) for p in host.model_folder_paths(folder)]


def shown_path(path: Path) -> str:
    """``path`` relative to ComfyUI's models folder, "/"-separated; a folder registered elsewhere (extra
    model paths) is named by its ComfyUI folder name and position, never by its absolute path."""
    models = os.path.normpath(host.models_dir())
    norm = os.path.normpath(str(path))
    if norm == models or norm.startswith(models + os.sep):
        return os.path.relpath(norm, models).replace(os.sep, "/")
    for folder in ("infiniteyou", "insightface", "facexlib", "diffusion_models", "vae", "text_encoders"):
        for i, root in enumerate(folder_roots(folder)):
            r = os.path.normpath(str(root))
            if norm == r or norm.startswith(r + os.sep):
                rest = os.path.relpath(norm, r).replace(os.sep, "/")
                return f"[{folder} folder {i + 1}]/{rest}"
    return f"[outside the model folders]/{os.path.basename(norm)}"


def safe_relative(name: str) -> str:
    """``name`` as a relative "/"-path that cannot leave a folder, or UnsafePath."""
    if not isinstance(name, str) or not name or len(name) > 512:
        raise UnsafePath("empty or overlong name")
    if "\x00" in name or "%" in name or "\\" in name:
        raise UnsafePath("encoded characters, backslashes or NUL are not allowed in a model name")
    if name.startswith(("/", "~")) or re.match(r"^[A-Za-z]:", name) or os.path.isabs(name):
        raise UnsafePath("absolute paths are not allowed; give a path relative to ComfyUI's models folder")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise UnsafePath("'..', '.' and empty path segments are not allowed")
    return name


# ---------------------------------------------------------------------------------------------
# Checks (no model is built; results are cached per file size and modification time)
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
        check = _CHECKS[role](path)
    except Exception as exc:  # a check never takes the server down
        check = Check(STATUS_BROKEN, f"could not be checked ({type(exc).__name__}: {str(exc)[:200]})")
    with _CACHE_LOCK:
        _CACHE[key] = (stamp, check)
        _CACHE.move_to_end(key)
        while len(_CACHE) > CHECKS_KEPT:
            _CACHE.popitem(last=False)
    return check


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


def _precision(header: dict) -> str:
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


def _block_count(keys, pattern: str) -> int:
    rx = re.compile(pattern)
    found = {int(m.group(1)) for k in keys if (m := rx.match(k))}
    return max(found) + 1 if found else 0


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


def check_infusenet(path: Path) -> Check:
    from .weights import guess_variant

    headers, err = _infusenet_headers(path)
    if not headers:
        return Check(STATUS_BROKEN, err)
    merged = {k: v for h in headers for k, v in h.items()}
    keys = list(merged)
    keys = [k.split(".", 1)[1] if k.startswith(("infusenet.", "controlnet.", "model.", "module.")) else k for k in keys]
    if not any(k.startswith(("controlnet_blocks.", "controlnet_single_blocks.", "controlnet_x_embedder")) for k in keys):
        return Check(STATUS_BROKEN, f"not an InfuseNet: its {len(keys)} tensors have no controlnet_* keys "
                                    f"(e.g. {', '.join(sorted(keys)[:3])}); another model was saved under this name")
    double = _block_count(keys, r"(?:transformer_blocks|double_blocks)\.(\d+)\.")
    single = _block_count(keys, r"(?:single_transformer_blocks|single_blocks)\.(\d+)\.")
    width = merged.get("x_embedder.weight", merged.get("img_in.weight", {})).get("shape", [0])[0]
    base = "flux2" if "double_stream_modulation_img.lin.weight" in keys else "flux1"
    info = {"variant": guess_variant(str(path)), "precision": _precision(merged), "double_blocks": double,
            "single_blocks": single, "hidden_size": width, "tensors": len(keys), "base": base}
    if base == "flux2":  # the layout COMMON to the FLUX.2 loader and exporter: global modulation, 128-wide latent
        detail = f"FLUX.2 [klein] InfuseNet · {info['precision']} · {double} double + {single} single blocks"
        detail += f" · for a {width}-wide base (klein 4B: 3072, 9B: 4096)"
        return Check(STATUS_OK, detail, info)
    detail = f"{info['variant']} · {info['precision']} · {double} double + {single} single blocks"
    if width and width != 3072:  # usable only with a base of the same width (Apply checks that)
        detail += f" · for a {width}-wide base, not FLUX.1 (3072)"
    return Check(STATUS_OK, detail, info)


def _torch_tensors(path: Path) -> tuple[dict | None, Check | None]:
    """Tensors of a pickle, read with ``weights_only`` (no code runs); a refusal or failure as a Check."""
    import pickle

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


def check_projection(path: Path) -> Check:
    if path.suffix.lower() in (".safetensors", ".sft"):
        header, err = read_safetensors_header(path)
        if header is None:
            return Check(STATUS_BROKEN, err)
        shapes = {k.removeprefix("image_proj."): v.get("shape") for k, v in header.items()}
    else:
        obj, refused = _torch_tensors(path)
        if refused:
            return refused
        sd = obj.get("image_proj", obj)
        shapes = {k.removeprefix("image_proj."): list(getattr(v, "shape", [])) for k, v in sd.items()} \
            if isinstance(sd, dict) else {}
    needed = ("latents", "proj_in.weight", "proj_out.weight", "norm_out.weight")
    missing = [k for k in needed if k not in shapes]
    if missing:
        return Check(STATUS_BROKEN, f"not an InfiniteYou identity projection: {', '.join(missing)} missing "
                                    f"(found e.g. {', '.join(sorted(shapes)[:3]) or 'nothing'})")
    tokens = int(shapes["latents"][1]) if len(shapes["latents"]) == 3 else 0
    return Check(STATUS_OK, f"{tokens} identity tokens", {"tokens": tokens})


def check_arcface(path: Path) -> Check:
    if path.suffix.lower() in (".safetensors", ".sft"):
        header, err = read_safetensors_header(path)
        if header is None:
            return Check(STATUS_BROKEN, err)
        keys = set(header)
    else:
        obj, refused = _torch_tensors(path)
        if refused:
            return refused
        keys = {k.removeprefix("module.") for k in obj}
    needed = ("input_layer.0.weight", "output_layer.3.weight", "body.23.res_layer.1.weight")
    if not all(k in keys for k in needed):
        hint = " (it looks like the InfiniteYou projection)" if "image_proj" in keys or "latents" in keys else ""
        return Check(STATUS_BROKEN, f"not the IR-SE50 ArcFace: {len(keys)} tensors without {needed[0]} / "
                                    f"{needed[1]}{hint}")
    return Check(STATUS_OK, f"IR-SE50, {len(keys)} tensors", {"tensors": len(keys)})


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
    import onnx

    size = path.stat().st_size
    if size == 0:
        return Check(STATUS_BROKEN, "empty (0 bytes): the download did not complete")
    with open(path, "rb") as f:
        if f.read(256).lstrip()[:1] in (b"<", b"{"):
            return Check(STATUS_BROKEN, "a web page or text, not an ONNX model (INVALID_PROTOBUF)")
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:
        return Check(STATUS_BROKEN, f"not a valid ONNX model (INVALID_PROTOBUF, {type(exc).__name__}): truncated or corrupt")
    kind = _onnx_kind(model)
    info = {"kind": kind, "inputs": len(model.graph.input), "outputs": len(model.graph.output)}
    wanted = EXPECTED_ONNX_KIND.get(path.name)
    if wanted and kind != wanted:
        return Check(STATUS_BROKEN, f"an ONNX {kind} model ({info['outputs']} outputs), expected the {wanted}: "
                                    "another model was saved under this name", info)
    return Check(STATUS_OK, f"ONNX {kind}, {info['outputs']} outputs", info)


def check_generic(path: Path) -> Check:
    if path.suffix.lower() in (".safetensors", ".sft"):
        header, err = read_safetensors_header(path)
        if header is None:
            return Check(STATUS_BROKEN, err)
        precision = _precision(header)
        return Check(STATUS_OK, f"{len(header)} tensors, {precision}", {"tensors": len(header), "precision": precision})
    return Check(STATUS_OK, "present (not checked)")


_CHECKS = {"infusenet": check_infusenet, "projection": check_projection, "arcface": check_arcface,
           "detector": check_onnx, "face_onnx": check_onnx, "flux": check_generic, "vae": check_generic,
           "text_encoder": check_generic}


# ---------------------------------------------------------------------------------------------
# Fixes: link, folder, one shell line (run in ComfyUI's models folder)
def fix_for(spec: ModelSpec, status: str = STATUS_MISSING, found: str | None = None) -> dict:
    target = f"{spec.folders[0]}/{spec.name}"
    folder = target.rsplit("/", 1)[0]
    if spec.trained_by_you:
        shell = f"rm -r {shlex.quote(found)}" if status == STATUS_REFUSED and found else ""
        what = f"No download exists: train it (README, FLUX.2 [klein]: train your own InfuseNet) and export it into {folder}/"
        return {"url": "", "page": "", "folder": folder + "/", "target": target, "shell": shell, "what": what,
                "note": spec.note}
    auth = '-H "Authorization: Bearer $HF_TOKEN" ' if spec.gated else ""
    if spec.archive:
        zip_path = "insightface/models/antelopev2.zip"
        shell = (f"mkdir -p {ANTELOPE_DIR} && curl -L --fail -o {zip_path} {spec.archive} && "
                 f"unzip -o -j {zip_path} '*.onnx' -d {ANTELOPE_DIR} && rm {zip_path}")
        what = f"Download antelopev2.zip and unzip its .onnx files directly into {ANTELOPE_DIR}/"
    else:
        shell = f"mkdir -p {shlex.quote(folder)} && curl -L --fail {auth}-o {shlex.quote(target)} {spec.url}"
        what = f"Download {spec.name.rsplit('/', 1)[-1]} into {folder}/"
    if status == STATUS_REFUSED and found:
        shell = f"rm {shlex.quote(found)} && " + shell
        what = f"Delete {found} (it could run code) and download the official file into {folder}/"
    elif status == STATUS_BROKEN:
        what = "Replace it: " + what[0].lower() + what[1:]
    return {"url": spec.url, "page": spec.page, "folder": folder + "/", "target": target, "shell": shell,
            "what": what, "note": GATED_NOTE if spec.gated else spec.note}


def _nested_antelope(roots: list[Path], file: str) -> Path | None:
    for root in roots:
        for nested in (root / "models" / "antelopev2" / "antelopev2" / file, root / "antelopev2" / file):
            if nested.is_file():
                return nested
    return None


# ---------------------------------------------------------------------------------------------
# The inventory
def locate(spec: ModelSpec) -> Path | None:
    for folder in spec.folders:
        for root in folder_roots(folder):
            for candidate in (root / spec.name, root / "models" / spec.name) if spec.role == "arcface" else (root / spec.name,):
                if candidate.exists():
                    return candidate
    return None


def report_spec(spec: ModelSpec) -> dict:
    path = locate(spec)
    entry = {"key": spec.key, "title": spec.title, "role": spec.role, "group": spec.group, "need": spec.need,
             "expected": f"{spec.folders[0]}/{spec.name}", "found": None, "size": None, "note": spec.note}
    if path is None:
        check = Check(STATUS_MISSING, "not found in " + ", ".join(f"{f}/" for f in spec.folders))
        if spec.role in ("detector", "face_onnx"):
            nested = _nested_antelope(folder_roots("insightface"), spec.name.rsplit("/", 1)[-1])
            if nested is not None:
                check = Check(STATUS_MISPLACED, f"found one folder too deep at {shown_path(nested)}")
                entry["found"] = shown_path(nested)
                entry["fix"] = {"what": f"Move the files up into {ANTELOPE_DIR}/", "folder": ANTELOPE_DIR + "/",
                                "shell": f"mv {shlex.quote(shown_path(nested.parent))}/* {ANTELOPE_DIR}/ && "
                                         f"rmdir {shlex.quote(shown_path(nested.parent))}",
                                "url": spec.url, "page": spec.page, "target": entry["expected"], "note": ""}
    else:
        check = check_file(path, spec.role)
        entry["found"] = shown_path(path)
        entry["size"] = _size(path)
    entry.update(status=check.status, detail=check.detail, info=check.info)
    if check.status != STATUS_OK and "fix" not in entry:
        entry["fix"] = fix_for(spec, check.status, entry["found"])
    return entry


MODEL_FILE_SUFFIXES = (".safetensors", ".sft", ".bin", ".pt", ".pth", ".onnx", ".json")
"""What a loader of the pack (or of ComfyUI, for FLUX, CLIP and VAE) accepts: only such files are reported."""


def model_file_ok(path: Path) -> bool:
    """Whether the doctor may report on the file ``path``: a regular file whose name, and the name of the
    file a link leads to, end in :data:`MODEL_FILE_SUFFIXES`. A link is followed only that far: a link to
    ``/etc/passwd`` or to a folder outside is never described, not even by its size."""
    if not str(path).lower().endswith(MODEL_FILE_SUFFIXES):
        return False
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):  # a dangling link, a loop of links
        return False
    return target.is_file() and target.name.lower().endswith(MODEL_FILE_SUFFIXES)


def model_folder_ok(root: Path, path: Path) -> bool:
    """Whether the doctor may report on the folder ``path`` under ``root``: one that really lies inside
    ``root``, or an ``InfuseNetModel`` folder (which a loader accepts) wherever a link leads."""
    if path.name == "InfuseNetModel":
        return True
    try:
        real, base = path.resolve(strict=True), root.resolve(strict=True)
    except (OSError, RuntimeError):
        return False
    return real == base or base in real.parents


def _size(path: Path) -> int:
    """Bytes of a model file, or of the model files in a folder (links to folders are not walked)."""
    if path.is_dir():
        total = 0
        for dirpath, _, filenames in os.walk(path):  # followlinks=False: a linked folder is not entered
            total += sum((Path(dirpath) / n).stat().st_size for n in filenames if model_file_ok(Path(dirpath) / n))
        return total
    return path.stat().st_size


def extra_files() -> list[tuple[Path, str]]:
    """InfuseNets and projections in the InfiniteYou folders that the official table does not name."""
    known = {os.path.normpath(str(root / s.name)) for s in SPECS for f in s.folders for root in folder_roots(f)}
    found: list[tuple[Path, str]] = []

    def listed(path: Path) -> bool:
        return os.path.normpath(str(path)) in known
    for root in folder_roots("infiniteyou"):
        if not root.is_dir():
            continue
        # Links to folders are not walked (a link to / would list the whole disk); files in them still load,
        # and ``?file=`` reports on one by name. A link to a file counts only when it leads to a model file.
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames.sort()
            here = Path(dirpath)
            filenames = [n for n in filenames if model_file_ok(here / n)]
            if here.name == "InfuseNetModel":
                if not listed(here):
                    found.append((here, "infusenet"))
                dirnames[:] = []
                continue
            found.extend((here / d, "infusenet") for d in dirnames  # a linked InfuseNetModel folder loads too
                         if d == "InfuseNetModel" and (here / d).is_symlink() and (here / d).is_dir()
                         and not listed(here / d))
            for name in sorted(filenames):
                p = here / name
                if os.path.normpath(str(p)) in known:
                    continue
                low = name.lower()
                if any(t in low for t in ("image_proj", "resampler", "id_proj")) and low.endswith(
                        (".bin", ".pt", ".pth", ".safetensors", ".sft")):
                    found.append((p, "projection"))
                elif low.endswith((".safetensors", ".sft")):
                    found.append((p, "infusenet"))
            if len(found) > 200:
                break
    return found


def inventory() -> dict:
    """Every file of :data:`SPECS` and every other InfuseNet/projection found, checked, with fixes."""
    entries = [report_spec(s) for s in SPECS]
    for path, role in extra_files():
        check = check_file(path, role)
        entry = {"key": "extra:" + shown_path(path), "title": ("InfuseNet" if role == "infusenet" else "Identity projection")
                 + " (found)", "role": role, "group": "extra", "need": "optional", "expected": shown_path(path),
                 "found": shown_path(path), "size": _size(path), "note": "", "status": check.status,
                 "detail": check.detail, "info": check.info}
        if check.status == STATUS_REFUSED:
            entry["fix"] = {"what": f"Delete {entry['found']}: it could run code when loaded",
                            "shell": f"rm {shlex.quote(entry['found'])}", "folder": "", "url": "", "page": "",
                            "target": "", "note": ""}
        elif check.status != STATUS_OK:
            entry["fix"] = {"what": "Delete or replace this file; the official files are listed above",
                            "shell": "", "folder": "", "url": "", "page": "", "target": "", "note": ""}
        entries.append(entry)
    groups = []
    for group in dict.fromkeys(e["group"] for e in entries):
        members = [e for e in entries if e["group"] == group]
        need = "required" if any(e["need"] == "required" for e in members) else "optional"
        groups.append({"group": group, "title": GROUP_TITLES.get(group, group), "need": need,
                       "satisfied": any(e["status"] == STATUS_OK for e in members)})
    missing_required = [g["group"] for g in groups if g["need"] == "required" and not g["satisfied"]]
    fix_lines = []
    for g in missing_required:
        first = next(e for e in entries if e["group"] == g)
        line = first.get("fix", {}).get("shell")
        if line and line not in fix_lines:
            fix_lines.append(line)
    counts = {s: sum(e["status"] == s for e in entries) for s in
              (STATUS_OK, STATUS_MISSING, STATUS_BROKEN, STATUS_REFUSED, STATUS_MISPLACED)}
    return {"ready": not missing_required, "missing_groups": missing_required, "counts": counts,
            "run_in": "ComfyUI's models folder (the one holding diffusion_models/, vae/, text_encoders/)",
            "fix_all": " && ".join(fix_lines), "groups": groups, "entries": entries}


def check_one(name: str) -> dict:
    """The report for one path relative to the models folder (``infiniteyou/aes_stage2/x.safetensors``)."""
    name = safe_relative(name)
    for spec in SPECS:
        if name in {f"{f}/{spec.name}" for f in spec.folders}:
            return report_spec(spec)
    folder, _, rest = name.partition("/")
    if folder not in ("infiniteyou", "insightface", "facexlib", "diffusion_models", "vae", "text_encoders") or not rest:
        raise UnsafePath(f"'{folder}' is not one of the model folders the pack reads")
    for root in folder_roots(folder):
        path = root / rest
        if path.exists():
            if not (model_folder_ok(root, path) if path.is_dir() else model_file_ok(path)):
                return {"key": "file:" + name, "title": rest, "role": "", "group": "extra", "need": "optional",
                        "expected": name, "found": None, "size": None, "note": "", "status": STATUS_REFUSED,
                        "detail": "not a model file (the pack reads only " + ", ".join(MODEL_FILE_SUFFIXES) +
                                  " files); nothing is reported about it", "info": {}}
            role = _role_for(rest)
            check = check_file(path, role)
            return {"key": "file:" + name, "title": rest, "role": role, "group": "extra", "need": "optional",
                    "expected": name, "found": shown_path(path), "size": _size(path), "note": "",
                    "status": check.status, "detail": check.detail, "info": check.info}
    return {"key": "file:" + name, "title": rest, "role": _role_for(rest), "group": "extra", "need": "optional",
            "expected": name, "found": None, "size": None, "note": "", "status": STATUS_MISSING, "detail": "not found",
            "info": {}}


def _role_for(rest: str) -> str:
    low = rest.lower()
    if low.endswith(".onnx"):
        return "face_onnx"
    if "arcface" in low:
        return "arcface"
    if any(t in low for t in ("image_proj", "resampler", "id_proj")):
        return "projection"
    if "infusenet" in low or low.endswith("infusenetmodel"):
        return "infusenet"
    return "flux"


# ---------------------------------------------------------------------------------------------
# For the loaders' validation: one message per problem, each with its fix
def problem_line(entry: dict) -> str:
    fix = entry.get("fix") or {}
    where = entry.get("found") or entry["expected"]
    text = f"{entry['title']}: {entry['status']} ({where}: {entry['detail']})."
    if fix.get("what"):
        text += f" Fix: {fix['what']}"
        if fix.get("url"):
            text += f" from {fix['url']}"
        text += "."
    if fix.get("shell"):
        text += f" In ComfyUI/models run: {fix['shell']}"
    return text


def _spec_for(role: str, name: str | None) -> ModelSpec | None:
    return next((s for s in SPECS if s.role == role and name == s.name), None)


def _missing(title: str, target: str, spec: ModelSpec | None, detail: str = "not found") -> dict:
    """A missing-file entry whose fix puts ``spec``'s official file at ``target`` (relative to models/)."""
    entry = {"title": title, "expected": target, "found": None, "status": STATUS_MISSING, "detail": detail}
    if spec is not None:
        placed = ModelSpec(spec.key, spec.title, spec.role, (target.split("/", 1)[0],), target.split("/", 1)[1],
                           spec.group, spec.need, spec.url, spec.page, spec.note, spec.gated, spec.archive)
        entry["fix"] = fix_for(placed)
    else:
        entry["fix"] = {"what": "choose another file in the node, or download the official one (see the model doctor)"}
    return entry


def infusenet_problems(infusenet_path: Path | None, infusenet_name: str, projection_path: Path | None,
                       projection_name: str | None) -> list[str]:
    """Problems with the files an InfuseNet Loader would read: ``*_name`` as the node shows them (relative to
    the InfiniteYou folders); ``projection_name`` None means "auto" (``image_proj_model.bin`` beside it)."""
    problems = []
    spec = _spec_for("infusenet", infusenet_name)
    if infusenet_path is None or not infusenet_path.exists():
        problems.append(problem_line(_missing(spec.title if spec else "InfuseNet", f"infiniteyou/{infusenet_name}", spec)))
    else:
        check = check_file(infusenet_path, "infusenet")
        if check.status != STATUS_OK:
            problems.append(problem_line(_with_fix(_file_entry(infusenet_path, infusenet_name, "infusenet", check), spec)))
        elif check.info.get("base") == "flux2":
            problems += flux2_host_problems(infusenet_name)
    if projection_name is None:
        low = infusenet_name.lower()
        folder = os.path.dirname(infusenet_name)  # beside the file, or beside the InfuseNetModel folder
        target = "infiniteyou/" + (folder + "/" if folder else "") + "image_proj_model.bin"
        pspec = _spec_for("projection", target.removeprefix("infiniteyou/")) or SPECS_BY_KEY[
            "projection_sim" if "sim" in low else "projection_aes"]
        detail = f"no image_proj_model.bin beside {infusenet_name}"
    else:
        pspec = _spec_for("projection", projection_name)
        target, detail = f"infiniteyou/{projection_name}", "not found"
    if projection_path is None or not projection_path.exists():
        problems.append(problem_line(_missing(pspec.title if pspec else "Identity projection", target, pspec, detail)))
    else:
        check = check_file(projection_path, "projection")
        if check.status != STATUS_OK:
            entry = _file_entry(projection_path, projection_name or "image_proj_model.bin", "projection", check)
            problems.append(problem_line(_with_fix(entry, pspec)))
    return problems


def flux2_host_problems(infusenet_name: str) -> list[str]:
    """A FLUX.2 InfuseNet on a ComfyUI that cannot load FLUX.2 [klein]: refused when the prompt is queued, before
    any model loads, with the running version (UNETLoader would otherwise fail on the base without saying why)."""
    lacks = host.flux2_klein_lacks()
    if lacks is None:
        return []
    return [f"{infusenet_name}: a FLUX.2 [klein] InfuseNet, and {host.host_label()} cannot load FLUX.2 [klein] (it "
            f"lacks {lacks}). Fix: update ComfyUI (0.30.0 runs it), or choose a FLUX.1 InfuseNet."]


def face_problems(pack_dir: Path, arcface_path: Path) -> list[str]:
    """Problems with the antelopev2 detector and the ArcFace file a Face Encoder Loader would read."""
    problems = []
    detector_spec = SPECS_BY_KEY["antelopev2/scrfd_10g_bnkps.onnx"]
    detector = pack_dir / "scrfd_10g_bnkps.onnx"
    if not detector.is_file():
        nested = next((n for n in (pack_dir / pack_dir.name / detector.name, pack_dir / "antelopev2" / detector.name)
                       if n.is_file()), None)
        entry = _file_entry(None, shown_path(detector), "detector")
        entry["title"] = detector_spec.title
        if nested is not None:
            entry.update(status=STATUS_MISPLACED, detail=f"found one folder too deep at {shown_path(nested)}")
            entry["fix"] = {"what": f"Move the files up into {shown_path(pack_dir)}/",
                            "shell": f"mv {shlex.quote(shown_path(nested.parent))}/* {shlex.quote(shown_path(pack_dir))}/"
                                     f" && rmdir {shlex.quote(shown_path(nested.parent))}"}
        else:
            entry["fix"] = fix_for(detector_spec)
        problems.append(problem_line(entry))
    else:
        check = check_file(detector, "detector")
        if check.status != STATUS_OK:
            problems.append(problem_line(_with_fix(_file_entry(detector, shown_path(detector), "detector", check),
                                                   detector_spec)))
    arc_spec = SPECS_BY_KEY["arcface"]
    if not arcface_path.is_file():
        entry = _file_entry(None, arcface_path.name, "arcface")
        entry.update(title=arc_spec.title, fix=fix_for(arc_spec))
        problems.append(problem_line(entry))
    else:
        check = check_file(arcface_path, "arcface")
        if check.status != STATUS_OK:
            problems.append(problem_line(_with_fix(_file_entry(arcface_path, arcface_path.name, "arcface", check), arc_spec)))
    return problems


def _file_entry(path: Path | None, name: str, role: str, check: Check | None = None) -> dict:
    check = check or Check(STATUS_MISSING, "not found")
    return {"title": name, "role": role, "expected": name, "found": shown_path(path) if path else None,
            "status": check.status, "detail": check.detail, "info": check.info}


def _with_fix(entry: dict, spec: ModelSpec | None) -> dict:
    if spec is not None:
        entry["fix"] = fix_for(spec, entry["status"], entry.get("found"))
        entry["title"] = spec.title
    elif entry["status"] == STATUS_REFUSED:
        entry["fix"] = {"what": f"Delete {entry['found']}; use the official image_proj_model.bin", "shell":
                        f"rm {shlex.quote(entry['found'])}"}
    else:
        entry["fix"] = {"what": "choose another file, or download the official one (see the model doctor)"}
    return entry


def infusenet_loader_problems(infusenet_name: str, projection_name: str | None) -> list[str]:
    """What an InfuseNet Loader with these choices would fail on (``projection_name`` None: auto)."""
    from .paths import resolve_model_path
    from .weights import find_projection_file

    def resolve(name: str) -> Path | None:
        try:
            return Path(resolve_model_path(name))
        except FileNotFoundError:
            return None

    path = resolve(infusenet_name)
    if projection_name is None:
        projection = find_projection_file(str(path)) if path is not None else None
        if projection is None and path is None:
            folder = os.path.dirname(infusenet_name)  # beside the file, or beside the InfuseNetModel folder
            projection = resolve((folder + "/" if folder else "") + "image_proj_model.bin")
        projection_path = Path(projection) if projection else None
    else:
        projection_path = resolve(projection_name)
    return infusenet_problems(path, infusenet_name, projection_path, projection_name)


def face_loader_problems(pack_name: str, arcface_name: str) -> list[str]:
    """What a Face Encoder Loader with these choices would fail on."""
    from .face.paths import insightface_roots, resolve_arcface_path

    roots = insightface_roots()
    pack_dir = next((r / "models" / pack_name for r in roots if (r / "models" / pack_name).is_dir()),
                    roots[0] / "models" / pack_name)
    arcface_path, _ = resolve_arcface_path(arcface_name)
    return face_problems(pack_dir, Path(arcface_path))


def validation_message(problems: list[str], node: str) -> str | bool:
    """True, or one message naming the node and listing every problem (numbered), for ``validate_inputs``."""
    if not problems:
        return True
    lines = "\n".join(f"{i + 1}. {p}" for i, p in enumerate(problems))
    return (f"{node}: {len(problems)} model file{'s' if len(problems) > 1 else ''} cannot be used (InfiniteYou model "
            f"doctor: right-click the node, or GET /infiniteyou/models):\n{lines}")
