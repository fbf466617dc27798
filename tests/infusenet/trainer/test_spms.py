"""SPMS synthesis: the real ComfyUI sampling path end to end, and the filter with a drawn-face generator.

Random tiny models draw noise (the fake detector may or may not find a bright patch), so the real path
checks generation, decoding, scoring and that the counts and manifest follow the scores; a generator that returns drawn faces (the same
rectangle as the identity photo, or another one) checks acceptance and the similarity threshold."""
from __future__ import annotations

import os

import torch

from infusenet.trainer.data import read_manifest
from infusenet.trainer.init import init_from_base
from infusenet.trainer.loop import FrozenBase
from infusenet.trainer.spms import ComfyGenerator, bundle_from_modules, synthesize_spms
from devtools.face_models import draw_faces
from tests.infusenet.trainer.conftest import FACE_BOXES, RES, tiny_shape


def test_real_sampling_path_generates_scores_and_filters(base, face_encoder, clip, vae, dataset_dir, tmp_path):
    frozen = FrozenBase(base.patcher)
    net, resampler = init_from_base(frozen.dm, tiny_shape())
    with torch.no_grad():
        for proj in net.controlnet_blocks:
            proj.weight.normal_(0, 0.02)  # non-zero residuals so the patch does something
    bundle = bundle_from_modules(net, resampler)
    seen = []
    real = ComfyGenerator(base.patcher, bundle, clip, vae, steps=2)

    def generate(req):
        image = real(req)
        seen.append(image)
        return image

    report = synthesize_spms([("ann", str(dataset_dir / "photos" / "ann.png"))], ["a portrait", "at the beach"],
                             face_encoder, resampler, generate, tmp_path, threshold=0.5, width=RES[0], height=RES[1])
    assert [tuple(i.shape) for i in seen] == [(1, 64, 64, 3)] * 2 and not torch.equal(seen[0], seen[1])
    scores = report.scores["ann"]
    assert len(scores) == 2 and report.accepted + report.rejected == 2
    assert report.rejected_no_face == sum(s is None for s in scores)
    assert report.accepted == sum(s is not None and s >= 0.5 for s in scores)
    assert len(read_manifest(report.manifest)[0]) == report.accepted


def test_filter_keeps_similar_faces_and_writes_a_manifest(face_encoder, dataset_dir, tmp_path):
    from infusenet.resampler import Resampler, ResamplerConfig

    resampler = Resampler(ResamplerConfig(64, 1, 1, 64, 4, 512, 4096, 4))
    photos = {n: str(dataset_dir / "photos" / f"{n}.png") for n in FACE_BOXES}
    texture = {n: i for i, n in enumerate(FACE_BOXES)}

    def generate(req):
        k = req.seed
        box = FACE_BOXES[req.identity_id] if k % 3 == 0 else FACE_BOXES["cy" if req.identity_id != "cy" else "bob"]
        if k % 3 == 2:
            return torch.zeros(1, 64, 64, 3)  # no face
        return torch.from_numpy(draw_faces(RES, [box], texture_seed=texture[req.identity_id] if k % 3 == 0 else 9))[None]

    report = synthesize_spms([("ann", photos["ann"]), ("bob", photos["bob"]), ("ghost", "missing.png")],
                             ["p0", "p1", "p2"], face_encoder, resampler, generate, tmp_path, threshold=0.9,
                             width=RES[0], height=RES[1])
    assert report.accepted == 2 and report.rejected_no_face == 2 and report.rejected_low_similarity == 2
    assert list(report.skipped_identities) == ["ghost"]
    assert report.scores["ann"][0] > 0.99 and report.scores["ann"][1] < 0.9 and report.scores["ann"][2] is None
    samples, problems = read_manifest(report.manifest)
    assert not problems and [s.id for s in samples] == ["ann/0", "bob/0"]
    assert os.path.normpath(samples[0].identity) == photos["ann"] and samples[0].pose == "auto" and samples[0].caption == "p0"
