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
