"""Identity similarity: ArcFace cosine per generated image; None where no face is found."""
from __future__ import annotations

import numpy as np
import torch

from infusenet.face.identity import identity_and_faces
from infusenet.face.similarity import identity_similarity
from devtools.face_models import draw_faces


def test_cosine_per_image_and_none_without_a_face(encoder):
    same = draw_faces((640, 480), [(100, 100, 220, 260)], texture_seed=1)
    other = draw_faces((512, 512), [(200, 40, 260, 140)], texture_seed=5)  # another box shape: another "face"
    identity, uses = identity_and_faces(encoder, torch.from_numpy(same)[None])
    batch = torch.from_numpy(np.stack([same, np.zeros_like(same)]))
    scores = identity_similarity(encoder, identity, batch)
    assert scores[1] is None
    assert abs(scores[0] - 1.0) < 1e-5
    (score_other,) = identity_similarity(encoder, identity, torch.from_numpy(other)[None])
    emb_other = encoder.embed(np.stack([identity_and_faces(encoder, torch.from_numpy(other)[None])[1][0].crop_bgr]))[0]
    assert abs(score_other - float(emb_other @ identity.embedding)) < 1e-5
    assert score_other < scores[0]


def test_bands_at_and_around_the_published_thresholds():
    from infusenet import report
    from infusenet.face.similarity import LIKELY_SAME, SAME_PERSON, SIMILARITY_BANDS

    assert (SAME_PERSON, LIKELY_SAME) == (0.45, 0.32)
    assert [b[1] for b in SIMILARITY_BANDS] == ["same", "likely", "unlikely"]
    expected = {1.0: "same", 0.791: "same", 0.45: "same", 0.4499: "likely", 0.40: "likely", 0.32: "likely",
                0.3199: "unlikely", 0.228: "unlikely", 0.0: "unlikely", -1.0: "unlikely"}
    assert {s: report.similarity_band(s)["band"] for s in expected} == expected
    assert report.similarity_band(None) == {"score": None, "band": "no_face", "meaning": "no face found in this image"}
    assert "same person" in report.similarity_band(0.5)["meaning"]
    assert "unlikely" in report.similarity_band(0.1)["meaning"]


def known_batch(encoder):
    """The identity photo, four other generated faces and two images without a face, in a shuffled order."""
    size, box = (256, 256), (72, 56, 184, 200)
    same = draw_faces(size, [box], texture_seed=1)
    others = [draw_faces(size, [b], texture_seed=s) for b, s in (((72, 56, 184, 200), 2), ((60, 40, 200, 220), 3),
                                                                 ((90, 70, 170, 190), 4), ((40, 80, 220, 180), 6))]
    blank = np.zeros_like(same)
    images = [others[0], blank, others[1], same, others[2], blank, others[3]]
    identity, _ = identity_and_faces(encoder, torch.from_numpy(same)[None])
    return identity, torch.from_numpy(np.stack(images))


def test_ranking_and_keep_on_a_batch_with_known_faces(encoder):
    from infusenet.face.similarity import keep_best, rank_images

    identity, batch = known_batch(encoder)
    scores = identity_similarity(encoder, identity, batch)
    assert [s is None for s in scores] == [False, True, False, False, False, True, False]
    assert abs(scores[3] - 1.0) < 1e-5  # the identity's own photo
    faces = [i for i, s in enumerate(scores) if s is not None]
    assert len({round(scores[i], 6) for i in faces}) == len(faces)  # distinct scores: the order is meaningful
    ranking = rank_images(scores)
    assert ranking[0] == 3 and ranking[-2:] == [1, 5]  # best first, no face last in batch order
    assert [scores[i] for i in ranking[:5]] == sorted((scores[i] for i in faces), reverse=True)
    best, kept = keep_best(batch, scores, 3)
    assert kept == ranking[:3] and best.shape == (3, 256, 256, 3)
    assert torch.equal(best, batch[ranking[:3]]) and torch.equal(best[0], batch[3])
    everything, kept_all = keep_best(batch, scores, 64)  # more than the batch: every image, no face last
    assert kept_all == ranking and everything.shape[0] == 7 and everything[-1].abs().max() == 0


def test_ties_keep_batch_order_and_a_batch_without_faces_keeps_its_order():
    from infusenet import report
    from infusenet.face.similarity import rank_images

    assert rank_images([0.5, 0.7, 0.5, None, 0.7]) == [1, 4, 0, 2, 3]
    assert rank_images([None, None, None]) == [0, 1, 2]
    shown = report.similarity_report([0.5, 0.7, 0.5, None, 0.7], None, [1, 4, 0, 2, 3], [1, 4])
    assert shown["best_index"] == 1 and shown["kept"] == [1, 4]
    assert [(r["rank"], r["kept"], r["band"]) for r in shown["rows"]] == [
        (3, False, "same"), (1, True, "same"), (4, False, "same"), (5, False, "no_face"), (2, True, "same")]
    assert report.similarity_report([None], None, [0], [0])["best_index"] == -1
