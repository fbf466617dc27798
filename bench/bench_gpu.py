"""Seconds per sampling step and peak GPU memory at full FLUX size (random weights), patched / unpatched.

FLUX.1 base (hidden 3072, 19 double / 38 single, bf16) and an InfuseNet of 4 double / 10 single blocks
(bf16, or fp8 with --fp8), 1024x1024 (4096 image tokens), 512 text tokens, 8 identity tokens, run
through ComfyUI's sampling path on the GPU. Needs a CUDA GPU with about 40 GB free.

    .venv/bin/python bench/bench_gpu.py [--steps 4] [--fp8]
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from devtools.comfy_env import comfyui_dir  # noqa: E402

sys.path.insert(0, str(comfyui_dir()))

import torch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4, help="timed model calls per run (after one warm-up)")
    ap.add_argument("--fp8", action="store_true", help="InfuseNet weights in fp8 e4m3fn")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_gpu.py needs a CUDA GPU; use bench/bench_step.py on the CPU.")
    torch.set_grad_enabled(False)

    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    from bench.bench_step import comfy_step_seconds
    from infusenet import host, patch, weights
    from devtools import infusenet_files as files

    dev = mm.get_torch_device()
    cfg = comfy.supported_models.Flux(dict(image_model="flux", **host.flux_params(
        in_channels=16, out_channels=16, patch_size=2, vec_in_dim=768, context_in_dim=4096,
        hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=19, depth_single_blocks=38, axes_dim=[16, 56, 56],
        theta=10000, qkv_bias=True, guidance_embed=True)))
    cfg.set_inference_dtype(torch.bfloat16, None)
    model = cfg.get_model({}, device=dev)
    for p in model.diffusion_model.parameters():  # constructed uninitialised: fill with small random values
        p.normal_(0, 0.02)
    base = comfy.model_patcher.ModelPatcher(model, load_device=dev, offload_device=mm.unet_offload_device())

    spec = files.InfuseNetSpec(hidden_size=3072, head_dim=128, num_layers=4, num_single_layers=10, axes_dims_rope=(16, 56, 56))
    sd = files.random_infusenet_state_dict(spec)
    if args.fp8:
        sd = files.to_fp8(sd)
    sd = weights.to_comfy_keys(sd, "random")
    patcher, config, _ = weights.build_infusenet(sd, "random", torch.float8_e4m3fn if args.fp8 else torch.bfloat16)
    bundle = weights.InfuseNetBundle(patcher=patcher, config=config, precision="fp8" if args.fp8 else "bf16")
    del sd

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 128, 128, generator=g)
    pos = [[torch.randn(1, 512, 4096, generator=g), {"pooled_output": torch.randn(1, 768, generator=g), "guidance": 3.5}]]
    patched = patch.apply_infiniteyou(base, bundle, torch.randn(1, 8, 4096, generator=g), torch.randn(1, 16, 128, 128, generator=g))

    print(f"{torch.cuda.get_device_name()} | FLUX 19/38 bf16 + InfuseNet 4/10 {bundle.precision} | 1024x1024, 1 image")
    print(f"{'model':12s} {'s/step':>8s} {'peak GiB':>9s}")
    for name, m in (("unpatched", base), ("patched", patched), ("unpatched", base), ("patched", patched)):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        times = comfy_step_seconds(m, x, pos, args.steps + 1, sync=torch.cuda.synchronize)[1:]
        peak = torch.cuda.max_memory_allocated() / 2 ** 30
        print(f"{name:12s} {sum(times) / len(times):8.3f} {peak:9.2f}")


if __name__ == "__main__":
    main()
