"""Face mask for recrafting, and identities merged across chained nodes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from infusenet.face.errors import FaceError
from infusenet.face.combine import mean_embedding
from infusenet.face.identity import identity_from_images, merge_identities
from infusenet.face.masks import box_mask, face_mask
from devtools.face_models import draw_faces


def test_box_mask_covers_the_grown_box_and_nothing_far_away():
    mask = box_mask([40, 40, 80, 100], 160, 160, grow=0.25, feather=0)
    assert mask[70, 60] == 1.0                      # centre
    assert mask[70, 60 + 29] == 1.0                 # inside: half width 20 * (0.5 + 0.25) / 0.5 = 30
    assert mask[70, 60 + 31] == 0.0 and mask[5, 5] == 0.0
    soft = box_mask([40, 40, 80, 100], 160, 160, grow=0.25, feather=8)
    assert 0.0 < soft[70, 60 + 30] < 1.0 and soft.max() == pytest.approx(1.0, abs=1e-3)


def test_face_mask_follows_each_image_and_names_the_image_without_a_face(encoder):
    a = draw_faces((200, 160), [(30, 40, 90, 120)], texture_seed=1)
    b = draw_faces((200, 160), [(110, 30, 170, 110)], texture_seed=2)
    masks = face_mask(encoder, torch.from_numpy(np.stack([a, b])), grow=0.1, feather=0)
    assert masks.shape == (2, 160, 200)
    assert masks[0, 80, 60] == 1.0 and masks[0, 70, 140] == 0.0
    assert masks[1, 70, 140] == 1.0 and masks[1, 80, 60] == 0.0
    blank = torch.zeros(2, 64, 64, 3)
    blank[0] = torch.from_numpy(draw_faces((64, 64), [(16, 16, 48, 48)], texture_seed=3))
    with pytest.raises(FaceError, match="No face found in image 2 of 2"):
        face_mask(encoder, blank)


def test_merging_identities_equals_one_batch_of_all_photos(encoder):
    p1 = draw_faces((160, 160), [(40, 30, 120, 130)], texture_seed=4)
    p2 = draw_faces((160, 160), [(30, 40, 110, 140)], texture_seed=5)
    together = identity_from_images(encoder, torch.from_numpy(np.stack([p1, p2])))
    merged = merge_identities(identity_from_images(encoder, torch.from_numpy(p1[None])),
                              identity_from_images(encoder, torch.from_numpy(p2[None])))
    torch.testing.assert_close(merged.embeddings, together.embeddings, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(merged.embedding, mean_embedding(together.embeddings), rtol=1e-5, atol=1e-6)
    assert merged.boxes == together.boxes and merged.tokens is None
    assert float(merged.embedding.norm()) == pytest.approx(1.0, abs=1e-5)
