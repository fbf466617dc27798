"""Several photos of one person -> one identity: face quality, the three ways to combine, the per-photo
report (weights, similarities, outliers) and add_to chains. Photos of known quality: a big sharp face, a
small one, a blurred one, and one photo of another person."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from infusenet.face.combine import COMBINE_MODES, combination_weights
from infusenet.face.errors import FaceError
from infusenet.face.identity import identity_from_images, merge_identities, photo_report_lines, photo_rows
from infusenet.face.quality import face_quality, quality_score
from infusenet.face.similarity import LIKELY_SAME
from tests.infusenet.face.people import draw_person

BIG = draw_person((640, 480), [(200, 100, 360, 300)], 0)
SMALL = draw_person((640, 480), [(300, 200, 348, 264)], 0)
BLURRED = cv2.GaussianBlur(BIG, (0, 0), 3)
OTHER = draw_person((640, 480), [(200, 100, 360, 300)], 1)
PHOTOS = [BIG, SMALL, BLURRED, OTHER]


def batch(*photos) -> list[torch.Tensor]:
    return [torch.from_numpy(p) for p in photos]


def unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


def test_quality_formula():
    assert quality_score(1.0, 112, 100) == pytest.approx(0.5)
    assert quality_score(0.8, 56, 300) == pytest.approx(0.8 * 0.5 * 0.75)
    assert quality_score(1.0, 400, 1e9) == pytest.approx(1.0, abs=1e-6)  # size and sharpness saturate
    assert quality_score(1.3, 112, 100) == pytest.approx(0.5)  # score clipped to 1
    assert quality_score(0.9, 0, 100) == 0.0 and quality_score(0.9, 112, 0) == 0.0


def test_quality_orders_big_sharp_over_small_over_blurred(people_encoder):
    identity = identity_from_images(people_encoder, batch(BIG, SMALL, BLURRED))
    big, small, blurred = identity.qualities
    assert (big.face_size, small.face_size) == (160.0, 48.0)  # box short sides in photo pixels
    assert big.detector_score > 0.9 and small.detector_score > 0.9 and blurred.detector_score > 0.9
    assert blurred.sharpness < 0.2 * big.sharpness
    assert big.quality > small.quality > blurred.quality > 0.0
    for q in identity.qualities:
        assert q.quality == pytest.approx(quality_score(q.detector_score, q.face_size, q.sharpness))
        assert 0.0 <= q.quality <= 1.0
    # sharpness is the variance of the Laplacian of the aligned crop
    from infusenet.face.identity import identity_and_faces

    _, uses = identity_and_faces(people_encoder, batch(BIG))
    grey = cv2.cvtColor(uses[0].crop_bgr, cv2.COLOR_BGR2GRAY)
    assert face_quality(uses[0].face, uses[0].crop_bgr).sharpness == pytest.approx(cv2.Laplacian(grey, cv2.CV_64F).var())


def test_mean_is_the_embedding_as_before(people_encoder):
    default = identity_from_images(people_encoder, batch(*PHOTOS))
    mean = identity_from_images(people_encoder, batch(*PHOTOS), combine_mode="mean")
    rows = torch.nn.functional.normalize(mean.embeddings, dim=-1)
    assert torch.equal(mean.embedding, torch.nn.functional.normalize(rows.mean(dim=0), dim=0))
    assert torch.equal(default.embedding, mean.embedding) and default.combine == "mean"
    assert mean.weights == pytest.approx([0.25] * 4)


def test_quality_weighted_is_the_weighted_mean(people_encoder):
    identity = identity_from_images(people_encoder, batch(*PHOTOS), combine_mode="quality weighted")
    q = torch.tensor([v.quality for v in identity.qualities], dtype=torch.float64)
    w = q / q.sum()
    expected = unit(sum(float(w[i]) * unit(identity.embeddings[i].double()) for i in range(4)))
    torch.testing.assert_close(identity.embedding.double(), expected, atol=1e-6, rtol=0)
    assert identity.weights == pytest.approx(w.tolist()) and sum(identity.weights) == pytest.approx(1.0)
    assert identity.weights[0] > identity.weights[1] > identity.weights[2]  # big sharp > small > blurred
    mean = identity_from_images(people_encoder, batch(*PHOTOS))
    assert float((identity.embedding - mean.embedding).norm()) > 1e-3  # a different identity than the mean


def test_best_photo_takes_the_best_face_only(people_encoder):
    identity = identity_from_images(people_encoder, batch(SMALL, BLURRED, BIG), combine_mode="best photo")
    assert identity.weights == [0.0, 0.0, 1.0]  # the big sharp face, wherever it is in the batch
    torch.testing.assert_close(identity.embedding, unit(identity.embeddings[2]))
    assert combination_weights([0.5, 0.5], "best photo").tolist() == [1.0, 0.0]  # equals: the first


def test_per_photo_similarities_and_the_outlier(people_encoder):
    for mode in COMBINE_MODES:
        identity = identity_from_images(people_encoder, batch(*PHOTOS), combine_mode=mode)
        rows = photo_rows(identity)
        e = torch.nn.functional.normalize(identity.embeddings.double(), dim=-1)
        for i, row in enumerate(rows):
            assert row["similarity"] == pytest.approx(float(e[i] @ unit(identity.embedding.double())), abs=1e-4)
            rest = unit(e[[j for j in range(4) if j != i]].mean(0))  # the other photos, counted equally
            assert row["similarity_to_others"] == pytest.approx(float(e[i] @ rest), abs=1e-4)
            assert row["weight"] == pytest.approx(identity.weights[i], abs=1e-4)
        assert [r["outlier"] for r in rows] == [False, False, False, True], (mode, rows)
        assert rows[3]["similarity_to_others"] < LIKELY_SAME < min(r["similarity_to_others"] for r in rows[:3])
    lines = photo_report_lines(identity)
    assert len(lines) == 4 and ["OUTLIER" in line for line in lines] == [False, False, False, True]
    assert "photo 2 (640x480): the largest of 1 face, box 300,200-348,264 (48x64 px)" in lines[1]
    assert f"quality {identity.qualities[1].quality:.3f}" in lines[1] and "weight 0.000 (best photo)" in lines[1]
    same = identity_from_images(people_encoder, batch(BIG, SMALL, BLURRED))
    print(f"similarity to the others, same person: {[r['similarity_to_others'] for r in photo_rows(same)]}; "
          f"outlier: {rows[3]['similarity_to_others']:.3f}")
    assert not any(r["outlier"] for r in photo_rows(same))
    assert photo_rows(identity_from_images(people_encoder, batch(BIG)))[0]["similarity_to_others"] is None


def test_add_to_recombines_every_photo_with_the_chosen_mode(people_encoder):
    together = identity_from_images(people_encoder, batch(*PHOTOS), combine_mode="quality weighted")
    first = identity_from_images(people_encoder, batch(BIG, SMALL), combine_mode="mean")
    second = identity_from_images(people_encoder, batch(BLURRED, OTHER), combine_mode="quality weighted")
    chained = merge_identities(first, second, "quality weighted")
    torch.testing.assert_close(chained.embedding, together.embedding, atol=1e-5, rtol=0)  # batches of 2 vs 4
    assert chained.weights == pytest.approx(together.weights) and chained.combine == "quality weighted"
    assert [q.quality for q in chained.qualities] == pytest.approx([q.quality for q in together.qualities])
    assert [r["outlier"] for r in photo_rows(chained)] == [False, False, False, True]
    best = merge_identities(first, second, "best photo")
    assert best.weights == [1.0, 0.0, 0.0, 0.0]


def test_weighting_needs_the_qualities_and_modes_are_checked(people_encoder):
    from infusenet.face.identity import FaceIdentity

    e = identity_from_images(people_encoder, batch(BIG)).embeddings
    bare = FaceIdentity(e, e[0], [[0, 0, 1, 1]], [[[0, 0]] * 5], [(1, 1)])  # made elsewhere: no qualities
    measured = identity_from_images(people_encoder, batch(SMALL))
    assert merge_identities(bare, measured, "mean").weights == [0.5, 0.5]
    with pytest.raises(FaceError, match="needs each photo's face quality"):
        merge_identities(bare, measured, "quality weighted")
    with pytest.raises(FaceError, match="expected one of"):
        identity_from_images(people_encoder, batch(BIG), combine_mode="median")
