"""Loader throughput: samples/s of reading the same synthetic 1024² cache from the per-file cache
(fp32 safetensors per sample) and from tar shards (bf16), inline and with DataLoader workers.

Shapes of a 1024² sample: latent and control [16, 128, 128], context [512, 4096] (T5 at 512 tokens),
pooled [768], embedding [512]. The files are written once into a temporary folder and read back from
the page cache, so the numbers measure the loader (reading, decoding, bf16 -> fp32, collation, workers),
not the disk.

    python -m bench.loader_throughput

``measure()`` returns the figures; ``report_lines(measure())`` the printed rows.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

SHAPES = {"latent": (16, 128, 128), "control": (16, 128, 128), "context": (512, 4096), "pooled": (768,),
          "embedding": (512,)}


def synthetic_sample(n: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(n)
    return {k: torch.randn(s, generator=g) for k, s in SHAPES.items()}


def write_file_cache(root: Path, samples: int) -> Path:
    """A per-file cache as :func:`infusenet.trainer.data.prepare_cache` writes it (fp32, index.json)."""
    (root / "samples").mkdir(parents=True)
    entries = []
    for n in range(samples):
        save_file(synthetic_sample(n), str(root / "samples" / f"{n:07d}.safetensors"))
        entries.append({"id": f"s{n}", "kind": "spss", "file": f"samples/{n:07d}.safetensors", "caption": ""})
    (root / "index.json").write_text(json.dumps({"version": 1, "resolution": [1024, 1024], "samples": entries}))
    return root


def write_shard_cache(root: Path, samples: int, per_shard: int) -> Path:
    """The same samples as a sharded cache (bf16 tar shards with their records)."""
    from infusenet.trainer.data import EncodedSample, Sample
    from infusenet.trainer.shards import write_empty_text, write_settings, write_shard

    shards = (samples + per_shard - 1) // per_shard
    write_settings(root, [(1024, 1024)], 512, per_shard, shards, "synthetic")
    write_empty_text(root, {"context": torch.zeros(512, 4096), "pooled": torch.zeros(768)})
    for k in range(shards):
        items = ((Sample(f"s{n}", "spss", None, "", ""), EncodedSample(synthetic_sample(n), (1024, 1024), []))
                 for n in range(k * per_shard, min(samples, (k + 1) * per_shard)))
        write_shard(root, k, items)
    return root


def _rate(dataset, batch: int, steps: int, step_ms: float) -> float:
    """Samples/s over ``steps`` batches after the first (which includes starting the workers); after each
    batch the caller sleeps ``step_ms`` (a training step that leaves the CPU free, as a GPU step does)."""
    from infusenet.trainer.data import batch_stream

    stream = batch_stream(dataset, batch, 0, 1, 0, True, 0)
    next(stream)
    start = time.perf_counter()
    for _ in range(steps):
        next(stream)
        time.sleep(step_ms / 1000)
    elapsed = time.perf_counter() - start
    stream.close()
    return steps * batch / elapsed


def measure(samples: int = 24, batch: int = 4, steps: int = 8, workers: tuple[int, ...] = (0, 2),
            step_ms: tuple[float, ...] = (0.0, 100.0), repeats: int = 2, per_shard: int = 8,
            root: str | None = None) -> dict:
    """Samples/s of each reader on one synthetic 1024² cache, best of ``repeats`` interleaved rounds:
    ``"files@<ms>"`` and ``"shards_w<N>@<ms>"`` for N DataLoader workers and a simulated step of <ms>
    milliseconds, ``"shards_w<N>@<ms>_vs_files"`` the ratio to the per-file cache at the same step,
    ``"mb_per_sample_files"`` and ``"mb_per_sample_shards"`` the bytes on disk."""
    from infusenet.trainer.data import CachedDataset
    from infusenet.trainer.shards import ShardedDataset

    with tempfile.TemporaryDirectory(dir=root) as tmp:
        files = write_file_cache(Path(tmp) / "files", samples)
        shards = write_shard_cache(Path(tmp) / "shards", samples, per_shard)
        size = {name: sum(p.stat().st_size for p in d.rglob("*") if p.is_file()) / samples / 2 ** 20
                for name, d in (("files", files), ("shards", shards))}
        out: dict = {"samples": samples, "batch": batch, "steps": steps,
                     "mb_per_sample_files": round(size["files"], 2), "mb_per_sample_shards": round(size["shards"], 2)}
        readers = {"files": lambda: CachedDataset(files)}
        for n in workers:
            readers[f"shards_w{n}"] = lambda n=n: ShardedDataset(shards, shuffle_buffer=per_shard, num_workers=n, prefetch=2)
        for _ in range(repeats):
            for ms in step_ms:
                for name, make in readers.items():
                    key = f"{name}@{ms:g}"
                    out[key] = max(out.get(key, 0.0), _rate(make(), batch, steps, ms))
        for ms in step_ms:
            for n in workers:
                out[f"shards_w{n}@{ms:g}_vs_files"] = out[f"shards_w{n}@{ms:g}"] / out[f"files@{ms:g}"]
    out["step_ms"] = list(step_ms)
    out["workers"] = list(workers)
    return out


def report_lines(r: dict) -> list[str]:
    """The rows of a :func:`measure` result, as ``main`` prints them."""
    lines = [f"loader throughput, synthetic 1024² samples (batch {r['batch']}, {r['steps']} batches per row, best of rounds)",
             f"  size per sample: files {r['mb_per_sample_files']:.2f} MB (fp32), shards {r['mb_per_sample_shards']:.2f} MB (bf16)"]
    for ms in r["step_ms"]:
        lines.append(f"  with a {ms:g} ms training step between batches:")
        lines.append(f"    {'per-file cache':<26}{r[f'files@{ms:g}']:8.1f} samples/s   1.00x")
        for n in r["workers"]:
            key = f"shards_w{n}@{ms:g}"
            lines.append(f"    {f'shards, {n} workers':<26}{r[key]:8.1f} samples/s   {r[key + '_vs_files']:.2f}x")
    return lines


def main() -> None:
    from devtools.comfy_env import enable_in_process_comfy

    enable_in_process_comfy()
    print("\n".join(report_lines(measure())))


if __name__ == "__main__":
    main()
