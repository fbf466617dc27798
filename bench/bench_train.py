"""Training speed and memory of the CPU test model, one process against DDP and FSDP2 (2 gloo processes
each), and of the FLUX.2 [klein]-shaped CPU test model in one process, side by side, with what the memory
planner predicts; the planner's GiB per GPU for the published bases (FLUX.1-dev, FLUX.2 [klein] 4B and 9B,
each with its licence) on 1, 8 and 16 GPUs; then the data loader rows of ``bench/loader_throughput.py`` when
it is there.

Per run: samples/s over the timed steps (same global batch in every mode), the ratio to one process,
the peak resident memory of each rank during those steps (VmHWM, reset before them), and the rank's
tensor bytes by the planner's terms (weights, gradients, optimiser state, the activation peak of one
step counted as live tensor storages) against :func:`infusenet.trainer.memory.plan_memory`.

    .venv/bin/python bench/bench_train.py [timed_steps]      (default 4; about 3 minutes on 2 cores)
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HIDDEN, DOUBLE, SINGLE = 128, 4, 8          # the base; the branch copies 2 double + 4 single blocks
FLUX2_DOUBLE, FLUX2_SINGLE = 2, 4           # the FLUX.2 test base (hidden 256); its branch copies 1 + 2 blocks
RES, GLOBAL_BATCH, TEXT = (128, 128), 4, 77
MODES = (("one process", "none", 1, "flux1"), ("DDP", "ddp", 2, "flux1"), ("FSDP2", "fsdp", 2, "flux1"),
         ("FLUX.2, one", "none", 1, "flux2"))
PUBLISHED_GPUS = ((1, "1"), (8, "8"), (16, "2x8"))


def _peak_rss_reset() -> None:
    with open("/proc/self/clear_refs", "w") as f:   # resets VmHWM to the current RSS
        f.write("5")


def _peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def worker(strategy: str, cache: str, steps: int, base_kind: str = "flux1") -> None:
    """One rank (torchrun-style environment): warm up, time ``steps`` steps, measure one more."""
    sys.path.insert(0, str(ROOT))
    from devtools.comfy_env import enable_in_process_comfy

    enable_in_process_comfy()
    import torch

    torch.set_num_threads(1)
    from devtools import flux_pair as fp
    from devtools.tiny_training import flux2_base, tiny_config, tiny_flux2_config
    from infusenet.trainer import memory
    from infusenet.trainer.data import CachedDataset
    from infusenet.trainer.loop import Trainer

    settings = dict(steps=steps + 4, batch=GLOBAL_BATCH, precision__gradient_checkpointing=False,
                    distributed__strategy=strategy)
    if base_kind == "flux2":
        patcher = flux2_base(FLUX2_DOUBLE, FLUX2_SINGLE, seed=0)
        cfg = tiny_flux2_config(cache, Path(cache) / f"run-{strategy}", **settings)
    else:
        patcher = fp.make_base(DOUBLE, SINGLE, seed=0, hidden=HIDDEN, text_dim=768).patcher
        cfg = tiny_config(cache, Path(cache) / f"run-{strategy}", **settings)
        cfg.shape.depth, cfg.shape.depth_single_blocks = 2, 4
    trainer = Trainer(cfg, patcher, CachedDataset(cache))
    world = trainer.ctx.world_size
    for _ in range(2):
        trainer.train_step()
    _peak_rss_reset()
    t = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    elapsed = time.perf_counter() - t
    rss = _peak_rss_mib()
    measured = memory.measure_step(trainer)
    text = TEXT if base_kind == "flux1" else 512      # ComfyUI's FLUX.2 pads the text to 512 tokens
    plan = memory.plan_memory(cfg, world, memory.dims_of(patcher, text_tokens=text), device_type="cpu",
                              resolution=RES)
    row = plan.row({"none": "single", "ddp": "ddp", "fsdp": "fsdp"}[strategy]).terms
    trainer.close()
    tensors = (measured.base_weights + measured.trainable_weights + measured.gradients + measured.optimizer
               + measured.activations)
    planned = row.base_weights + row.trainable_weights + row.gradients + row.optimizer + row.activations
    print("RESULT " + json.dumps({
        "rank": int(os.environ.get("RANK", 0)), "samples_per_s": GLOBAL_BATCH * steps / elapsed, "rss_mib": rss,
        "tensors_mib": tensors / 2 ** 20, "planned_mib": planned / 2 ** 20,
        "activations_mib": measured.activations / 2 ** 20, "planned_activations_mib": row.activations / 2 ** 20}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_mode(strategy: str, world: int, cache: str, steps: int, base_kind: str = "flux1") -> list[dict]:
    port = _free_port()
    procs = []
    for rank in range(world):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        if world > 1:
            env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                       MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, __file__, "--worker", strategy, cache, str(steps), base_kind],
                                      cwd=ROOT,
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for p in procs:
        out, err = p.communicate()
        lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
        if p.returncode or not lines:
            raise SystemExit(f"{strategy} rank failed:\n{err[-3000:]}")
        results.append(json.loads(lines[-1][len("RESULT "):]))
    return sorted(results, key=lambda r: r["rank"])


def published_rows() -> list[str]:
    """The planner's GiB per GPU for FLUX.1-dev and FLUX.2 [klein] 4B and 9B with their default InfuseNets (v1.0's
    4 + 10 blocks; the FLUX.2 InfuseNet's 2 + 5), 1024x1024, batch 1 per GPU, default settings (bf16 autocast,
    gradient checkpointing, adamw, no EMA), on 1, 8 and 16 GPUs; whether each fits an 80 GB and a 24 GB card."""
    from devtools.comfy_env import enable_in_process_comfy

    enable_in_process_comfy()
    from infusenet.trainer import memory
    from infusenet.trainer.config import TrainConfig

    lines = [f"{'base':<28}{'licence':<24}{'GPUs':>5}  {'strategy':<30}{'base':>6}{'trained':>9}{'grads':>7}"
             f"{'optim':>7}{'acts':>6}{'total':>7}{'80 GB':>7}{'24 GB':>7}"]
    for dims in (memory.flux1_dev(), memory.flux2_klein_4b(), memory.flux2_klein_9b()):
        for world, label in PUBLISHED_GPUS:
            cfg = TrainConfig()
            cfg.data.batch_size = world
            plan = memory.plan_memory(cfg, world, dims, gpu_gb=80)
            for row in plan.rows:
                t = row.terms
                small = t.total / memory.GIB <= plan.headroom.usable_gib(24)
                cells = [v / memory.GIB for v in (t.base_weights, t.trainable_weights, t.gradients, t.optimizer,
                                                   t.activations, t.total)]
                lines.append(f"{dims.name:<28}{dims.licence:<24}{label:>5}  {row.label:<30}{cells[0]:>6.1f}"
                             f"{cells[1]:>9.1f}{cells[2]:>7.1f}{cells[3]:>7.1f}{cells[4]:>6.1f}{cells[5]:>7.1f}"
                             f"{'yes' if row.fits else 'no':>7}{'yes' if small else 'no':>7}")
    return lines


def loader_rows() -> list[str]:
    """The rows of ``bench/loader_throughput.py`` (``report_lines(measure())``) when that script is there."""
    path = ROOT / "bench" / "loader_throughput.py"
    if not path.is_file():
        return []
    import importlib.util

    from devtools.comfy_env import enable_in_process_comfy

    enable_in_process_comfy()
    spec = importlib.util.spec_from_file_location("loader_throughput", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.report_lines(module.measure())


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] if len(sys.argv) > 5 else "flux1")
        return
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    sys.path.insert(0, str(ROOT))
    from devtools.tiny_training import write_flux2_cache, write_synthetic_cache

    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    caches = {"flux1": str(write_synthetic_cache(work / "cache", 8, RES, text_tokens=TEXT)),
              "flux2": str(write_flux2_cache(work / "cache_flux2", 8, RES))}
    print(f"CPU test model: FLUX hidden {HIDDEN}, {DOUBLE}+{SINGLE} blocks, branch 2+4; FLUX.2 [klein]-shaped hidden "
          f"256, {FLUX2_DOUBLE}+{FLUX2_SINGLE} blocks, branch 1+2, text padded to 512 tokens; {RES[0]}x{RES[1]}, "
          f"global batch {GLOBAL_BATCH}, {steps} timed steps, 1 thread per process, gloo")
    header = (f"{'mode':<12}{'samples/s':>10}{'x one':>7}{'peak RSS MiB/rank':>19}{'tensors MiB':>13}"
              f"{'planned MiB':>13}{'planned/measured':>18}{'  activations meas/plan MiB':>28}")
    print(header)
    single = None
    for label, strategy, world, base_kind in MODES:
        t = time.perf_counter()
        results = run_mode(strategy, world, caches[base_kind], steps, base_kind)
        r0 = results[0]
        single = single or r0["samples_per_s"]
        rss = "/".join(f"{r['rss_mib']:.0f}" for r in results)
        ratio = f"{r0['samples_per_s'] / single:.2f}" if base_kind == "flux1" else "-"   # FLUX.1 modes only
        print(f"{label:<12}{r0['samples_per_s']:>10.2f}{ratio:>7}{rss:>19}"
              f"{r0['tensors_mib']:>13.1f}{r0['planned_mib']:>13.1f}{r0['planned_mib'] / r0['tensors_mib']:>18.2f}"
              f"{r0['activations_mib']:>14.1f} / {r0['planned_activations_mib']:.1f}   ({time.perf_counter() - t:.0f} s)")
    print("\nPublished bases, planner (GiB per GPU; 1024x1024, batch 1 per GPU, bf16 autocast, gradient "
          "checkpointing, adamw, no EMA):")
    print("\n".join(published_rows()))
    t = time.perf_counter()
    rows = loader_rows()
    if rows:
        print("\n".join(rows) + f"   ({time.perf_counter() - t:.0f} s)")


if __name__ == "__main__":
    main()
