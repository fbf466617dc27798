"""Time of one sampling step, patched / unpatched, on a CPU-sized model with FLUX's block proportions.

Base 19 double / 38 single blocks, InfuseNet 4 / 10, same width (small). Measured through ComfyUI's sampling
path (CFGGuider -> calc_cond_batch -> FLUX forward + wrappers) and through the diffusers classes (transformer
alone; controlnet + transformer), and compared with the ratio predicted from the two networks' FLOPs.

    .venv/bin/python bench/bench_step.py [--hidden 128] [--latent 32] [--repeat 7]
        [--cases gguf,easycache,lazycache,compile] [--attention pytorch|comfy] [--this-host-only]

Threads: one by default (``--threads``). At this size a block's operators take tens of microseconds, and with two
threads each one also waits for the slower of the two, a cost unrelated to the FLOPs the ratio is set beside; one
thread measures the work each network does.

Every number is interleaved: each round runs every path of a row once, in turn, so that load from others on a
shared machine hits all alike; a step's sample is the fastest of 3 calls (a whole run's, one run). A row shows
the median seconds of each path and the median of the per-round ratios (patched / unpatched), next to the FLOPs
ratio.

The same ratio for the speed-ups people combine with it:
* ``gguf``: the base as a Q8_0 GGUF through city96's ComfyUI-GGUF layers (weights dequantised per layer;
  the model is built from ComfyUI's FLUX config directly, since stock detection only takes 3072 wide);
* ``easycache`` / ``lazycache``: core's EasyCache / LazyCache on both models, a whole 10-step run (ratio per
  run; the InfuseNet runs only on the steps the cache runs; the note gives the steps each model ran);
* ``compile``: core's TorchCompileModel (inductor) on both models, per step after compiling.

Attention: ComfyUI picks PyTorch's attention on a GPU and sub-quadratic attention on a CPU; the latter breaks
torch.compile's graph (it reads the free memory), so by default every ComfyUI row uses PyTorch's here, as on a
GPU (``--attention comfy`` keeps ComfyUI's CPU choice).

Both test hosts: run with one host's Python, the script runs itself again under every other prepared host
(``.host/<name>/venv`` with ``.host/<name>/ComfyUI``) and prints one table with the rows of each.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import torch  # noqa: E402

STEPS_PER_RUN = 10


def flops_per_step(hidden: int, n_double: int, n_single: int, img: int, txt: int) -> float:
    """Matmul FLOPs of the transformer blocks (2 per multiply-add): linears + attention products."""
    seq = img + txt
    linear = 2 * 12 * hidden * hidden * seq          # double: per stream qkv 3h^2 + proj h^2 + mlp 8h^2
    attn = 2 * 2 * seq * seq * hidden                 # q.k and p.v
    single = 2 * 12 * hidden * hidden * seq          # linear1 7h^2 + linear2 5h^2
    return n_double * (linear + attn) + n_single * (single + attn)


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def timed_interleaved(fns: list, repeat: int) -> list[float]:
    """Median seconds of each fn, run in turn every round (so load on a shared machine hits all alike)."""
    samples = interleaved(fns, repeat)
    return [median(s) for s in samples]


def interleaved(fns: list, repeat: int) -> list[list[float]]:
    """Seconds of each of ``fns`` per round, after one warm-up round; a fn returns its own seconds, or anything
    else (then it is timed whole). Every other round runs them in reverse order, so that none always runs first
    (or right after a given other) on a machine whose speed drifts."""
    def once(fn) -> float:
        t = time.perf_counter()
        own = fn()
        return own if isinstance(own, float) else time.perf_counter() - t

    for fn in fns:
        once(fn)
    samples = [[] for _ in fns]
    for r in range(repeat):
        order = list(range(len(fns)))
        for i in (order if r % 2 == 0 else order[::-1]):
            samples[i].append(once(fns[i]))
    return samples


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


def step_seconds(patcher, x, positive) -> float:
    """One model call's seconds: the fastest of 3 calls in one sampling run, after one (loads, caches). Another
    process on the machine only ever adds time to a call, so the fastest is the one it disturbed least."""
    return min(comfy_step_seconds(patcher, x, positive, 4)[1:])


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


def run_seconds(patcher, x, positive, ran: list) -> float:
    """Seconds of one whole Euler run of ``STEPS_PER_RUN`` steps; appends how many FLUX forwards it made."""
    import comfy.patcher_extension
    import comfy.samplers

    calls = []
    model = patcher.clone()
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "zz_bench_count",
                               lambda executor, *a, **k: calls.append(1) or executor(*a, **k))
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", STEPS_PER_RUN).float()
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, [])
    guider.set_cfg(1.0)
    t = time.perf_counter()
    guider.sample(x, torch.zeros_like(x), comfy.samplers.sampler_object("euler"), sigmas, disable_pbar=True, seed=0)
    seconds = time.perf_counter() - t
    ran.append(len(calls))
    return seconds


def row(name: str, plain: list[float], patched: list[float], note: str) -> dict:
    """A table row from per-round seconds: the medians, the median of the per-round ratios, and the median of the
    per-round added seconds (patched - unpatched: what the branch costs, whatever the base's own speed)."""
    return {"path": name, "unpatched": median(plain), "patched": median(patched),
            "ratio": median([b / a for a, b in zip(plain, patched)]),
            "added": median([b - a for a, b in zip(plain, patched)]), "note": note}


def timed(fn, calls: int = 3) -> float:
    """Seconds of one call of ``fn``: the fastest of ``calls``, as :func:`step_seconds` times a model call."""
    seconds = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - t)
    return min(seconds)


def networks_alone(base, bundle, x, ctx, pooled):
    """(the base's forward, the InfuseNet's forward then the base's with its residuals): the two networks called
    directly, without ComfyUI's sampling path or the pack's wrappers: the floor of the pack's ratio."""
    from infusenet import patch

    flux = base.patcher.model.diffusion_model
    net = bundle.model
    g = torch.Generator().manual_seed(1)
    img, img_ids = flux.process_img(x)
    txt_ids = torch.zeros(1, ctx.shape[1], img_ids.shape[-1])
    tokens = torch.randn(1, 8, net.txt_in.weight.shape[1], generator=g)
    control = torch.randn(1, img.shape[1], net.controlnet_x_embedder.weight.shape[1], generator=g)
    t, y, guidance = torch.tensor([0.7]), pooled[:, :flux.params.vec_in_dim], torch.tensor([3.5])

    def plain():
        return flux.forward_orig(img, img_ids, ctx, txt_ids, t, y, guidance)

    def patched():
        double, single = net(img, img_ids, control, tokens, t, pooled, guidance, flux.pe_embedder)
        merged = patch.merge_control(None, double, single, len(flux.double_blocks), len(flux.single_blocks))
        return flux.forward_orig(img, img_ids, ctx, txt_ids, t, y, guidance, control=merged)
    return plain, patched


def plain_rows(args, base, patched, x, pos, ctx, pooled, branch, bundle) -> list[dict]:
    """This pack, the two networks called directly, and the diffusers reference, all six paths interleaved."""
    from devtools import flux_pair as fp

    alone_plain, alone_patched = networks_alone(base, bundle, x, ctx, pooled)
    comfy_plain, comfy_patched, bare_plain, bare_patched, diff_plain, diff_patched = interleaved([
        lambda: step_seconds(base.patcher, x, pos),
        lambda: step_seconds(patched, x, pos),
        lambda: timed(alone_plain),
        lambda: timed(alone_patched),
        lambda: timed(lambda: fp.reference_velocity(base, [], x, 0.7, ctx, pooled, 3.5)),
        lambda: timed(lambda: fp.reference_velocity(base, branch, x, 0.7, ctx, pooled, 3.5)),
    ], args.repeat)
    return [row("ComfyUI FLUX (this pack)", comfy_plain, comfy_patched, "per step"),
            row("the two networks alone", bare_plain, bare_patched,
                "Flux.forward_orig, InfuseNet.forward: no sampler, no wrapper"),
            row("diffusers FluxTransformer2DModel", diff_plain, diff_patched, "per step, + FluxControlNetModel")]


def speedup_rows(args, base, patched_of, x, pos, tmp: str) -> list[dict]:
    """A row for each speed-up case asked for."""
    from comfy_extras import nodes_easycache, nodes_torch_compile

    rows = []
    cases = [c for c in args.cases.split(",") if c]
    if "gguf" in cases:
        gguf = gguf_patcher(base.patcher, tmp)
        patched = patched_of(gguf)
        plain_s, patch_s = interleaved([lambda: step_seconds(gguf, x, pos), lambda: step_seconds(patched, x, pos)],
                                       args.repeat)
        rows.append(row("GGUF Q8_0 base (ComfyUI-GGUF)", plain_s, patch_s, "per step"))
    for case, node in (("easycache", "EasyCacheNode"), ("lazycache", "LazyCacheNode")):
        if case not in cases:
            continue
        def cached(m, node=getattr(nodes_easycache, node)):
            return node.execute(m, 0.2, 0.15, 0.95, False)[0]
        plain, patched = cached(base.patcher), cached(patched_of(base.patcher))
        ran_plain, ran_patched = [], []
        plain_s, patch_s = interleaved([lambda: run_seconds(plain, x, pos, ran_plain),
                                        lambda: run_seconds(patched, x, pos, ran_patched)], args.repeat)
        ran = sorted(set(zip(ran_plain, ran_patched)))
        note = f"per {STEPS_PER_RUN}-step run; steps run " + ", ".join(f"{a}/{b}" for a, b in ran)
        rows.append(row(f"{'EasyCache' if case == 'easycache' else 'LazyCache'} (core)", plain_s, patch_s, note))
    if "compile" in cases:
        torch._dynamo.reset()
        plain = nodes_torch_compile.TorchCompileModel.execute(base.patcher, "inductor")[0]
        patched = nodes_torch_compile.TorchCompileModel.execute(patched_of(base.patcher), "inductor")[0]
        t0 = time.perf_counter()
        for _ in range(2):  # compile, and the one recompile a second run may make
            step_seconds(plain, x, pos), step_seconds(patched, x, pos)
        compiling = time.perf_counter() - t0
        from torch._dynamo.utils import counters
        counters.clear()
        plain_s, patch_s = interleaved([lambda: step_seconds(plain, x, pos), lambda: step_seconds(patched, x, pos)],
                                       args.repeat)
        breaks = sum(counters["graph_break"].values())
        rows.append(row("TorchCompileModel inductor (core)", plain_s, patch_s,
                        f"per step after compiling ({compiling:.0f} s), graph breaks while timed {breaks}"))
        torch._dynamo.reset()
    return rows


def measure(args) -> dict:
    """This host's rows and what they were measured on."""
    torch.set_grad_enabled(False)
    from devtools.comfy_env import comfyui_version, enable_in_process_comfy

    enable_in_process_comfy()  # CPU; bench_gpu imports this module without it
    if args.attention == "pytorch":
        import comfy.ldm.flux.math
        import comfy.ldm.modules.attention

        comfy.ldm.flux.math.optimized_attention = comfy.ldm.modules.attention.attention_pytorch
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

    def patched_of(model):
        return patch.apply_infiniteyou(model, bundle, ids, ctrl, strength=1.0)

    rows = plain_rows(args, base, patched_of(base.patcher), x, pos, ctx, pooled, [fp.Branch(net, ids, ctrl, 1.0)],
                      bundle)
    rows += speedup_rows(args, base, patched_of, x, pos, tmp)
    tmp_dir.cleanup()
    img = (s // 2) ** 2
    f_base = flops_per_step(args.hidden, 19, 38, img, args.text)
    f_branch = flops_per_step(args.hidden, 4, 10, img, args.tokens) + 2 * 14 * args.hidden ** 2 * img
    return {"host": comfyui_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "flops_ratio": (f_base + f_branch) / f_base, "image_tokens": img, "rows": rows}


def other_hosts() -> list[tuple[str, str, str]]:
    """(name, python, ComfyUI folder) of every prepared test host but the one this process runs."""
    from devtools.comfy_env import HOST_NAMES, PACK_ROOT, comfyui_dir

    here = comfyui_dir()
    found = []
    for name in HOST_NAMES:
        folder = PACK_ROOT / ".host" / name
        python, comfy = folder / "venv" / "bin" / "python", folder / "ComfyUI"
        if python.is_file() and (comfy / "main.py").is_file() and comfy.resolve() != here:
            found.append((name, str(python), str(comfy)))
    return found


def measure_on(python: str, comfy: str, argv: list[str]) -> dict:
    """This script's result under another host's Python and ComfyUI (its last output line, JSON)."""
    env = dict(os.environ, COMFYUI_DIR=comfy)
    done = subprocess.run([python, os.path.abspath(__file__), *argv, "--json", "--this-host-only"], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"bench_step under {python} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_table(results: list[dict], args) -> None:
    first = results[0]
    print(f"hidden {args.hidden}, {first['image_tokens']} image tokens, {args.text} text tokens, {args.tokens} identity "
          f"tokens, torch {first['torch']}, threads {first['threads']}, {args.attention} attention in ComfyUI; "
          f"median of {args.repeat} interleaved rounds (ratio: median of the per-round ratios)")
    print(f"{'ComfyUI':8s} {'path':34s} {'unpatched s':>11s} {'patched s':>10s} {'added s':>8s} {'ratio':>6s} "
          f"{'FLOPs':>6s} {'/FLOPs':>7s}  note")
    for result in results:
        for r in result["rows"]:
            print(f"{result['host']:8s} {r['path']:34s} {r['unpatched']:11.4f} {r['patched']:10.4f} {r['added']:8.4f} "
                  f"{r['ratio']:6.3f} {result['flops_ratio']:6.3f} {r['ratio'] / result['flops_ratio']:7.3f}  {r['note']}")
    for result in results:  # the ratio divides by the base's own speed, which differs between the two stacks
        rows = {r["path"]: r for r in result["rows"]}
        pack, ref = rows.get("ComfyUI FLUX (this pack)"), rows.get("diffusers FluxTransformer2DModel")
        if pack and ref:
            print(f"{result['host']}: the branch adds {pack['added']:.4f} s to ComfyUI's step and {ref['added']:.4f} s "
                  f"to diffusers' ({pack['added'] / ref['added']:.3f}x); ComfyUI's unpatched step is "
                  f"{pack['unpatched'] / ref['unpatched']:.3f}x diffusers'")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--latent", type=int, default=32, help="latent side (tokens = (latent/2)^2)")
    ap.add_argument("--text", type=int, default=64, help="text tokens")
    ap.add_argument("--tokens", type=int, default=8, help="identity tokens")
    ap.add_argument("--repeat", type=int, default=7, help="interleaved rounds")
    ap.add_argument("--cases", default="gguf,easycache,lazycache,compile",
                    help="speed-up cases measured after the plain ones (comma list; empty for none)")
    ap.add_argument("--attention", choices=("pytorch", "comfy"), default="pytorch",
                    help="ComfyUI's attention: PyTorch's (ComfyUI's choice on a GPU) or ComfyUI's CPU choice")
    ap.add_argument("--this-host-only", action="store_true", help="do not run again under the other test hosts")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch's CPU threads (1: the ratio of the work itself; see the module docstring)")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON line (for the other run)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = measure(args)
    if args.json:
        print(json.dumps(result))
        return
    results = [result]
    if not args.this_host_only:
        argv = [a for a in sys.argv[1:] if a not in ("--json", "--this-host-only")]
        results += [measure_on(python, comfy, argv) for _, python, comfy in other_hosts()]
    print_table(results, args)


if __name__ == "__main__":
    main()
