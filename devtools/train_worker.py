"""One process of a tiny training run, as ``torchrun`` starts it (or a test that sets RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT itself)::

    python devtools/train_worker.py <cache dir> <output dir> '<settings json>'

settings: ``steps``, ``batch``, ``config`` ({"section__field": value} for :func:`tiny_config`),
``result`` (file name under the output dir), ``base`` ("flux1", the default: the small FLUX pair's base;
"flux2": :func:`devtools.tiny_training.flux2_base` with :func:`tiny_flux2_config`). Rank 0 writes there ``losses``, ``start_step``, ``world_size``,
``params`` (whole trained parameters) and ``ema`` (or None), gathered with ``Trainer.full_modules``;
``sharded`` records whether the branch, projection and base weights were FSDP shards on this run,
``gradient_as_bucket_view`` the DDP setting (None without DDP).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _state(modules) -> dict:
    net, resampler = modules
    return {**{f"infusenet.{k}": v for k, v in net.state_dict().items()},
            **{f"resampler.{k}": v for k, v in resampler.state_dict().items()}}


def main(cache: str, out: str, settings: str) -> None:
    import torch

    torch.set_num_threads(1)
    from devtools.comfy_env import enable_in_process_comfy

    enable_in_process_comfy()
    from torch.distributed.tensor import DTensor

    from devtools import flux_pair as fp
    from devtools.tiny_training import flux2_base, tiny_config, tiny_flux2_config
    from infusenet.trainer.data import CachedDataset
    from infusenet.trainer.loop import Trainer

    s = json.loads(settings)
    if s.get("base", "flux1") == "flux2":
        patcher = flux2_base()
        cfg = tiny_flux2_config(cache, out, steps=s["steps"], batch=s["batch"], **s.get("config", {}))
    else:
        patcher = fp.make_base(2, 2, seed=0, text_dim=768).patcher
        cfg = tiny_config(cache, out, steps=s["steps"], batch=s["batch"], **s.get("config", {}))
    trainer = Trainer(cfg, patcher, CachedDataset(cache))
    try:
        world = trainer.ctx.world_size
        weight = trainer.module.infusenet.double_blocks[0].img_attn.qkv.weight
        base_weight = trainer.base.dm.double_blocks[0].img_attn.qkv.weight
        projection_weight = trainer.module.resampler.layers[0][0].to_q.weight

        def halved(w):
            return isinstance(w, DTensor) and w.to_local().shape[0] == w.shape[0] // world

        sharded = {"branch": halved(weight), "projection": halved(projection_weight), "base": halved(base_weight)}
        result = trainer.run()
        params = trainer.full_modules()  # collectives under FSDP: every rank takes part
        ema = trainer.full_modules(ema=True) if trainer.ema is not None else None
        if trainer.ctx.is_main:
            torch.save({"losses": result.losses, "start_step": result.start_step, "world_size": world,
                        "strategy": trainer.ctx.strategy, "sharded": sharded, "params": _state(params),
                        "gradient_as_bucket_view": getattr(trainer.wrapped, "gradient_as_bucket_view", None),
                        "ema": _state(ema) if ema is not None else None},
                       os.path.join(out, s.get("result", "result.pt")))
    finally:
        trainer.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
