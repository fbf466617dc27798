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
