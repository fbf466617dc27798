"""Where one sampling step's time goes, patched against unpatched: bench_step.py's CPU-sized FLUX (19/38 blocks,
InfuseNet 4/10) through ComfyUI's sampling path, profiled with torch.profiler.

    .venv/bin/python bench/profile_step.py [--calls 8] [--top 14]

Prints, per operator, the CPU milliseconds of one model call unpatched and patched and what the patch added,
then the time spent outside operators (Python: wrappers, the residual hook, the block loop). The difference
column is the branch: its matmuls and attention should carry it, as the FLOPs ratio assumes.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_step  # noqa: E402  (the same models and inputs)
import torch  # noqa: E402


def profile(patcher, x, positive, calls: int):
    """Per-operator self CPU ms of one model call (mean of ``calls``), and the wall ms of one call."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    bench_step.comfy_step_seconds(patcher, x, positive, 2)  # loads, caches
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        bench_step.comfy_step_seconds(patcher, x, positive, calls)
        wall = (time.perf_counter() - t) / calls * 1e3
    ops = {}
    for event in prof.key_averages():
        if event.key.startswith("aten::") or event.key.startswith("infiniteyou::"):
            ops[event.key] = ops.get(event.key, 0.0) + event.self_cpu_time_total / 1e3 / calls
    return ops, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=8)
    ap.add_argument("--top", type=int, default=14)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    from devtools.comfy_env import comfyui_version, enable_in_process_comfy

    enable_in_process_comfy()
    import comfy.ldm.flux.math
    import comfy.ldm.modules.attention

    comfy.ldm.flux.math.optimized_attention = comfy.ldm.modules.attention.attention_pytorch
    from devtools import flux_pair as fp
    from devtools import infusenet_files as files
    from infusenet import patch, weights

    axes = (8, 12, 12)
    base = fp.make_base(19, 38, hidden=128, head_dim=32, axes=axes, text_dim=64)
    spec = files.InfuseNetSpec(hidden_size=128, head_dim=32, num_layers=4, num_single_layers=10, axes_dims_rope=axes)
    net = files.make_controlnet(spec, 1)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = weights.load_infusenet(files.write_single_file(os.path.join(tmp, "n.safetensors"), net.state_dict(), "fp32"))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 32, 32, generator=g)
    ctx, pooled = torch.randn(1, 64, 64, generator=g), torch.randn(1, fp.POOLED_DIM, generator=g)
    ids, ctrl = torch.randn(1, 8, 4096, generator=g), torch.randn(1, 16, 32, 32, generator=g)
    pos = fp.conds(ctx, pooled, 3.5)
    patched = patch.apply_infiniteyou(base.patcher, bundle, ids, ctrl, strength=1.0)
    plain_ops, plain_wall = profile(base.patcher, x, pos, args.calls)
    patched_ops, patched_wall = profile(patched, x, pos, args.calls)
    names = sorted(set(plain_ops) | set(patched_ops), key=lambda k: -(patched_ops.get(k, 0) - plain_ops.get(k, 0)))
    print(f"ComfyUI {comfyui_version()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"ms per model call (self CPU time per operator, mean of {args.calls})")
    print(f"{'operator':38s} {'unpatched':>10s} {'patched':>10s} {'added':>10s}")
    for name in names[:args.top]:
        a, b = plain_ops.get(name, 0.0), patched_ops.get(name, 0.0)
        print(f"{name:38s} {a:10.3f} {b:10.3f} {b - a:10.3f}")
    in_ops = (sum(plain_ops.values()), sum(patched_ops.values()))
    print(f"{'all operators':38s} {in_ops[0]:10.3f} {in_ops[1]:10.3f} {in_ops[1] - in_ops[0]:10.3f}")
    print(f"{'wall (profiled)':38s} {plain_wall:10.3f} {patched_wall:10.3f} {patched_wall - plain_wall:10.3f}")
    print(f"{'outside operators (Python)':38s} {plain_wall - in_ops[0]:10.3f} {patched_wall - in_ops[1]:10.3f} "
          f"{(patched_wall - in_ops[1]) - (plain_wall - in_ops[0]):10.3f}")
    print(f"ratios: operators {in_ops[1] / in_ops[0]:.3f}, wall {patched_wall / plain_wall:.3f}")


if __name__ == "__main__":
    main()
