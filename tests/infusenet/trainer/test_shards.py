"""Sharded data: input WebDataset tars, the sharded encoder cache (parallel, resumable) and the
streaming loader (workers, shuffle buffer, buckets, exact resume, rank split, caption dropout)."""
from __future__ import annotations

import io
import itertools
import json

import numpy as np
import pytest
import torch

from devtools.face_models import draw_faces
from infusenet.trainer.buckets import aspect_buckets, fit_to_bucket, nearest_bucket
from infusenet.trainer.data import (DataError, EncodedSample, Encoders, Sample, batch_stream, caption_dropped,
                                    open_dataset, step_batch)
from infusenet.trainer.shards import (ShardedDataset, prepare_shards, write_empty_text, write_settings,
                                      write_shard)

BUCKETS = [(64, 64), (96, 48), (48, 96)]


def png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.clip(np.round(image * 255), 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------- buckets
def test_aspect_buckets_and_fit():
    assert aspect_buckets(1024 * 1024) == [(1024, 1024), (1152, 896), (896, 1152), (1280, 832), (832, 1280),
                                           (1408, 768), (768, 1408)]
    assert all(abs(w * h - 1024 ** 2) / 1024 ** 2 < 0.1 for w, h in aspect_buckets(1024 * 1024))
    assert aspect_buckets(64 * 64, 16) == BUCKETS
    assert nearest_bucket(1920, 1080, aspect_buckets(1024 * 1024)) == (1408, 768)
    assert nearest_bucket(3000, 4000, aspect_buckets(1024 * 1024)) == (896, 1152)
    # a face at the right edge of a wide image stays in the crop (centre crop would cut it away)
    wide = (draw_faces((200, 50), [(170, 10, 196, 40)]) * 255).astype(np.uint8)
    out, box = fit_to_bucket(wide, (64, 64))
    assert out.shape == (64, 64, 3) and out[:, :, 0].max() == 0            # centre crop: no face
    out, box = fit_to_bucket(wide, (64, 64), (170, 10, 196, 40))
    assert out.shape == (64, 64, 3) and out.max() > 200 and 0 <= box[0] < box[2] <= 64


# ---------------------------------------------------------------- input shards -> cache
@pytest.fixture(scope="module")
def input_tars(tmp_path_factory):
    """Two input tars: identity photos, MultiID-2M-style json embeddings with boxes, a pose image, an
    "auto" pose, an .npy embedding, and one record without an image."""
    import webdataset as wds

    d = tmp_path_factory.mktemp("input_shards")
    rng = np.random.default_rng(0)
    emb_small, emb_large, emb_npy = (rng.normal(size=512).astype(np.float32) for _ in range(3))
    photo = draw_faces((64, 64), [(12, 10, 44, 50)], texture_seed=0)
    with wds.TarWriter(str(d / "part-0.tar")) as sink:
        sink.write({"__key__": "a", "png": png(photo), "id.png": png(photo), "txt": "a photo of ann"})
        sink.write({"__key__": "b", "png": png(draw_faces((96, 48), [(2, 2, 12, 12), (60, 8, 90, 44)], texture_seed=1)),
                    "json": {"id": "multi/b", "caption_en": "two people", "bboxes": [[2, 2, 12, 12, 0.9], [60, 8, 90, 44, 0.99]],
                             "embeddings": [emb_small.tolist(), emb_large.tolist()], "name": "17"}})
        sink.write({"__key__": "c", "png": png(draw_faces((48, 96), [(8, 30, 40, 70)], texture_seed=2)),
                    "id.png": png(photo), "pose.png": png(draw_faces((48, 96), [(10, 30, 30, 60)])), "txt": "tall"})
    with wds.TarWriter(str(d / "part-1.tar")) as sink:
        sink.write({"__key__": "d", "png": png(draw_faces((64, 64), [(20, 6, 50, 40)], texture_seed=3)),
                    "id.png": png(photo), "json": {"caption": "auto pose", "pose": "auto"}})
        sink.write({"__key__": "e", "txt": "no image here"})
        buf = io.BytesIO()
        np.save(buf, emb_npy)
        sink.write({"__key__": "f", "png": png(draw_faces((100, 52), [(30, 4, 70, 48)], texture_seed=4)),
                    "embedding.npy": buf.getvalue(), "txt": "wide"})
    return d, {"multi/b": emb_large, "f": emb_npy}


@pytest.fixture(scope="module")
def shard_cache(input_tars, face_encoder, clip, vae, tmp_path_factory):
    """The input tars prepared by two ranks (one after the other) into one cache."""
    source, _ = input_tars
    cache = tmp_path_factory.mktemp("shard_cache")
    enc = Encoders(face_encoder, clip, vae)
    reports = [prepare_shards(source, cache, enc, area=64 * 64, multiple=16, rank=r, world=2) for r in (0, 1)]
    return cache, reports


def test_input_shards_become_a_bucketed_cache_written_by_two_ranks(input_tars, shard_cache, face_encoder, clip, vae):
    source, embeddings = input_tars
    tmp_path, (r0, r1) = shard_cache
    enc = Encoders(face_encoder, clip, vae)
    assert (r0.written, r1.written) == (["shard-000000"], ["shard-000001"])
    assert r0.prepared == ["a", "multi/b", "c"] and r1.prepared == ["d", "f"]
    assert list(r1.skipped) == ["e"] and "no target image" in r1.skipped["e"]

    ds = open_dataset(type("D", (), dict(cache_dir=str(tmp_path), format="auto", caption_dropout=0.0, num_workers=0,
                                         prefetch=2, buckets=None, shuffle_buffer=8))())
    assert isinstance(ds, ShardedDataset) and ds.ids() == ["a", "multi/b", "c", "d", "f"]
    assert ds.bucket_counts() == {(48, 96): 1, (64, 64): 2, (96, 48): 2}
    for i, (w, h) in enumerate([(64, 64), (96, 48), (48, 96), (64, 64), (96, 48)]):
        raw = ds.read(i)
        assert all(t.dtype == torch.bfloat16 for t in raw.values())
        assert raw["latent"].shape == (16, h // 8, w // 8) and raw["control"].shape == (16, h // 8, w // 8)
        assert raw["context"].shape == (77, 768) and raw["embedding"].shape == (512,)
    # the precomputed embedding of the larger face, unit length (bf16 storage)
    for sid, e in embeddings.items():
        got = ds[ds.ids().index(sid)]["embedding"]
        assert torch.allclose(got, torch.from_numpy(e / np.linalg.norm(e)), atol=4e-3)
    # the shard records are the index: per sample its bucket and byte range, per shard the counts
    record = json.loads((tmp_path / "shard-000000.json").read_text())
    assert record["count"] == 3 and record["buckets"] == {"64x64": 1, "96x48": 1, "48x96": 1}
    assert all(e["size"] > 0 for e in record["samples"]) and record["samples"][1]["person"] == "17"
    # the same folder with other buckets is refused
    with pytest.raises(DataError, match="other settings"):
        prepare_shards(source, tmp_path, enc, area=128 * 128, multiple=16)


class CountingVAE:
    """The real VAE, counting encodes; raises KeyboardInterrupt at encode number ``stop_at``."""

    def __init__(self, vae, stop_at: int | None = None):
        self.vae, self.stop_at, self.calls = vae, stop_at, 0

    def encode(self, image):
        self.calls += 1
        if self.stop_at is not None and self.calls == self.stop_at:
            raise KeyboardInterrupt("simulated crash")
        return self.vae.encode(image)


def shard_tensors(cache) -> dict[str, dict[str, torch.Tensor]]:
    ds = ShardedDataset(cache)
    return {sid: ds.read(i) for i, sid in enumerate(ds.ids())}


def test_interrupted_preparation_resumes_without_redoing_finished_shards(dataset_dir, face_encoder, clip, vae, tmp_path):
    manifest = tmp_path / "manifest.jsonl"
    photos = ["ann", "bob", "cy", "ann", "bob"]
    manifest.write_text("".join(json.dumps({"id": f"p{i}", "identity": str(dataset_dir / "photos" / f"{p}.png"),
                                            "caption": p, **({"pose": "auto"} if i == 0 else {})}) + "\n"
                                for i, p in enumerate(photos)))
    full = CountingVAE(vae)
    whole = prepare_shards(manifest, tmp_path / "whole", Encoders(face_encoder, clip, full), buckets=[(64, 64)], shard_size=2)
    assert whole.written == ["shard-000000", "shard-000001", "shard-000002"]
    assert full.calls == 7            # 5 targets, 1 "auto" pose, 1 black control shared by the others

    cache = tmp_path / "run"
    crashing = CountingVAE(vae, stop_at=6)       # p0, p1 (shard 0) done; p2 done, p3 interrupted (shard 1)
    with pytest.raises(KeyboardInterrupt):
        prepare_shards(manifest, cache, Encoders(face_encoder, clip, crashing), buckets=[(64, 64)], shard_size=2)
    assert sorted(p.name for p in cache.glob("shard-*")) == ["shard-000000.json", "shard-000000.tar"]
    (cache / "shard-000001.tar.tmp99999").write_bytes(b"left by a killed process")

    again = CountingVAE(vae)
    resumed = prepare_shards(manifest, cache, Encoders(face_encoder, clip, again), buckets=[(64, 64)], shard_size=2)
    assert resumed.reused == ["shard-000000"] and resumed.written == ["shard-000001", "shard-000002"]
    assert resumed.prepared == ["p2", "p3", "p4"]                     # shard 0's samples were not encoded again
    assert again.calls == 4                                           # 3 targets + this process's black control
    a, b = shard_tensors(tmp_path / "whole"), shard_tensors(cache)
    assert list(a) == list(b) == ["p0", "p1", "p2", "p3", "p4"]
    assert all(torch.equal(a[s][k], b[s][k]) for s in a for k in a[s])


def test_trainer_steps_through_buckets_of_a_sharded_cache(shard_cache, base, tmp_path):
    from devtools.tiny_training import tiny_config
    from infusenet.trainer.loop import Trainer

    cache, _ = shard_cache
    ds = ShardedDataset(cache, shuffle_buffer=4)
    assert ds.batches_per_epoch(2) == 2                   # one batch of 64x64, one of 96x48 (48x96 holds 1)
    shapes = {tuple(step_batch(ds, s, 2, 0, 1, 0, True)[0]["latent"].shape) for s in (0, 1)}
    assert shapes == {(2, 16, 8, 8), (2, 16, 6, 12)}
    trainer = Trainer(tiny_config(cache, tmp_path, steps=2, batch=2), base.patcher, ds)
    try:
        losses = trainer.run().losses
    finally:
        trainer.close()
    assert len(losses) == 2 and all(0.0 < v < 10.0 for v in losses)


# ---------------------------------------------------------------- the streaming loader
def synthetic_cache(root, shards: int = 5, per_shard: int = 8, buckets=BUCKETS, empty_value: float = -1.0):
    """A sharded cache of small random samples; sample n has embedding[0] == n and is in buckets[0] when
    n is even, else in buckets[1] or buckets[2] in turn."""
    write_settings(root, buckets, 8, per_shard, shards, "synthetic")
    write_empty_text(root, {"context": torch.full((8, 4), empty_value), "pooled": torch.full((4,), empty_value)})
    g = torch.Generator().manual_seed(0)
    for k in range(shards):
        items = []
        for j in range(per_shard):
            n = k * per_shard + j
            w, h = buckets[0] if n % 2 == 0 else buckets[1 + (n // 2) % 2]
            emb = torch.randn(512, generator=g)
            emb[0] = n
            t = {"latent": torch.randn(16, h // 8, w // 8, generator=g), "control": torch.randn(16, h // 8, w // 8, generator=g),
                 "embedding": emb, "context": torch.randn(8, 4, generator=g), "pooled": torch.randn(4, generator=g)}
            items.append((Sample(f"s{n}", "spss", None, "", ""), EncodedSample(t, (w, h), [])))
        write_shard(root, k, items)
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return synthetic_cache(tmp_path_factory.mktemp("synthetic_shards"))


def numbers(batch) -> list[int]:
    return [int(v) for v in batch["embedding"][:, 0]]


def take(stream, n):
    out = list(itertools.islice(stream, n))
    stream.close()
    return out


def same(a, b) -> bool:
    return all(pa == pb and all(torch.equal(ba[k], bb[k]) for k in ba) for (ba, pa), (bb, pb) in zip(a, b))


def test_stream_with_workers_resumes_exactly(cache):
    B = 4
    ds = ShardedDataset(cache, shuffle_buffer=6, num_workers=2, prefetch=2)
    per_epoch = ds.batches_per_epoch(B)
    assert per_epoch == 9                                    # buckets of 20, 10, 10 samples: 5 + 2 + 2 batches
    full = take(batch_stream(ds, B, 0, 1, 7, True, 0), 14)  # crosses an epoch boundary
    resumed = take(batch_stream(ds, B, 0, 1, 7, True, 5), 9)
    assert same(full[5:], resumed)
    inline = ShardedDataset(cache, shuffle_buffer=6, num_workers=0)
    assert same(full, take(batch_stream(inline, B, 0, 1, 7, True, 0), 14))
    assert [p for _, p in full[:2]] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    # every batch holds one bucket (they stack); an epoch is a permutation of what it uses
    epoch0 = [n for batch, _ in full[:per_epoch] for n in numbers(batch)]
    epoch1 = [n for batch, _ in full[per_epoch:] for n in numbers(batch)]
    assert len(set(epoch0)) == len(epoch0) == per_epoch * B and epoch0[:len(epoch1)] != epoch1
    assert epoch0 != sorted(epoch0)


def test_ranks_split_the_global_batch_and_read_only_their_part(cache):
    class CountingReads(ShardedDataset):
        def read(self, i):
            self.reads.append(i)
            return super().read(i)

    B = 4
    whole = ShardedDataset(cache, shuffle_buffer=6)
    ranks = [CountingReads(cache, shuffle_buffer=6) for _ in range(2)]
    for r in ranks:
        r.reads = []
    for step in (0, 3, 11):
        batch, positions = step_batch(whole, step, B, 0, 1, 7, True)
        parts = [step_batch(r, step, B, k, 2, 7, True) for k, r in enumerate(ranks)]
        assert numbers(batch) == numbers(parts[0][0]) + numbers(parts[1][0])
        assert positions == parts[0][1] + parts[1][1] == list(range(step * B, step * B + B))
        assert parts[1][1] == [step * B + 2, step * B + 3]
        assert len({tuple(b["latent"].shape) for b, _ in parts}) == 1     # the whole global batch is one bucket
    indices = [whole.global_batch(s, B, 7, True) for s in (0, 3, 11)]
    assert ranks[0].reads == [i for g in indices for i in g[:2]] and ranks[1].reads == [i for g in indices for i in g[2:]]


def test_caption_dropout_is_drawn_per_position(cache):
    B, steps, rate = 4, 40, 0.3
    ds = ShardedDataset(cache, shuffle_buffer=6, caption_dropout=rate)
    dropped = []
    for step in range(steps):
        batch, positions = step_batch(ds, step, B, 1, 2, 5, True)
        empty = (batch["context"] == -1).all(dim=(1, 2)) & (batch["pooled"] == -1).all(dim=1)
        assert empty.tolist() == [caption_dropped(5, p, rate) for p in positions]
        dropped += empty.tolist()
    assert 0.2 < sum(dropped) / len(dropped) < 0.4
    plain = ShardedDataset(cache, shuffle_buffer=6)
    batch, _ = step_batch(plain, 0, B, 1, 2, 5, True)
    assert not (batch["context"] == -1).all(dim=(1, 2)).any()


def test_bucket_choice_and_clear_errors(cache, tmp_path):
    square = ShardedDataset(cache, buckets=[(64, 64)])
    assert len(square) == 20 and square.buckets == [(64, 64)]
    batch, _ = step_batch(square, 0, 8, 0, 1, 0, True)
    assert batch["latent"].shape == (8, 16, 8, 8)
    with pytest.raises(DataError, match="no bucket .* holds a global batch of 32"):
        step_batch(ShardedDataset(cache), 0, 32, 0, 1, 0, True)
    with pytest.raises(DataError, match="prepare_shards"):
        ShardedDataset(tmp_path)
    # a shard whose tar is gone is left out, the others are read
    part = synthetic_cache(tmp_path / "part", shards=2)
    (part / "shard-000001.tar").unlink()
    assert len(ShardedDataset(part)) == 8
