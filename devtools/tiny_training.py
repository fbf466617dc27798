"""Tiny trainer configurations for the small FLUX pair and a small FLUX.2 [klein]-shaped base (tests and
bench/bench_train.py), and synthetic encoder caches for either."""
from __future__ import annotations


def tiny_shape():
    from infusenet.trainer.config import InfuseNetShape

    return InfuseNetShape(depth=1, depth_single_blocks=2, resampler_dim=64, resampler_depth=1, resampler_heads=1,
                          num_tokens=4)


def tiny_config(cache_dir, out_dir, steps: int, batch: int = 2, **overrides):
    from infusenet.trainer import config as c

    cfg = c.TrainConfig(
        seed=0, shape=tiny_shape(), data=c.DataConfig(cache_dir=str(cache_dir), batch_size=batch),
        optim=c.OptimConfig(lr=1e-3, warmup_steps=2),
        schedule=c.ScheduleConfig(max_steps=steps, log_every=1, progress=False),
        precision=c.PrecisionConfig(mixed="fp32", gradient_checkpointing=False),
        checkpoint=c.CheckpointConfig(output_dir=str(out_dir), every=0, resume=None),
    )
    for key, value in overrides.items():
        section, name = key.split("__")
        setattr(getattr(cfg, section), name, value)
    return cfg


def write_synthetic_cache(root, n: int, resolution: tuple[int, int], text_tokens: int = 77, text_dim: int = 768,
                          seed: int = 0, latent_channels: int = 16, downscale: int = 8, pooled_dim: int | None = 768,
                          kind: str = "spss"):
    """A prepared-cache folder of ``n`` random samples with the shapes ``prepare_cache`` writes at
    ``resolution`` (latent and control [latent_channels, H/downscale, W/downscale], ArcFace [512], context
    [text_tokens, text_dim], pooled [pooled_dim], left out when ``pooled_dim`` is None) and the empty caption,
    for measurements and runs that need no encoders. FLUX.1: the defaults; FLUX.2 [klein]: 128 channels, /16,
    no pooled vector (:func:`write_flux2_cache`). ``kind``: "spss" (stage 1) or "spms" (stage 2) records."""
    import json
    from pathlib import Path

    import torch
    from safetensors.torch import save_file

    root = Path(root)
    (root / "samples").mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    h, w = resolution[0] // downscale, resolution[1] // downscale

    def text() -> dict:
        out = {"context": 0.1 * torch.randn(text_tokens, text_dim, generator=g)}
        if pooled_dim is not None:
            out["pooled"] = 0.1 * torch.randn(pooled_dim, generator=g)
        return out

    entries = []
    for i in range(n):
        save_file({"latent": torch.randn(latent_channels, h, w, generator=g),
                   "control": torch.randn(latent_channels, h, w, generator=g),
                   "embedding": torch.nn.functional.normalize(torch.randn(512, generator=g), dim=0), **text()},
                  str(root / "samples" / f"{i}.safetensors"))
        sample_id = str(i) if kind == "spss" else f"{i // 2}/{i % 2}"
        entries.append({"id": sample_id, "kind": kind, "file": f"samples/{i}.safetensors"})
    save_file(text(), str(root / "empty_text.safetensors"))
    (root / "index.json").write_text(json.dumps({"version": 1, "resolution": list(resolution), "samples": entries}))
    return root


# ---------------------------------------------------------------- FLUX.2 [klein]
FLUX2_TEXT_TOKENS = 8     # shorter than the 512 ComfyUI's FLUX.2 pads to: training must pad as inference does
FLUX2_TEXT_DIM = 48       # the tiny base's text width (klein 4B: 7680)
FLUX2_LATENT_CHANNELS = 128


def write_flux2_cache(root, n: int, resolution: tuple[int, int], seed: int = 0, kind: str = "spss",
                      text_tokens: int = FLUX2_TEXT_TOKENS, text_dim: int | None = None):
    """A synthetic FLUX.2 cache for :func:`flux2_base`: 128-channel latents at /16, text as wide as its text
    features (``text_dim``, default the tiny base's 48), no pooled vector."""
    return write_synthetic_cache(root, n, resolution, text_tokens=text_tokens, text_dim=text_dim or FLUX2_TEXT_DIM,
                                 seed=seed, latent_channels=FLUX2_LATENT_CHANNELS, downscale=16, pooled_dim=None,
                                 kind=kind)


def flux2_base(n_double: int = 2, n_single: int = 3, seed: int = 0, guidance_embed: bool = False,
               text_dim: int | None = None):
    """A tiny FLUX.2 [klein]-shaped ComfyUI model (``model_base.Flux2`` in a ModelPatcher, float32, CPU) with the
    real key layout and random weights (:mod:`devtools.flux2_pair`: hidden 256, 128-channel latents; text
    :data:`FLUX2_TEXT_DIM` wide, or ``text_dim``: 768 takes the small CLIP-L's text). On a ComfyUI whose ``FluxParams`` lack klein's
    fields (0.3.75), the fields it has are kept: it builds the FLUX.2 [dev]-style model that ComfyUI can load,
    which the trainer must refuse."""
    import dataclasses

    import comfy.ldm.flux.model
    import comfy.model_patcher
    import comfy.supported_models
    import torch

    from devtools import flux2_pair as fp2

    fields = {f.name for f in dataclasses.fields(comfy.ldm.flux.model.FluxParams)} | {"image_model"}
    unet_config = {k: v for k, v in fp2.unet_config(n_double, n_single, guidance_embed).items() if k in fields}
    unet_config["context_in_dim"] = text_dim or FLUX2_TEXT_DIM
    config = comfy.supported_models.Flux2(unet_config)
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({}, device=torch.device("cpu"))
    dm = model.diffusion_model
    dm.load_state_dict(fp2.random_state_dict({k: v.shape for k, v in dm.state_dict().items()}, seed), strict=True)
    model.eval()
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def tiny_flux2_shape():
    """A branch for :func:`flux2_base`: 1 double + 2 single blocks, a one-layer Resampler of 4 tokens (token width
    left to the base: its text width)."""
    from infusenet.trainer.config import InfuseNetShape

    return InfuseNetShape(depth=1, depth_single_blocks=2, resampler_dim=64, resampler_depth=1, resampler_heads=1,
                          num_tokens=4)


def tiny_flux2_config(cache_dir, out_dir, steps: int, batch: int = 2, **overrides):
    """:func:`tiny_config` with :func:`tiny_flux2_shape`."""
    cfg = tiny_config(cache_dir, out_dir, steps, batch, **overrides)
    cfg.shape = tiny_flux2_shape()
    return cfg
