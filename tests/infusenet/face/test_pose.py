"""The keypoint image: the reference's resize-and-pad, InstantID-style drawing, face choice and mask."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from infusenet.face.errors import FaceError
from infusenet.face.pose import (
    DEFAULT_HEIGHT, DEFAULT_WIDTH, KEYPOINT_COLOURS, draw_keypoints, fit_to_canvas, pose_image, pose_keypoints,
)
from devtools.face_models import draw_faces, expected_keypoints


def test_defaults_are_the_reference_output_size():
    assert (DEFAULT_WIDTH, DEFAULT_HEIGHT) == (864, 1152)


def test_fit_crops_the_overflowing_side_like_the_reference():
    # 480x640 into 256x320: scaled to 256x341, pasted 11 rows up, so 11 rows lost at the top, 10 at the bottom
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (640, 480, 3), dtype=np.uint8)
    out = fit_to_canvas(photo, 256, 320)
    scaled = np.asarray(Image.fromarray(photo).resize((256, 341), Image.LANCZOS))
    assert out.shape == (320, 256, 3)
    np.testing.assert_array_equal(out, scaled[11:331])


def test_fit_pads_the_short_side_with_white():
    photo = np.zeros((100, 400, 3), dtype=np.uint8)  # wide photo into a portrait canvas
    out = fit_to_canvas(photo, 200, 300)
    # scaled to 200x50, centred: rows 125..174 photo, the rest white
    assert (out[:125] == 255).all() and (out[175:] == 255).all()
    assert (out[126:174] == 0).all()
    landscape = fit_to_canvas(np.zeros((300, 300, 3), dtype=np.uint8), 400, 200)  # height is the shorter side
    assert (landscape[:, 100:300] == 0).all() and (landscape[:, :100] == 255).all() and (landscape[:, 300:] == 255).all()


def test_keypoints_are_drawn_the_instantid_way():
    kps = np.array([[60.0, 50.0], [140.0, 50.0], [100.0, 100.0], [70.0, 150.0], [130.0, 150.0]])
    out = draw_keypoints(kps, 200, 220)
    assert out.shape == (220, 200, 3) and out.dtype == np.uint8
    for (x, y), colour in zip(kps, KEYPOINT_COLOURS):
        np.testing.assert_array_equal(out[int(y), int(x)], colour)  # filled circle, full colour
        np.testing.assert_array_equal(out[int(y) + 9, int(x)], colour)  # radius 10
    # limb midpoints: 60% of the first point's colour (limbs 0-2, 1-2, 3-2, 4-2)
    for a in (0, 1, 3, 4):
        mid = ((kps[a] + kps[2]) / 2).astype(int)
        np.testing.assert_array_equal(out[mid[1], mid[0]], (np.array(KEYPOINT_COLOURS[a]) * 0.6).astype(np.uint8))
    # limb half-width 4: 3 px beside the 0-2 limb's midpoint is still drawn, 7 px is not
    assert out[:, :, :].sum() > 0 and (out[0] == 0).all()
    mid = ((kps[0] + kps[2]) / 2)
    normal = np.array([-(kps[2] - kps[0])[1], (kps[2] - kps[0])[0]])
    normal /= np.linalg.norm(normal)
    near, far = (mid + 3 * normal).astype(int), (mid + 7 * normal).astype(int)
    assert out[near[1], near[0]].any() and not out[far[1], far[0]].any()


def test_pose_image_is_the_fitted_photo_s_keypoints(encoder):
    photo = draw_faces((512, 640), [(160, 200, 320, 400)])  # 512x640 -> 256x320: exactly half size
    image = pose_image(encoder, torch.from_numpy(photo)[None], 256, 320)
    assert image.shape == (1, 320, 256, 3)
    face, canvas = pose_keypoints(encoder, torch.from_numpy(photo), 256, 320)
    assert canvas.shape == (320, 256, 3)
    np.testing.assert_allclose(face.box, [80, 100, 160, 200], atol=0.5)
    np.testing.assert_allclose(face.keypoints, expected_keypoints([80, 100, 160, 200]), atol=0.5)
    np.testing.assert_array_equal((image[0].numpy() * 255).round().astype(np.uint8),
                                  draw_keypoints(face.keypoints, 256, 320))


def test_pose_keypoints_follow_the_crop_offset(encoder):
    # 480x640 photo into 256x320: scale 256/480, then 11 rows cut at the top
    photo = draw_faces((480, 640), [(150, 210, 330, 450)])
    face, _ = pose_keypoints(encoder, torch.from_numpy(photo), 256, 320)
    s = 256 / 480
    expected = [150 * s, 210 * s - 11, 330 * s, 450 * s - 11]
    np.testing.assert_allclose(face.box, expected, atol=1.0)


def test_chosen_face_and_mask(encoder):
    photo = draw_faces((512, 640), [(40, 100, 200, 300), (320, 120, 400, 220)])  # big left, small right
    photo_t = torch.from_numpy(photo)
    big, _ = pose_keypoints(encoder, photo_t, 256, 320)
    small, _ = pose_keypoints(encoder, photo_t, 256, 320, face_select=("left_to_right", 1))
    np.testing.assert_allclose(big.box, [20, 50, 100, 150], atol=0.5)
    np.testing.assert_allclose(small.box, [160, 60, 200, 110], atol=0.5)
    mask = torch.zeros(1, 640, 512)
    mask[0, :, 300:] = 1.0  # right part of the photo only
    masked, _ = pose_keypoints(encoder, photo_t, 256, 320, mask=mask)
    np.testing.assert_allclose(masked.box, small.box, atol=1e-4)
    empty = torch.zeros(640, 512)
    empty[:50, :50] = 1.0
    with pytest.raises(FaceError, match="inside the mask"):
        pose_image(encoder, photo_t, 256, 320, mask=empty)


def test_no_face_in_the_pose_photo(encoder):
    with pytest.raises(FaceError, match="pose reference image.*640x640, 320x320, 160x160"):
        pose_image(encoder, torch.zeros(1, 300, 200, 3), 256, 320)
