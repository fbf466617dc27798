"""city96's ComfyUI-GGUF in a test ComfyUI, and small FLUX files written as GGUF for its loader.

The pack is project test data (``../shared/hosts/ComfyUI-GGUF-795e451.tar.gz``, Apache-2.0; override
with ``INFU_COMFYUI_GGUF``); its one requirement is the ``gguf`` package from the package index.
:func:`write_flux_gguf` quantises a FLUX state dict the way the pack's ``tools/convert.py`` does
(``general.architecture = "flux"``; 1-D and tiny tensors kept F32; every other tensor in the chosen
type, F16 where the type cannot hold its row length), so ``UnetLoaderGGUF`` reads it as it reads the
files people download.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import tarfile
from pathlib import Path

import numpy as np
import torch

from devtools.comfy_env import PACK_ROOT

PACK_TARBALL = PACK_ROOT.parent / "shared" / "hosts" / "ComfyUI-GGUF-795e451.tar.gz"
PACK_FOLDER = "ComfyUI-GGUF"
QUANTIZATION_THRESHOLD = 1024  # tensors with at most this many elements stay F32 (as tools/convert.py)
GGUF_NODES = ("UnetLoaderGGUF", "UnetLoaderGGUFAdvanced", "CLIPLoaderGGUF")


def pack_tarball() -> Path:
    path = Path(os.environ.get("INFU_COMFYUI_GGUF", PACK_TARBALL))
    if not path.is_file():
        raise FileNotFoundError(
            f"ComfyUI-GGUF test data not found at {path}: it ships in ../shared/hosts/ beside this checkout "
            "(set INFU_COMFYUI_GGUF to the tarball).")
    return path


def install_comfyui_gguf(custom_nodes: Path) -> Path:
    """Unpack ComfyUI-GGUF into ``custom_nodes/`` (a test server's base folder); returns its folder."""
    target = Path(custom_nodes) / PACK_FOLDER
    if (target / "__init__.py").is_file():
        return target
    Path(custom_nodes).mkdir(parents=True, exist_ok=True)
    with tarfile.open(pack_tarball()) as tar:
        members = [m for m in tar.getmembers() if m.name.split("/")[0] == PACK_FOLDER and not m.issym() and not m.islnk()]
        tar.extractall(custom_nodes, members=members)
    return target


@contextlib.contextmanager
def comfyui_nodes_module():
    """``import nodes`` gives ComfyUI's nodes.py while the block runs, as inside a ComfyUI server (in a test
    process this pack's own ``nodes`` package may hold that name)."""
    from devtools.comfy_env import comfyui_dir

    current = sys.modules.get("nodes")
    comfy_nodes = comfyui_dir() / "nodes.py"
    if current is not None and Path(getattr(current, "__file__", "") or "").resolve() == comfy_nodes.resolve():
        yield
        return
    spec = importlib.util.spec_from_file_location("nodes", comfy_nodes)
    module = importlib.util.module_from_spec(spec)
    sys.modules["nodes"] = module
    try:
        spec.loader.exec_module(module)
        yield
    finally:
        if current is not None:
            sys.modules["nodes"] = current
        else:
            sys.modules.pop("nodes", None)


def import_comfyui_gguf(folder: Path):
    """The unpacked pack imported in this process (ComfyUI importable already), as ComfyUI imports it:
    a package named after its folder. Returns the package; its ``nodes``, ``loader``, ``dequant``
    modules are attributes."""
    name = "ComfyUI_GGUF_under_test"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(folder) / "__init__.py",
                                                      submodule_search_locations=[str(folder)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        with comfyui_nodes_module():
            spec.loader.exec_module(module)
    package = sys.modules[name]
    for sub in ("nodes", "loader", "dequant", "ops"):
        setattr(package, sub, importlib.import_module(f"{name}.{sub}"))
    return package


def qtype(name: str):
    import gguf

    return gguf.GGMLQuantizationType[name]


def quantise_tensor(key: str, value: torch.Tensor, qtype_name: str):
    """(bytes as numpy, GGML type) for one tensor, with tools/convert.py's choices."""
    import gguf

    data = value.detach().float().numpy()
    kind = qtype(qtype_name)
    if data.ndim <= 1 or data.size <= QUANTIZATION_THRESHOLD:
        kind = gguf.GGMLQuantizationType.F32
    try:
        return gguf.quants.quantize(data, kind), kind
    except (gguf.QuantError, NotImplementedError):
        kind = gguf.GGMLQuantizationType.F16  # row length not a multiple of the type's block
        return gguf.quants.quantize(data, kind), kind


def write_flux_gguf(path: Path, state_dict: dict, qtype_name: str = "Q8_0") -> Path:
    """A FLUX diffusion model as GGUF (``Q8_0``, ``Q4_0``, ``Q4_1``, ``Q5_0``, ``Q5_1``: the types the
    ``gguf`` package can write; K-quants it reads only)."""
    import gguf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(path=None, arch="flux")
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for key, value in state_dict.items():
        data, kind = quantise_tensor(key, value, qtype_name)
        writer.add_tensor(key, data, raw_dtype=kind)
    tmp = path.with_suffix(".partial")
    writer.write_header_to_file(path=str(tmp))
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.rename(path)
    return path


def dequantised_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a GGUF file dequantised to float32 with the ``gguf`` package (independent of
    ComfyUI-GGUF's own torch dequantisation): the reference weights for a GGUF model."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    out = {}
    for t in reader.tensors:
        shape = tuple(int(v) for v in reversed(t.shape))
        values = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
        out[t.name] = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).reshape(shape)
    return out
