"""Tiny trainer configurations for the small FLUX pair (tests and bench/bench_train.py)."""
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
                          seed: int = 0):
    """A prepared-cache folder of ``n`` random samples with the shapes ``prepare_cache`` writes at
    ``resolution`` (latent and control [16, H/8, W/8], ArcFace [512], context [text_tokens, text_dim],
    pooled [768]), for memory and speed measurements that need no encoders."""
    import json
    from pathlib import Path

    import torch
    from safetensors.torch import save_file

    root = Path(root)
    (root / "samples").mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    h, w = resolution[0] // 8, resolution[1] // 8
    entries = []
    for i in range(n):
        save_file({"latent": torch.randn(16, h, w, generator=g), "control": torch.randn(16, h, w, generator=g),
                   "embedding": torch.nn.functional.normalize(torch.randn(512, generator=g), dim=0),
                   "context": 0.1 * torch.randn(text_tokens, text_dim, generator=g),
                   "pooled": 0.1 * torch.randn(768, generator=g)}, str(root / "samples" / f"{i}.safetensors"))
        entries.append({"id": str(i), "kind": "spss", "file": f"samples/{i}.safetensors"})
    (root / "index.json").write_text(json.dumps({"version": 1, "resolution": list(resolution), "samples": entries}))
    return root
