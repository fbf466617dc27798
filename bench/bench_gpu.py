"""Seconds per sampling step and peak GPU memory at full FLUX size (random weights), patched / unpatched, eager and
under core TorchCompileModel.

FLUX.1 base (hidden 3072, 19 double / 38 single, bf16) and an InfuseNet of 4 double / 10 single blocks
(bf16, or fp8 with --fp8), 1024x1024 (4096 image tokens), 512 text tokens, 8 identity tokens, run
through ComfyUI's sampling path on the GPU. Needs a CUDA GPU with about 40 GB free. Each row gives the mean
seconds of the timed calls, the peak memory while they ran, the patched / unpatched ratio and the FLOPs ratio.
With --compile, both models are compiled (inductor), run until compiling is done, then timed the same way; the
compile row says how long compiling took and how many graph breaks the timed calls made.

``--size check`` runs the same code on a small FLUX (hidden 256, 2 + 2 blocks, branch 1 + 1, 128x128, 64 text
tokens) on whatever device there is, the CPU included: it checks the script before GPU time is spent on it.

    .venv/bin/python bench/bench_gpu.py [--steps 4] [--fp8] [--compile] [--size full|check]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from devtools.comfy_env import comfyui_dir  # noqa: E402

sys.path.insert(0, str(comfyui_dir()))

import torch  # noqa: E402


@dataclass(frozen=True)
class Size:
    hidden: int
    double: int
    single: int
    branch_double: int
    branch_single: int
    latent: int   # latent side (pixels / 8)
    text: int


SIZES = {
    "full": Size(hidden=3072, double=19, single=38, branch_double=4, branch_single=10, latent=128, text=512),
    "check": Size(hidden=256, double=2, single=2, branch_double=1, branch_single=1, latent=16, text=64),
}
ID_TOKENS = 8


def flops_ratio(size: Size) -> float:
    """Patched / unpatched FLOPs of one step (bench_step's count: the blocks' matmuls and attention)."""
    from bench.bench_step import flops_per_step

    img = (size.latent // 2) ** 2
    base = flops_per_step(size.hidden, size.double, size.single, img, size.text)
    return 1 + flops_per_step(size.hidden, size.branch_double, size.branch_single, img, ID_TOKENS) / base


def build(size: Size, fp8: bool, device: torch.device):
    """The random-weight base (ModelPatcher), the patched clone and the sampling inputs."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    from devtools import infusenet_files as files
    from infusenet import host, patch, weights

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    cfg = comfy.supported_models.Flux(dict(image_model="flux", **host.flux_params(
        in_channels=16, out_channels=16, patch_size=2, vec_in_dim=768, context_in_dim=4096,
        hidden_size=size.hidden, mlp_ratio=4.0, num_heads=size.hidden // 128, depth=size.double,
        depth_single_blocks=size.single, axes_dim=[16, 56, 56], theta=10000, qkv_bias=True, guidance_embed=True)))
    cfg.set_inference_dtype(dtype, None)
    model = cfg.get_model({}, device=device)
    for p in model.diffusion_model.parameters():  # constructed uninitialised: fill with small random values
        p.normal_(0, 0.02)
    base = comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=mm.unet_offload_device())

    spec = files.InfuseNetSpec(hidden_size=size.hidden, head_dim=128, num_layers=size.branch_double,
                               num_single_layers=size.branch_single, axes_dims_rope=(16, 56, 56))
    sd = files.random_infusenet_state_dict(spec)
    if fp8:
        sd = files.to_fp8(sd)
    sd = weights.to_comfy_keys(sd, "random")
    patcher, config, _ = weights.build_infusenet(sd, "random", torch.float8_e4m3fn if fp8 else dtype)
    bundle = weights.InfuseNetBundle(patcher=patcher, config=config,
                                     precision="fp8" if fp8 else str(dtype).removeprefix("torch."))
    del sd

    g = torch.Generator().manual_seed(0)
    side = size.latent
    x = torch.randn(1, 16, side, side, generator=g)
    pos = [[torch.randn(1, size.text, 4096, generator=g),
            {"pooled_output": torch.randn(1, 768, generator=g), "guidance": 3.5}]]
    patched = patch.apply_infiniteyou(base, bundle, torch.randn(1, ID_TOKENS, 4096, generator=g),
                                      torch.randn(1, 16, side, side, generator=g))
    return base, patched, bundle, x, pos


def measure(model, x, pos, steps: int, device: torch.device) -> tuple[float, float]:
    """Mean seconds of ``steps`` model calls after one untimed call, in one sampling run, and the peak GiB."""
    from bench.bench_step import comfy_step_seconds

    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else None
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = comfy_step_seconds(model, x, pos, steps + 1, sync=sync)[1:]
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else float("nan")
    return sum(times) / len(times), peak


def rows(name: str, base, patched, x, pos, steps: int, device: torch.device, flops: float) -> list[str]:
    """Unpatched, patched, unpatched, patched (the second pair is the one reported: warm) and the ratio line."""
    out = []
    for m in (base, patched):
        measure(m, x, pos, 1, device)   # warm: loads the model, first-call caches
    results = {}
    for label, m in (("unpatched", base), ("patched", patched), ("unpatched", base), ("patched", patched)):
        results[label] = measure(m, x, pos, steps, device)
    for label in ("unpatched", "patched"):
        s, peak = results[label]
        out.append(f"{name:22s} {label:10s} {s:9.4f} {peak:9.2f}")
    ratio = results["patched"][0] / results["unpatched"][0]
    out.append(f"{name:22s} {'ratio':10s} {ratio:9.3f}x  (FLOPs {flops:.3f}x, {ratio / flops:.3f} of the FLOPs)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4, help="timed model calls per run (after one warm-up)")
    ap.add_argument("--fp8", action="store_true", help="InfuseNet weights in fp8 e4m3fn")
    ap.add_argument("--compile", action="store_true", help="also under core TorchCompileModel (inductor)")
    ap.add_argument("--size", choices=sorted(SIZES), default="full",
                    help="full: FLUX.1-dev size on a GPU; check: a small FLUX on any device, to test the script")
    args = ap.parse_args()
    size = SIZES[args.size]
    if not torch.cuda.is_available() and args.size == "full":
        sys.exit("bench_gpu.py needs a CUDA GPU at full size; --size check runs it small on the CPU, and "
                 "bench/bench_step.py measures ratios on the CPU.")
    torch.set_grad_enabled(False)
    if not torch.cuda.is_available():
        from devtools.comfy_env import enable_in_process_comfy

        enable_in_process_comfy()  # ComfyUI on the CPU (its device check would look for a GPU)
        import comfy.ldm.flux.math
        import comfy.ldm.modules.attention

        # ComfyUI's attention on a GPU; on a CPU it picks sub-quadratic attention, which breaks compiled graphs
        comfy.ldm.flux.math.optimized_attention = comfy.ldm.modules.attention.attention_pytorch
    import comfy.model_management as mm

    device = mm.get_torch_device()
    base, patched, bundle, x, pos = build(size, args.fp8, device)
    flops = flops_ratio(size)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"{name} | FLUX {size.double}/{size.single} hidden {size.hidden} + InfuseNet "
          f"{size.branch_double}/{size.branch_single} {bundle.precision} | {size.latent * 8}x{size.latent * 8}, "
          f"{size.text} text tokens, 1 image")
    print(f"{'path':22s} {'model':10s} {'s/step':>9s} {'peak GiB':>9s}")
    for line in rows("eager", base, patched, x, pos, args.steps, device, flops):
        print(line, flush=True)
    if args.compile:
        from comfy_extras import nodes_torch_compile
        from torch._dynamo.utils import counters

        torch._dynamo.reset()
        plain = nodes_torch_compile.TorchCompileModel.execute(base, "inductor")[0]
        compiled = nodes_torch_compile.TorchCompileModel.execute(patched, "inductor")[0]
        t0 = time.perf_counter()
        for _ in range(2):  # compile, and the one recompile a second run may make
            measure(plain, x, pos, 1, device), measure(compiled, x, pos, 1, device)
        compiling = time.perf_counter() - t0
        counters.clear()
        for line in rows("TorchCompileModel", plain, compiled, x, pos, args.steps, device, flops):
            print(line, flush=True)
        print(f"compiling took {compiling:.0f} s; graph breaks while timed: {sum(counters['graph_break'].values())}")


if __name__ == "__main__":
    main()
