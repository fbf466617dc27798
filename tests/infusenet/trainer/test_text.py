"""FLUX's T5 at the reference length: ComfyUI's real tokenizers, a small T5 with the real key layout, a
caption over 512 tokens next to a short one in one batch, and one training step on it."""
from __future__ import annotations

import json
import os

import pytest
import torch

from devtools.tiny_training import tiny_config
from infusenet.trainer.data import CachedDataset, Encoders, prepare_cache, step_batch
from infusenet.trainer.text import T5_TOKENS, encode_caption, fit_t5_tokens, tokenize_caption

LONG = " ".join(["a smiling woman with curly red hair stands near the sea at dusk, wearing a green coat;"] * 40)
SHORT = "a photo of a man (left) with glasses"


@pytest.fixture(scope="module")
def flux_clip(tmp_path_factory):
    from devtools.host_models import load_flux_text_encoders, write_t5_tiny
    from tests.fixtures.shared_files import shared_clip_l

    d = tmp_path_factory.mktemp("flux_text")
    clip_l = shared_clip_l(tmp_path_factory, d / "clip_l.safetensors")
    return load_flux_text_encoders(clip_l, write_t5_tiny(d / "t5xxl_tiny.safetensors"))


def reference_ids(caption: str) -> list[int]:
    """What diffusers' FluxPipeline feeds T5 (max_sequence_length=512), from ComfyUI's tokenizer files."""
    import comfy.text_encoders.flux
    from transformers import T5TokenizerFast

    folder = os.path.join(os.path.dirname(comfy.text_encoders.flux.__file__), "t5_tokenizer")
    tok = T5TokenizerFast.from_pretrained(folder)
    return tok(caption, padding="max_length", max_length=T5_TOKENS, truncation=True).input_ids


def test_t5_tokens_are_the_reference_pipelines(flux_clip):
    raw_long = flux_clip.tokenize(LONG)["t5xxl"]
    assert sum(len(w) for w in raw_long) > T5_TOKENS                  # ComfyUI never truncates
    assert sum(len(w) for w in flux_clip.tokenize(SHORT)["t5xxl"]) == 256   # and pads to 256
    for caption in (LONG, SHORT):
        tokens = tokenize_caption(flux_clip, caption)
        ids = [t[0] for t in tokens["t5xxl"][0]]
        assert ids == reference_ids(caption)
        assert len(tokens["l"][0]) == 77                               # CLIP-L as ComfyUI makes it
    assert [t[1] for t in tokenize_caption(flux_clip, SHORT)["t5xxl"][0]] == [1.0] * T5_TOKENS  # "(left)" is text
    with pytest.raises(ValueError, match="at least 2 tokens"):
        fit_t5_tokens(raw_long, 1)


def test_long_caption_next_to_a_short_one_trains(flux_clip, face_encoder, vae, dataset_dir, tmp_path):
    from devtools import flux_pair as fp
    from infusenet.trainer.loop import Trainer

    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"id": i, "identity": str(dataset_dir / "photos" / f"{i}.png"), "caption": c}) + "\n"
                                for i, c in (("ann", LONG), ("bob", SHORT))))
    report = prepare_cache(manifest, tmp_path / "cache", Encoders(face_encoder, flux_clip, vae), (64, 64))
    assert report.prepared == ["ann", "bob"]
    ds = CachedDataset(tmp_path / "cache")
    assert [tuple(ds[i]["context"].shape) for i in range(2)] == [(T5_TOKENS, 64), (T5_TOKENS, 64)]
    context, pooled = encode_caption(flux_clip, LONG)
    assert torch.equal(ds[0]["context"], context) and torch.equal(ds[0]["pooled"], pooled)
    assert not torch.equal(ds[0]["context"], ds[1]["context"])
    batch, _ = step_batch(ds, 0, 2, 0, 1, 0, False)
    assert batch["context"].shape == (2, T5_TOKENS, 64) and batch["pooled"].shape == (2, 768)

    base = fp.make_base(2, 2, seed=0, text_dim=64)
    trainer = Trainer(tiny_config(tmp_path / "cache", tmp_path / "run", steps=1, batch=2), base.patcher, ds)
    try:
        result = trainer.run()
    finally:
        trainer.close()
    assert len(result.losses) == 1 and 0.0 < result.losses[0] < 10.0
