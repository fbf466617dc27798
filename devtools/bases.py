"""The other FLUX.1 bases people run InfiniteYou on, as small generated files for real servers:
GGUF (Q8_0 and 4-bit Q4_0, quantised from the test FLUX.1-dev), FLUX.1 Fill (384 input channels)
and FLUX.1 Kontext (the FLUX.1-dev layout: ComfyUI tells Kontext by its reference latents, not its
keys, so the test file is the dev weights under Kontext's name).

Cached beside the main model set, in ``<cache>/bases/<key>/`` (``INFU_FIXTURE_CACHE``), keyed by
this generator and the model set it quantises; the main set's own cache key is untouched.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from devtools.build_lock import cached_folder
from devtools.comfy_env import PACK_ROOT

GGUF_TYPES = ("Q8_0", "Q4_0")
FLUX_DEV = "flux1-dev.safetensors"
FLUX_FILL = "flux1-fill-dev.safetensors"
FLUX_KONTEXT = "flux1-kontext-dev.safetensors"
WORKFLOW_FILES = ("flux1-dev-Q4_0.gguf", FLUX_FILL, FLUX_KONTEXT)
"""Base files the shipped workflows name that the main small-model set does not have."""
FILL_IN_CHANNELS = 96  # 16 noisy latent + 16 masked-image latent + 64 mask (8x8 pixels per latent pixel)


def gguf_name(kind: str) -> str:
    return f"flux1-dev-{kind}.gguf"


def _key(model_set: Path) -> str:
    digest = hashlib.sha256(str(Path(model_set).resolve()).encode())
    for name in ("bases.py", "comfyui_gguf.py", "host_models.py"):
        digest.update((PACK_ROOT / "devtools" / name).read_bytes())
    return digest.hexdigest()[:12]


LORAS = ("flux1-test-lora-a.safetensors", "flux1-test-lora-b.safetensors")
CONTROLNET = "flux1-test-controlnet-instantx.safetensors"
LORA_TARGETS = ("double_blocks.0.img_attn.proj", "double_blocks.0.txt_mlp.0", "single_blocks.0.linear2",
                "final_layer.linear")


def write_lora(path: Path, config: dict, seed: int, rank: int = 4) -> Path:
    """A FLUX LoRA in the plain ComfyUI layout (``diffusion_model.<layer>.lora_up/lora_down/alpha``)."""
    import torch
    from safetensors.torch import save_file

    from devtools import host_models

    shapes = {k: v.shape for k, v in host_models.flux_state_dict(config, 0, torch.float32).items()}
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for layer in LORA_TARGETS:
        out_f, in_f = shapes[layer + ".weight"]
        sd[f"diffusion_model.{layer}.lora_down.weight"] = (torch.randn(rank, in_f, generator=g) / in_f ** 0.5).to(torch.bfloat16)
        sd[f"diffusion_model.{layer}.lora_up.weight"] = (torch.randn(out_f, rank, generator=g) * 0.5).to(torch.bfloat16)
        sd[f"diffusion_model.{layer}.alpha"] = torch.tensor(float(rank))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path))
    return path


def write_controlnet(path: Path, seed: int = 8) -> Path:
    """A FLUX ControlNet in the InstantX layout (diffusers FluxControlNetModel, latent input), 3072 wide
    with CLIP-L's 768-wide context like the test FLUX, one double block: ControlNetLoader loads it."""
    from devtools import infusenet_files as files

    spec = files.InfuseNetSpec(hidden_size=3072, head_dim=128, num_layers=1, num_single_layers=0,
                               joint_attention_dim=768, axes_dims_rope=(16, 56, 56))
    return Path(files.write_single_file(str(path), files.random_infusenet_state_dict(spec, seed), "bf16"))


def build_bases(models_dir: Path, model_set: Path) -> None:
    """Write the base files into ``models_dir/diffusion_models/`` (and a LoRA pair and a ControlNet
    for the test FLUX, for graphs that combine them)."""
    from safetensors.torch import load_file

    from devtools import comfyui_gguf, host_models

    out = models_dir / "diffusion_models"
    out.mkdir(parents=True, exist_ok=True)
    dev = load_file(str(model_set / "diffusion_models" / FLUX_DEV))
    for kind in GGUF_TYPES:
        comfyui_gguf.write_flux_gguf(out / gguf_name(kind), dev, kind)
    fill = dict(host_models.flux_config(), in_channels=FILL_IN_CHANNELS)
    host_models.write_flux(out / FLUX_FILL, fill, seed=6)
    (out / FLUX_KONTEXT).symlink_to(model_set / "diffusion_models" / FLUX_DEV)
    for i, name in enumerate(LORAS):
        write_lora(models_dir / "loras" / name, host_models.flux_config(), seed=20 + i)
    write_controlnet(models_dir / "controlnet" / CONTROLNET)


def bases_dir(model_set: Path) -> Path:
    """The cached models folder with the base files (built if missing)."""
    cache = Path(os.environ.get("INFU_FIXTURE_CACHE", PACK_ROOT / ".host" / "fixture-cache"))  # as the main set
    root = cache / "bases" / _key(model_set)
    return cached_folder(root, lambda folder: build_bases(folder / "models", Path(model_set))) / "models"


def link_into(base_dir: Path, model_set: Path, bases: Path) -> None:
    """A server's model folders that the bases add to, as real folders holding links to both sets'
    files; the main set's other folders are linked whole afterwards by ``tests.fixtures.model_set.link_models``."""
    for sub in bases.iterdir():
        target = Path(base_dir) / "models" / sub.name
        target.mkdir(parents=True, exist_ok=True)
        for folder in (model_set / sub.name, sub):
            for f in (folder.iterdir() if folder.is_dir() else []):
                link = target / f.name
                if not link.exists() and not link.is_symlink():
                    link.symlink_to(f.resolve())
