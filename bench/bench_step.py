"""Time of one sampling step, patched / unpatched, on a CPU-sized model with FLUX's block proportions.

Base 19 double / 38 single blocks, InfuseNet 4 / 10, same width (small). Measured side by side in one
run, through ComfyUI's sampling path (CFGGuider -> calc_cond_batch -> FLUX forward + wrapper) and
through the diffusers classes (transformer alone; controlnet + transformer), and compared with the
ratio predicted from the two networks' FLOPs.

    .venv/bin/python bench/bench_step.py [--hidden 128] [--latent 32] [--repeat 5] [--cases gguf,easycache,compile]

The same ratio, side by side in the same run, for the speed-ups people combine with it:
* ``gguf``: the base as a Q8_0 GGUF through city96's ComfyUI-GGUF layers (weights dequantised per layer;
  the model is built from ComfyUI's FLUX config directly, since stock detection only takes 3072 wide);
* ``easycache``: core's EasyCache on both models, a whole 10-step run (ratio per run; the InfuseNet
  runs only on the steps EasyCache runs);
* ``compile``: core's TorchCompileModel (inductor) on both models, per step after compiling.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import torch  # noqa: E402


def flops_per_step(hidden: int, n_double: int, n_single: int, img: int, txt: int) -> float:
    """Matmul FLOPs of the transformer blocks (2 per multiply-add): linears + attention products."""
    seq = img + txt
    linear = 2 * 12 * hidden * hidden * seq          # double: per stream qkv 3h^2 + proj h^2 + mlp 8h^2
    attn = 2 * 2 * seq * seq * hidden                 # q.k and p.v
    single = 2 * 12 * hidden * hidden * seq          # linear1 7h^2 + linear2 5h^2
    return n_double * (linear + attn) + n_single * (single + attn)


def timed_interleaved(fns: list, repeat: int) -> list[float]:
    """Median seconds of each fn, run in turn every round (so load on a shared machine hits all alike)."""
    for fn in fns:
        fn()
    samples = [[] for _ in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            samples[i].append(time.perf_counter() - t)
    return [sorted(s)[len(s) // 2] for s in samples]


def comfy_step_seconds(patcher, x, positive, calls: int, sync=None) -> list[float]:
    """Seconds of each of ``calls`` model evaluations inside one ComfyUI sampling run (models loaded once)."""
    import comfy.samplers

    times = []

    def repeat_calls(model, noise, sigmas, extra_args=None, callback=None, disable=None):
        s_in = noise.new_ones(noise.shape[0])
        for _ in range(calls):
            if sync:
                sync()
            t = time.perf_counter()
            model(noise, sigmas[0] * s_in, **(extra_args or {}))
            if sync:
                sync()
            times.append(time.perf_counter() - t)
        return noise

    guider = comfy.samplers.CFGGuider(patcher)
    guider.set_conds(positive, [])
    guider.set_cfg(1.0)
    guider.sample(x, torch.zeros_like(x), comfy.samplers.KSAMPLER(repeat_calls), torch.tensor([0.7, 0.0]),
                  disable_pbar=True, seed=0)
    return times


def gguf_patcher(base_patcher, tmp: str):
    """The base's weights written as Q8_0 GGUF and loaded with ComfyUI-GGUF's loader and layers."""
    import comfy.supported_models
    from pathlib import Path

    from devtools import comfyui_gguf

    dm = base_patcher.model.diffusion_model
    path = comfyui_gguf.write_flux_gguf(Path(tmp) / "base-Q8_0.gguf", dm.state_dict(), "Q8_0")
    pack = comfyui_gguf.import_comfyui_gguf(comfyui_gguf.install_comfyui_gguf(Path(tmp) / "custom_nodes"))
    sd = pack.loader.gguf_sd_loader(str(path))
    config = comfy.supported_models.Flux(dict(base_patcher.model.model_config.unet_config))
    config.set_inference_dtype(torch.float32, None)
    config.custom_operations = pack.ops.GGMLOps()
    model = config.get_model(sd, "")
    model.load_model_weights(sd, "")
    device = base_patcher.load_device
    return pack.nodes.GGUFModelPatcher(model, load_device=device, offload_device=device)


def run_seconds(patcher, x, positive, steps: int = 10) -> tuple[float, int]:
    """Seconds of one whole Euler run of ``steps`` steps, and how many FLUX forwards it made."""
    import comfy.patcher_extension
    import comfy.samplers

    calls = []
    model = patcher.clone()
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "zz_bench_count",
                               lambda executor, *a, **k: calls.append(1) or executor(*a, **k))
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", steps).float()
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, [])
    guider.set_cfg(1.0)
    t = time.perf_counter()
    guider.sample(x, torch.zeros_like(x), comfy.samplers.sampler_object("euler"), sigmas, disable_pbar=True, seed=0)
    return time.perf_counter() - t, len(calls)


def speedup_rows(args, base, patched_of, x, pos, tmp: str) -> list[tuple]:
    """(name, unpatched s, patched s, note) for each speed-up case asked for."""
    from comfy_extras import nodes_easycache, nodes_torch_compile

    rows = []
    cases = [c for c in args.cases.split(",") if c]
    if "gguf" in cases:
        gguf = gguf_patcher(base.patcher, tmp)
        plain_s, patch_s = [], []
        patched = patched_of(gguf)
        for _ in range(args.repeat):
            plain_s += comfy_step_seconds(gguf, x, pos, 3)[1:]
            patch_s += comfy_step_seconds(patched, x, pos, 3)[1:]
        rows.append(("GGUF Q8_0 base (ComfyUI-GGUF)", median(plain_s), median(patch_s), "per step"))
    if "easycache" in cases:
        def cached(m):
            return nodes_easycache.EasyCacheNode.execute(m, 0.2, 0.15, 0.95, False)[0]
        plain, patched = cached(base.patcher), cached(patched_of(base.patcher))
        plain_s, patch_s, ran = [], [], set()
        for _ in range(args.repeat):
            t, n_plain = run_seconds(plain, x, pos)
            u, n_patch = run_seconds(patched, x, pos)
            plain_s.append(t)
            patch_s.append(u)
            ran.add((n_plain, n_patch))
        note = "per 10-step run; steps run " + ", ".join(f"{a}/{b}" for a, b in sorted(ran))
        rows.append(("EasyCache (core)", median(plain_s), median(patch_s), note))
    if "compile" in cases:
        torch._dynamo.reset()
        plain = nodes_torch_compile.TorchCompileModel.execute(base.patcher, "inductor")[0]
        patched = nodes_torch_compile.TorchCompileModel.execute(patched_of(base.patcher), "inductor")[0]
        t0 = time.perf_counter()
        plain_s = comfy_step_seconds(plain, x, pos, 3 + args.repeat)[3:]  # compiling, then a recompile
        patch_s = comfy_step_seconds(patched, x, pos, 3 + args.repeat)[3:]
        rows.append(("TorchCompileModel inductor (core)", median(plain_s), median(patch_s),
                     f"per step after compiling ({time.perf_counter() - t0:.0f} s incl. compile)"))
        torch._dynamo.reset()
    return rows


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--latent", type=int, default=32, help="latent side (tokens = (latent/2)^2)")
    ap.add_argument("--text", type=int, default=64, help="text tokens")
    ap.add_argument("--tokens", type=int, default=8, help="identity tokens")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--cases", default="gguf,easycache,compile",
                    help="speed-up cases measured after the plain ones (comma list; empty for none)")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    from devtools.comfy_env import enable_in_process_comfy

    enable_in_process_comfy()  # CPU; bench_gpu imports this module without it
    from infusenet import patch, weights
    from devtools import infusenet_files as files
    from devtools import flux_pair as fp

    head = 32
    axes = (8, 12, 12)
    base = fp.make_base(19, 38, hidden=args.hidden, head_dim=head, axes=axes, text_dim=64)
    spec = files.InfuseNetSpec(hidden_size=args.hidden, head_dim=head, num_layers=4, num_single_layers=10, axes_dims_rope=axes)
    net = files.make_controlnet(spec, 1)
    tmp_dir = tempfile.TemporaryDirectory()
    tmp = tmp_dir.name
    bundle = weights.load_infusenet(files.write_single_file(os.path.join(tmp, "infusenet.safetensors"), net.state_dict(), "fp32"))
    g = torch.Generator().manual_seed(0)
    s = args.latent
    x = torch.randn(1, 16, s, s, generator=g)
    ctx, pooled = torch.randn(1, args.text, 64, generator=g), torch.randn(1, fp.POOLED_DIM, generator=g)
    ids, ctrl = torch.randn(1, args.tokens, 4096, generator=g), torch.randn(1, 16, s, s, generator=g)
    pos = fp.conds(ctx, pooled, 3.5)
    patched = patch.apply_infiniteyou(base.patcher, bundle, ids, ctrl, strength=1.0)

    rows = []
    branch = [fp.Branch(net, ids, ctrl, 1.0)]
    plain_s, patch_s = [], []
    for _ in range(args.repeat):  # alternate whole runs; within a run the models stay loaded
        plain_s += comfy_step_seconds(base.patcher, x, pos, 3)[1:]
        patch_s += comfy_step_seconds(patched, x, pos, 3)[1:]
    t_plain, t_patch = sorted(plain_s)[len(plain_s) // 2], sorted(patch_s)[len(patch_s) // 2]
    d_plain, d_patch = timed_interleaved([
        lambda: fp.reference_velocity(base, [], x, 0.7, ctx, pooled, 3.5),
        lambda: fp.reference_velocity(base, branch, x, 0.7, ctx, pooled, 3.5),
    ], args.repeat)

    img = (s // 2) ** 2
    f_base = flops_per_step(args.hidden, 19, 38, img, args.text)
    f_branch = flops_per_step(args.hidden, 4, 10, img, args.tokens) + 2 * 14 * args.hidden ** 2 * img
    predicted = (f_base + f_branch) / f_base
    rows.append(("ComfyUI FLUX (this pack)", t_plain, t_patch, "per step"))
    rows.append(("diffusers FluxTransformer2DModel", d_plain, d_patch, "per step"))
    rows += speedup_rows(args, base, lambda m: patch.apply_infiniteyou(m, bundle, ids, ctrl, strength=1.0), x, pos, tmp)
    tmp_dir.cleanup()
    print(f"hidden {args.hidden}, {img} image tokens, {args.text} text tokens, {args.tokens} identity tokens, "
          f"torch threads {torch.get_num_threads()}, median of {args.repeat} interleaved rounds")
    print(f"{'path':36s} {'unpatched s':>12s} {'patched s':>10s} {'ratio':>7s} {'FLOPs ratio':>12s}  note")
    for name, a, b, note in rows:
        print(f"{name:36s} {a:12.4f} {b:10.4f} {b / a:7.3f} {predicted:12.3f}  {note}")


if __name__ == "__main__":
    main()
