"""Watching a run: the TensorBoard scalars read back from the event files, validation images and their scores
(files, TensorBoard, parity with the pack's identity metric), and validation leaving training unchanged."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from devtools.face_models import draw_faces
from devtools.tiny_training import tiny_config
from infusenet.trainer.config import ValidationIdentity
from infusenet.trainer.data import CachedDataset
from infusenet.trainer.init import init_from_base
from infusenet.trainer.loop import FrozenBase, Trainer
from infusenet.trainer.watch import RunWatcher, ValidationResult, cosine, face_embeddings, summarise
from tests.infusenet.trainer.conftest import FACE_BOXES, RES


def events(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def watch_config(cache, out, steps: int, validate_every: int, dataset_dir=None):
    cfg = tiny_config(cache, out, steps=steps, batch=2)
    cfg.watch.validate_every = validate_every
    if dataset_dir is not None:
        cfg.watch.identities = [ValidationIdentity("ann", str(dataset_dir / "photos" / "ann.png")),
                                ValidationIdentity("bob", str(dataset_dir / "photos" / "bob.png"),
                                                   pose=str(dataset_dir / "photos" / "cy.png"))]
    cfg.watch.prompts = ["a portrait", "at the beach"]
    cfg.watch.width, cfg.watch.height = RES
    cfg.watch.steps, cfg.watch.guidance = 2, 1.0
    return cfg


def fresh_modules(base):
    frozen = FrozenBase(base.patcher)
    frozen.load()
    return init_from_base(frozen.dm, tiny_config("", "", 1).shape, seed=0)


def test_scalars_are_logged_every_step(base, prepared, tmp_path):
    cache, _ = prepared
    cfg = watch_config(cache, tmp_path, steps=3, validate_every=0)
    watcher = RunWatcher(cfg)
    trainer = Trainer(cfg, base.patcher, CachedDataset(cache), watcher=watcher)
    lrs = []
    try:
        losses = []
        for _ in range(3):
            lrs.append(trainer.scheduler.get_last_lr()[0])
            losses.append(trainer.train_step())
    finally:
        trainer.close()
    assert watcher.writer is None  # closed with the trainer
    acc = events(tmp_path / "logs")
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "train/samples_per_s", "train/memory_gb"} <= tags
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3]
    np.testing.assert_allclose([e.value for e in loss], losses, rtol=1e-6)
    np.testing.assert_allclose([e.value for e in acc.Scalars("train/lr")], lrs, rtol=1e-6)
    assert lrs[0] < lrs[1]  # the warm-up shows in the log
    for tag in ("train/grad_norm", "train/samples_per_s", "train/memory_gb"):
        values = [e.value for e in acc.Scalars(tag)]
        assert len(values) == 3 and all(np.isfinite(values)) and min(values) > 0, (tag, values)


def test_validation_images_scores_and_files(base, prepared, dataset_dir, face_encoder, clip, vae, tmp_path):
    from infusenet.face.similarity import identity_similarity

    cache, _ = prepared
    cfg = watch_config(cache, tmp_path, steps=2, validate_every=2, dataset_dir=dataset_dir)
    watcher = RunWatcher(cfg, clip=clip, vae=vae, face_encoder=face_encoder)
    trainer = Trainer(cfg, base.patcher, CachedDataset(cache), modules=fresh_modules(base), watcher=watcher)
    with torch.no_grad():  # residuals that change the image, so the two people's images differ
        for proj in [*trainer.module.infusenet.controlnet_blocks, *trainer.module.infusenet.controlnet_single_blocks]:
            proj.weight.normal_(0, 0.05)
    try:
        trainer.train_step()
        assert watcher.results == []  # step 1: not a multiple of 2
        trainer.train_step()
    finally:
        trainer.close()
    [result] = watcher.results
    assert result.step == 2 and set(result.images) == {"ann", "bob"}
    for name, images in result.images.items():
        assert tuple(images.shape) == (2, RES[1], RES[0], 3) and not torch.equal(images[0], images[1])
    assert not torch.equal(result.images["ann"], result.images["bob"])
    # the scores are the pack's identity metric, image by image
    refs = {r.name: r for r in watcher.references}
    for name in ("ann", "bob"):
        for other in ("ann", "bob"):
            assert result.similarity[name][other] == pytest.approx(
                identity_similarity(face_encoder, refs[other].identity, result.images[name]), abs=1e-5)
    # the files a person reads without TensorBoard
    folder = tmp_path / "logs" / "validation" / "step-000002"
    assert sorted(p.name for p in folder.iterdir()) == ["ann_00.png", "ann_01.png", "bob_00.png", "bob_01.png",
                                                        "scores.json"]
    from PIL import Image

    png = np.asarray(Image.open(folder / "bob_01.png"), dtype=np.float32) / 255.0
    np.testing.assert_allclose(png, result.images["bob"][1].numpy(), atol=0.5 / 255 + 1e-6)
    scores = json.loads((folder / "scores.json").read_text())
    assert scores["step"] == 2 and scores["similarity"] == json.loads(json.dumps(result.similarity))
    assert scores["identity"] == pytest.approx(result.identity)
    # and in TensorBoard: one strip per person (reference photo + one image per prompt), the scalars
    acc = events(tmp_path / "logs")
    assert {"validation/ann", "validation/bob"} <= set(acc.Tags()["images"])
    strip = acc.Images("validation/bob")[0]
    assert (strip.step, strip.width, strip.height) == (2, 3 * RES[0], RES[1])
    scalars = set(acc.Tags()["scalars"])
    assert {"validation/faces_found", "validation/seconds"} <= scalars
    for name in ("ann", "bob"):
        [event] = acc.Scalars(f"validation/identity/{name}")
        assert event.step == 2 and event.value == pytest.approx(result.identity[name], abs=1e-6)


def test_scores_count_a_missing_face_as_no_likeness(face_encoder):
    from infusenet.face.identity import identity_from_images
    from infusenet.face.similarity import identity_similarity

    photos = {n: torch.from_numpy(draw_faces(RES, [box], texture_seed=i)) for i, (n, box) in enumerate(FACE_BOXES.items())}
    refs = {n: identity_from_images(face_encoder, [p]) for n, p in photos.items()}
    images = torch.stack([photos["ann"], photos["bob"], torch.zeros_like(photos["ann"])])
    embeddings = face_embeddings(face_encoder, images)
    assert embeddings[2] is None
    for name in ("ann", "bob"):  # one detection per image, the same numbers as identity_similarity
        assert [cosine(e, refs[name]) for e in embeddings] == pytest.approx(
            identity_similarity(face_encoder, refs[name], images), abs=1e-6)
    result = ValidationResult(step=0, similarity={
        "ann": {"ann": [0.9, None], "bob": [0.1, None]},
        "bob": {"ann": [0.2, 0.4], "bob": [0.8, 0.6]}})
    summarise(result)
    assert result.identity == pytest.approx({"ann": 0.45, "bob": 0.7})
    assert result.mean == pytest.approx(0.575) and result.other_mean == pytest.approx((0.05 + 0.3) / 2)
    assert result.faces_found == pytest.approx(0.75)


def test_validation_leaves_training_unchanged(base, prepared, dataset_dir, face_encoder, clip, vae, tmp_path):
    cache, _ = prepared

    def run(out, validate_every):
        cfg = watch_config(cache, out, steps=3, validate_every=validate_every, dataset_dir=dataset_dir)
        cfg.watch.prompts = ["a portrait"]
        watcher = RunWatcher(cfg, clip=clip, vae=vae, face_encoder=face_encoder)
        trainer = Trainer(cfg, base.patcher, CachedDataset(cache), modules=fresh_modules(base), watcher=watcher)
        torch.manual_seed(123)
        try:
            losses = [trainer.train_step() for _ in range(3)]
            modes = [m.training for m in trainer.module.modules()]
            after = torch.rand(3)
            state = {k: v.clone() for k, v in trainer.module.state_dict().items()}
        finally:
            trainer.close()
        return losses, len(watcher.results), modes, after, state

    plain = run(tmp_path / "plain", 0)
    watched = run(tmp_path / "watched", 2)
    assert (plain[1], watched[1]) == (0, 1)
    assert watched[0] == plain[0]                 # the same losses, bit for bit
    assert watched[2] == plain[2] and all(watched[2])  # train mode kept
    assert torch.equal(watched[3], plain[3])     # the global random stream continues where it was
    assert all(torch.equal(watched[4][k], plain[4][k]) for k in plain[4])


def test_bad_validation_settings_say_what_is_missing(prepared, dataset_dir, face_encoder, clip, vae, tmp_path):
    cache, _ = prepared
    cfg = watch_config(cache, tmp_path, steps=1, validate_every=5)
    with pytest.raises(ValueError, match="missing: vae, face_encoder"):
        RunWatcher(cfg, clip=clip)
    with pytest.raises(ValueError, match="watch.identities is empty"):
        RunWatcher(cfg, clip=clip, vae=vae, face_encoder=face_encoder)
    cfg.watch.identities = [{"name": "nobody", "photo": str(dataset_dir / "photos" / "noface.png")}]
    with pytest.raises(ValueError, match="'nobody' cannot be used: .*No face found"):
        RunWatcher(cfg, clip=clip, vae=vae, face_encoder=face_encoder)
    cfg.watch.identities = [{"name": "gone", "photo": str(tmp_path / "gone.png")}]
    with pytest.raises(ValueError, match="'gone' cannot be used: .*does not exist"):
        RunWatcher(cfg, clip=clip, vae=vae, face_encoder=face_encoder)
    cfg.watch.identities = [{"name": "ann", "photo": str(dataset_dir / "photos" / "ann.png")}]
    cfg.watch.ema = True
    with pytest.raises(ValueError, match="watch.ema scores the EMA weights, but this run keeps none"):
        RunWatcher(cfg, clip=clip, vae=vae, face_encoder=face_encoder)
    cfg.watch.validate_every = -1
    with pytest.raises(ValueError, match="validate_every must be a whole number >= 0"):
        RunWatcher(cfg)
