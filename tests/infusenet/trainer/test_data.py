"""Cache preparation: encoders run once per sample; bad samples are reported by id and skipped."""
from __future__ import annotations

import pytest
import torch

from infusenet.trainer.data import CachedDataset, read_manifest


def test_prepare_reports_bad_samples_and_caches_the_rest(prepared, dataset_dir):
    cache, report = prepared
    assert report.prepared == ["ann", "bob", "cy", "ann_spms/0", "ann_spms/1", "cmyk", "deep", "palette"]
    assert set(report.skipped) == {"missing", "noface", "garbage", "line 11"}
    assert "missing" in report.skipped["missing"] and "gone.png" in report.skipped["missing"]
    assert "no usable face" in report.skipped["noface"]
    assert "not a readable image" in report.skipped["garbage"]
    assert "CMYK" in report.notes["cmyk"] and "I;16" in report.notes["deep"] and "mode P" in report.notes["palette"]

    ds = CachedDataset(cache)
    assert len(ds) == 8 and ds.resolution == (64, 64)
    item = ds[0]
    assert item["latent"].shape == (16, 8, 8) and item["control"].shape == (16, 8, 8)
    assert item["embedding"].shape == (512,) and abs(float(item["embedding"].norm()) - 1) < 1e-5
    assert item["context"].shape == (77, 768) and item["pooled"].shape == (768,)
    # SPMS targets share the identity embedding of ann's photo; the "auto" pose differs from the black control
    spms0, spms1 = ds[3], ds[4]
    assert torch.equal(spms0["embedding"], ds[0]["embedding"]) and torch.equal(spms1["embedding"], ds[0]["embedding"])
    assert not torch.equal(ds[0]["control"], spms0["control"])     # auto pose vs black
    assert not torch.equal(spms0["latent"], ds[0]["latent"])        # target is bob's photo


def test_manifest_flattens_spms(dataset_dir):
    samples, problems = read_manifest(dataset_dir / "manifest.jsonl")
    spms = [s for s in samples if s.kind == "spms"]
    assert [s.id for s in spms] == ["ann_spms/0", "ann_spms/1"]
    assert spms[0].identity.endswith("ann.png") and spms[0].target.endswith("bob.png") and spms[0].pose is None
    assert spms[1].pose.endswith("ann.png")
    assert list(problems) == ["line 11"]


def test_missing_cache_file_is_reported_not_fatal(prepared, tmp_path):
    import json
    import shutil

    cache, _ = prepared
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    index = json.loads((copy / "index.json").read_text())
    (copy / index["samples"][1]["file"]).unlink()
    ds = CachedDataset(copy)
    assert len(ds) == 7 and list(ds.skipped) == ["bob"]


def test_file_cache_stream_dropout_and_format(prepared, clip, tmp_path):
    from infusenet.trainer.config import DataConfig
    from infusenet.trainer.data import (DataError, batch_stream, caption_dropped, collate, encode_text, open_dataset,
                                        sample_position, step_batch)

    cache, _ = prepared
    ds = open_dataset(DataConfig(cache_dir=str(cache), caption_dropout=0.5, num_workers=0))
    assert isinstance(ds, CachedDataset) and ds.caption_dropout == 0.5
    # the order is the epoch permutation of (seed, epoch), drawn once per epoch
    assert ds.global_batch(3, 4, 11, True) == [sample_position(p, 8, 11, True) for p in range(12, 16)]
    empty_context, empty_pooled = encode_text(clip, "")
    assert torch.equal(ds.empty_text()["context"], empty_context)
    dropped = 0
    for step in range(6):
        batch, positions = step_batch(ds, step, 4, 0, 1, 11, True)
        for k, p in enumerate(positions):
            is_empty = torch.equal(batch["context"][k], empty_context) and torch.equal(batch["pooled"][k], empty_pooled)
            assert is_empty == caption_dropped(11, p, 0.5)
            dropped += is_empty
    assert 4 <= dropped <= 20
    # workers give the same stream
    ds.num_workers = 2
    stream = batch_stream(ds, 4, 0, 1, 11, True, 2)
    first, positions = next(stream)
    stream.close()
    ref, ref_positions = step_batch(ds, 2, 4, 0, 1, 11, True)
    assert positions == ref_positions and all(torch.equal(first[k], ref[k]) for k in ref)
    with pytest.raises(DataError, match="'context' of different shapes"):
        collate([ds[0], {**ds[1], "context": torch.zeros(256, 768)}])
    with pytest.raises(ValueError, match="caption_dropout"):
        open_dataset(DataConfig(cache_dir=str(cache), caption_dropout=1.5))
    with pytest.raises(DataError, match="prepare_shards"):
        open_dataset(DataConfig(cache_dir=str(tmp_path), format="shards"))
