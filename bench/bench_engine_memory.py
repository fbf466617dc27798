"""Memory of the training engine's choices, each measured in its own process (CPU: peak resident
memory above the level before the measured call, ``ru_maxrss``; CUDA: ``max_memory_allocated`` above
the level before it):

* one forward + backward of the trainer's loss on a mid-size FLUX pair, with saved activations copied
  ``all`` (every one) or ``aliased`` (only those the blocks overwrite), gradient checkpointing off
  and on; also the exact bytes the saved-tensor hooks copied and kept;
* one AdamW step over 20 float32 parameters of 4 Mi elements (320 MiB) with gradients, first step (the
  two moments are created) for ``adamw`` (foreach), ``adamw_fused`` and ``adamw_low_memory``.

    .venv/bin/python bench/bench_engine_memory.py
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIB = 2 ** 20


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_above(before: int, cuda: bool) -> float:
    import torch

    if cuda:
        return (torch.cuda.max_memory_allocated() - before) / MIB
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before) / MIB


def activations(copies: str, checkpointing: bool) -> dict:
    sys.path.insert(0, str(ROOT))
    from devtools.comfy_env import enable_in_process_comfy

    enable_in_process_comfy()
    import torch

    torch.set_num_threads(1)
    from devtools import flux_pair as fp
    from devtools.tiny_training import tiny_config
    from infusenet import host
    from infusenet.trainer.blocks import train_blocks
    from infusenet.trainer.config import InfuseNetShape
    from infusenet.trainer.init import init_from_base
    from infusenet.trainer.loop import FrozenBase, TrainableInfuseNet, flow_loss, sample_noise

    base = fp.make_base(2, 4, seed=0, hidden=512, head_dim=64, axes=(16, 24, 24), text_dim=768)
    frozen = FrozenBase(base.patcher)
    device = frozen.load()
    cuda = device.type == "cuda"
    shape = InfuseNetShape(depth=2, depth_single_blocks=4, resampler_dim=64, resampler_depth=1, resampler_heads=1,
                           num_tokens=4)
    net, resampler = init_from_base(frozen.dm, shape)
    module = TrainableInfuseNet(net, resampler, frozen).to(device)
    stats = train_blocks([*net.double_blocks, *net.single_blocks, *frozen.dm.double_blocks, *frozen.dm.single_blocks],
                         checkpointing, copies)
    g = torch.Generator().manual_seed(0)
    b, h = 4, 32  # 4 samples of 256x256: 32x32 latents, 256 image tokens
    batch = {"latent": torch.randn(b, 16, h, h, generator=g), "control": torch.randn(b, 16, h, h, generator=g),
             "embedding": torch.nn.functional.normalize(torch.randn(b, 512, generator=g), dim=1),
             "context": 0.1 * torch.randn(b, 77, 768, generator=g), "pooled": 0.1 * torch.randn(b, 768, generator=g)}
    sigmas, noise = sample_noise(list(range(b)), (16, h, h), (h // 2) ** 2,
                                 tiny_config(ROOT, ROOT, 1).timesteps, 0)
    before = torch.cuda.memory_allocated() if cuda else _rss()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with host.training_mode():
        flow_loss(module, frozen, batch, sigmas, noise, 1.0).backward()
    return {"what": f"forward+backward, copies {copies}, checkpointing {'on' if checkpointing else 'off'}",
            "peak_mib": _peak_above(before, cuda), "copied_mib": stats.copied_bytes / MIB,
            "kept_mib": stats.kept_bytes / MIB, "device": str(device)}


def optimizer(variant: str) -> dict:
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(1)
    from infusenet.trainer.config import OptimConfig
    from infusenet.trainer.optim import make_optimizer

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(2048, 2048, generator=g).to(device)) for _ in range(20)]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g).to(device)
    opt = make_optimizer(params, OptimConfig(lr=1e-4, optimizer=variant), device)
    cuda = device.type == "cuda"
    before = torch.cuda.memory_allocated() if cuda else _rss()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    opt.step()
    size = sum(p.numel() * p.element_size() for p in params) / MIB
    return {"what": f"AdamW step, {variant}", "peak_mib": _peak_above(before, cuda), "params_mib": size,
            "device": str(device)}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        kind, *args = sys.argv[2:]
        r = activations(args[0], args[1] == "on") if kind == "activations" else optimizer(args[0])
        print(json.dumps(r))
        return
    jobs = [("activations", c, k) for k in ("off", "on") for c in ("all", "aliased")]
    jobs += [("optimizer", v) for v in ("adamw", "adamw_fused", "adamw_low_memory")]
    for job in jobs:
        out = subprocess.run([sys.executable, __file__, "--one", *job], capture_output=True, text=True, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        if out.returncode or not lines:
            raise SystemExit(out.stderr[-3000:])
        r = json.loads(lines[-1])
        extra = (f", hooks copied {r['copied_mib']:.1f} MiB, kept {r['kept_mib']:.1f} MiB uncopied (counted once per "
                 "save: a tensor saved by two operations counts twice)" if "copied_mib" in r
                 else f", parameters {r['params_mib']:.0f} MiB")
        print(f"{r['what']}: peak {r['peak_mib']:.0f} MiB above the start{extra} ({r['device']})")


if __name__ == "__main__":
    main()
