"""Training throughput (samples/s) and peak memory of the tiny trainer config, with and without
gradient checkpointing. CPU: peak resident memory of the process (ru_maxrss grows monotonically, so
each mode runs in its own process); CUDA: torch.cuda.max_memory_allocated.

    .venv/bin/python bench/bench_train.py [steps]
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_mode(checkpointing: bool, steps: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from devtools.comfy_env import enable_in_process_comfy

    enable_in_process_comfy()
    import torch
    from safetensors.torch import save_file

    from infusenet.trainer.data import CachedDataset
    from infusenet.trainer.loop import Trainer
    from devtools import flux_pair as fp
    from devtools.tiny_training import tiny_config

    tmp = Path(tempfile.mkdtemp())
    (tmp / "samples").mkdir()
    g = torch.Generator().manual_seed(0)
    entries = []
    for i in range(8):  # synthetic cache of the shapes prepare_cache writes at 128x128
        save_file({"latent": torch.randn(16, 16, 16, generator=g), "control": torch.randn(16, 16, 16, generator=g),
                   "embedding": torch.nn.functional.normalize(torch.randn(512, generator=g), dim=0),
                   "context": 0.1 * torch.randn(77, 768, generator=g), "pooled": 0.1 * torch.randn(768, generator=g)},
                  str(tmp / "samples" / f"{i}.safetensors"))
        entries.append({"id": str(i), "kind": "spss", "file": f"samples/{i}.safetensors"})
    (tmp / "index.json").write_text(json.dumps({"version": 1, "resolution": [128, 128], "samples": entries}))
    base = fp.make_base(4, 8, seed=0, text_dim=768)
    cfg = tiny_config(tmp, tmp / "run", steps=steps + 2, batch=4, precision__gradient_checkpointing=checkpointing)
    cfg.shape.depth, cfg.shape.depth_single_blocks = 2, 4
    trainer = Trainer(cfg, base.patcher, CachedDataset(tmp))
    cuda = trainer.base.device.type == "cuda"
    for _ in range(2):  # warm-up
        trainer.train_step()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    if cuda:
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    trainer.close()
    return {"gradient_checkpointing": checkpointing, "samples_per_s": steps * 4 / dt,
            "peak_mib": peak, "peak_kind": "cuda allocated" if cuda else "process RSS", "device": str(trainer.base.device)}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--mode":
        print(json.dumps(run_mode(sys.argv[2] == "ckpt", int(sys.argv[3]))))
        return
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    for mode in ("plain", "ckpt"):
        out = subprocess.run([sys.executable, __file__, "--mode", mode, str(steps)], capture_output=True, text=True,
                             cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
        if out.returncode or not lines:
            raise SystemExit(out.stderr[-3000:])
        r = json.loads(lines[-1])
        print(f"gradient checkpointing {'on ' if r['gradient_checkpointing'] else 'off'}: "
              f"{r['samples_per_s']:.2f} samples/s, peak {r['peak_mib']:.0f} MiB ({r['peak_kind']}, {r['device']})")


if __name__ == "__main__":
    main()
