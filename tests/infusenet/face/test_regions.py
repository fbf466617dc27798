"""Face Regions: the canvas split between the faces of a layout photo, lined up with the pose image; the
InfuseNet residuals of each identity stay in its region; the check that two identities would mix."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from devtools.face_models import draw_faces
from infusenet.face.errors import FaceError
from infusenet.face.identity import identity_from_images
from infusenet.face.pose import draw_keypoints, pose_keypoints
from infusenet.face.regions import (ORDERS, face_regions, mixing_pairs, mixing_warnings, regions_preview,
                                    regions_report_lines)
from tests.infusenet.face.people import draw_person

# A 480x640 photo fills an 864x1152 canvas exactly (scale 1.8). Three faces whose four orders all differ:
# left to right A B C, right to left C B A, largest first B C A, top to bottom C A B. No two share rows or
# columns (the stand-in detector measures bright pixels along an anchor's row and column).
A, B, C = (10, 250, 90, 350), (150, 470, 290, 620), (340, 40, 460, 190)
LAYOUT = torch.from_numpy(draw_faces((480, 640), [A, B, C], texture_seed=3))[None]
W, H, SCALE = 864, 1152, 1.8
EXPECTED_ORDER = {"left to right": "ABC", "right to left": "CBA", "largest first": "BCA", "top to bottom": "CAB"}


def canvas_centre(box, scale=SCALE, crop_top=0.0) -> tuple[int, int]:
    x1, y1, x2, y2 = box
    return int((x1 + x2) / 2 * scale), int((y1 + y2) / 2 * scale - crop_top)


def test_each_face_gets_its_own_region_and_the_regions_cover_the_canvas(encoder):
    regions = face_regions(encoder, LAYOUT, W, H, people=3, order="left to right", feather=0)
    masks = regions.masks
    assert masks.shape == (3, H, W) and regions.found == 3
    assert set(torch.unique(masks).tolist()) == {0.0, 1.0}
    assert torch.equal(masks.sum(0), torch.ones(H, W))  # disjoint and covering: a partition
    for k, box in enumerate((A, B, C)):
        x, y = canvas_centre(box)
        assert masks[k, y, x] == 1.0
        np.testing.assert_allclose(regions.faces[k].box, np.array(box) * SCALE, atol=2.0)
    shares = masks.mean(dim=(1, 2)).tolist()
    print(f"\nregion shares of the canvas (A, B, C): {[round(s, 3) for s in shares]}")
    assert all(0.15 < s < 0.6 for s in shares)


@pytest.mark.parametrize("order", ORDERS)
def test_orders_assign_the_faces(encoder, order):
    regions = face_regions(encoder, LAYOUT, W, H, people=3, order=order)
    boxes = dict(zip("ABC", (A, B, C)))
    for k, name in enumerate(EXPECTED_ORDER[order]):
        x, y = canvas_centre(boxes[name])
        assert regions.masks[k, y, x] == 1.0, (order, k, name)


def test_people_keeps_the_largest_faces(encoder):
    regions = face_regions(encoder, LAYOUT, W, H, people=2, order="left to right")
    assert regions.masks.shape == (2, H, W) and regions.found == 3
    for k, box in enumerate((B, C)):  # A is the smallest
        x, y = canvas_centre(box)
        assert regions.masks[k, y, x] == 1.0
    one = face_regions(encoder, LAYOUT, W, H, people=1)
    assert torch.equal(one.masks, torch.ones(1, H, W))


def test_feather_blurs_the_borders_and_the_masks_still_sum_to_one(encoder):
    hard = face_regions(encoder, LAYOUT, W, H, people=3, feather=0).masks
    soft = face_regions(encoder, LAYOUT, W, H, people=3, feather=24).masks
    assert float((soft.sum(0) - 1).abs().max()) < 1e-6
    assert float(soft.min()) >= 0.0 and float(soft.max()) <= 1.0 + 1e-6
    between = ((soft > 0.05) & (soft < 0.95)).any(0)
    assert 0 < int(between.sum()) < 0.2 * H * W  # soft only along the borders
    border = (hard[:, :, 1:] != hard[:, :, :-1]).any(0)  # a pixel beside a hard border is soft now
    ys, xs = torch.nonzero(border, as_tuple=True)
    assert bool(between[ys[0], xs[0]])
    for k, box in enumerate((A, B, C)):
        x, y = canvas_centre(box)
        assert float(soft[k, y, x]) > 0.99


@pytest.mark.parametrize("photo_size,canvas,scale,crop_top", [((480, 640), (864, 1152), 1.8, 0.0),
                                                               ((400, 640), (864, 1152), 2.16, 115.0)])
def test_regions_line_up_with_the_pose_image_of_the_same_photo(encoder, photo_size, canvas, scale, crop_top):
    # the second photo is taller than the canvas: fitted to the width (864x1382) and cropped, 115 rows at the top
    boxes = [(20, 120, 140, 270), (240, 360, 380, 520)]
    layout = torch.from_numpy(draw_faces(photo_size, boxes, texture_seed=4))[None]
    width, height = canvas
    regions = face_regions(encoder, layout, width, height, people=2, order="left to right")
    for k, box in enumerate(boxes):
        pose_face, _ = pose_keypoints(encoder, layout, width, height, face_select=("left_to_right", k))
        np.testing.assert_array_equal(regions.faces[k].keypoints, pose_face.keypoints)
        np.testing.assert_array_equal(regions.faces[k].box, pose_face.box)
        drawn = draw_keypoints(pose_face.keypoints, width, height).any(-1)  # where Pose Image draws this face
        assert bool(regions.masks[k][torch.from_numpy(drawn)].eq(1.0).all())
        x, y = canvas_centre(box, scale, crop_top)
        assert regions.masks[k, y, x] == 1.0
        np.testing.assert_allclose(regions.faces[k].centre, (x, y), atol=3.0)


def test_too_few_faces_says_how_many_were_found(encoder):
    with pytest.raises(FaceError) as err:
        face_regions(encoder, LAYOUT, W, H, people=4)
    text = str(err.value)
    assert "4 people asked for" in text and "has 3 faces" in text and "set people to 3" in text
    assert "640x640, 320x320, 160x160" in text
    with pytest.raises(FaceError, match="has 0 faces"):
        face_regions(encoder, torch.zeros(1, 64, 48, 3), 432, 576, people=1)
    with pytest.raises(FaceError, match="expected one of"):
        face_regions(encoder, LAYOUT, W, H, order="clockwise")
    with pytest.raises(FaceError, match="people must be 1 to 4"):
        face_regions(encoder, LAYOUT, W, H, people=5)


def test_mixing_check_warns_for_the_same_person_only(people_encoder):
    big = draw_person((640, 480), [(200, 100, 360, 300)], 0)
    small = draw_person((640, 480), [(300, 200, 348, 264)], 0)
    other = draw_person((640, 480), [(200, 100, 360, 300)], 1)
    one = identity_from_images(people_encoder, [torch.from_numpy(big)])
    same = identity_from_images(people_encoder, [torch.from_numpy(small)])
    two = identity_from_images(people_encoder, [torch.from_numpy(other)])
    pairs = mixing_pairs([("identity_1", one), ("identity_2", same), ("identity_3", two)])
    expected = {("identity_1", "identity_2"): float(one.embedding @ same.embedding),
                ("identity_1", "identity_3"): float(one.embedding @ two.embedding),
                ("identity_2", "identity_3"): float(same.embedding @ two.embedding)}
    assert {(a, b): c for a, b, c in pairs} == pytest.approx(expected, abs=1e-6)
    print(f"\nArcFace cosines: {expected}")
    assert expected[("identity_1", "identity_2")] >= 0.45 > max(expected[("identity_1", "identity_3")],
                                                                 expected[("identity_2", "identity_3")])
    warnings = mixing_warnings(pairs)
    assert len(warnings) == 1
    assert warnings[0].startswith(f"identity_1 and identity_2 are the same person to ArcFace "
                                  f"(cosine {expected[('identity_1', 'identity_2')]:.3f} >= 0.45)")
    assert mixing_warnings(mixing_pairs([("identity_1", one), ("identity_2", two)])) == []


def test_report_and_preview(encoder):
    regions = face_regions(encoder, LAYOUT, W, H, people=2, order="left to right", feather=8)
    ident = identity_from_images(encoder, LAYOUT)
    lines = regions_report_lines(regions, W, H, "left to right", 8, {"identity_1": ident, "identity_2": ident,
                                                                     "identity_4": ident},
                                 mixing_pairs([("identity_1", ident), ("identity_2", ident), ("identity_4", ident)]),
                                 lambda identity: "abc123")
    assert lines[0] == "2 regions on 864x1152 from 3 faces in the layout photo; order left to right; feather 8 px"
    assert lines[1].startswith("mask_1: face at ") and lines[1].endswith("; identity_1 (abc123)")
    assert lines[3] == "mask_3: unused (people = 2), all zero"
    assert lines[4] == "mask_4: unused (people = 2), all zero; identity_4 is connected but gets no region"
    assert sum("WARNING: identity_" in line and "will mix" in line for line in lines) == 3  # one identity, 3 pairs
    share = float(regions.masks[0].mean())
    assert f"{100 * share:.1f}% of the image" in lines[1]
    preview = regions_preview(regions)
    assert preview.shape == (1, H, W, 3) and 0.0 <= float(preview.min()) and float(preview.max()) <= 1.0
    # region 1 (face B, bottom left) is tinted red, region 2 (face C, top right) blue
    red, blue = preview[0, H - 5, 5], preview[0, 5, W - 5]
    assert red[0] > red[2] and blue[2] > blue[0]
