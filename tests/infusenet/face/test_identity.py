"""Identity from reference photos: batch combination, channel layouts, face choice, errors, and the
whole embedding path against a reference computation of the same steps (insightface FaceAnalysis +
norm_crop + facexlib's ArcFace) on the same weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from infusenet.face.errors import FaceError
from infusenet.face.combine import mean_embedding
from infusenet.face.identity import identity_and_faces, identity_from_images, preview_image
from devtools.face_models import draw_faces

A = draw_faces((640, 480), [(100, 100, 220, 260), (400, 150, 440, 200)], texture_seed=1)
B = draw_faces((640, 480), [(300, 120, 420, 280)], texture_seed=2)


def reference_embedding(pack_dir, backbone, image_rgb01: np.ndarray, rgb_order: bool = False) -> torch.Tensor:
    """The reference's steps, written from its description: RGB -> BGR uint8; FaceAnalysis('antelopev2')
    at 640 (then 320, 160); largest face by box area; norm_crop(112) of the BGR image; /255, 2x-1; ArcFace."""
    from insightface.app import FaceAnalysis
    from insightface.utils import face_align

    rgb = np.clip(np.round(image_rgb01[..., :3] * 255), 0, 255).astype(np.uint8)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    faces = []
    for size in (640, 320, 160):
        app = FaceAnalysis(name=str(pack_dir), allowed_modules=["detection"], providers=["CPUExecutionProvider"])
        app.prepare(ctx_id=0, det_size=(size, size))
        faces = app.get(bgr)
        if faces:
            break
    face = sorted(faces, key=lambda f: (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]))[-1]
    crop = face_align.norm_crop(bgr, landmark=face.kps, image_size=112)
    if rgb_order:
        crop = np.ascontiguousarray(crop[..., ::-1])
    x = torch.from_numpy(crop).unsqueeze(0).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        return backbone((2 * x - 1).contiguous())[0]


def test_embedding_path_equals_the_reference_steps(encoder, insightface_root, facexlib_backbone):
    pack = insightface_root / "models" / "antelopev2"
    identity = identity_from_images(encoder, torch.from_numpy(A)[None])
    expected = reference_embedding(pack, facexlib_backbone, A)
    torch.testing.assert_close(identity.embedding, expected, atol=1e-5, rtol=1e-5)
    # the comparison is sensitive to channel order: feeding the crop as RGB gives another vector
    wrong = reference_embedding(pack, facexlib_backbone, A, rgb_order=True)
    assert float(identity.embedding @ wrong) < 0.999
    # and to the fallback: a face found only at 160
    big = draw_faces((640, 640), [(60, 60, 580, 580)], texture_seed=3)
    torch.testing.assert_close(identity_from_images(encoder, torch.from_numpy(big)[None]).embedding,
                               reference_embedding(pack, facexlib_backbone, big), atol=1e-5, rtol=1e-5)


def test_several_photos_combine_into_one_identity(encoder):
    identity = identity_from_images(encoder, torch.from_numpy(np.stack([A, B])))
    assert identity.embeddings.shape == (2, 512) and identity.embedding.shape == (512,)
    torch.testing.assert_close(identity.embeddings.norm(dim=1), torch.ones(2))
    expected = torch.nn.functional.normalize(identity.embeddings.mean(0), dim=0)
    torch.testing.assert_close(identity.embedding, expected)
    torch.testing.assert_close(identity.embedding, mean_embedding(identity.embeddings))
    assert float(identity.embeddings[0] @ identity.embeddings[1]) < 0.9995  # two different "people"
    assert identity.boxes == [[100.0, 100.0, 220.0, 260.0], [300.0, 120.0, 420.0, 280.0]]
    assert len(identity.keypoints) == 2 and len(identity.keypoints[0]) == 5
    assert identity.image_sizes == [(640, 480), (640, 480)]
    assert identity.tokens is None
    single = identity_from_images(encoder, torch.from_numpy(A)[None])
    torch.testing.assert_close(single.embedding, single.embeddings[0])
    torch.testing.assert_close(single.embeddings[0], identity.embeddings[0], atol=1e-5, rtol=1e-5)


def test_photos_of_different_sizes_and_channel_layouts(encoder):
    rgb = A
    rgba = np.concatenate([A, np.full(A.shape[:2] + (1,), 0.3, np.float32)], axis=-1)  # alpha is dropped
    grey = draw_faces((500, 400), [(50, 60, 170, 220)], channels=1, texture_seed=4)
    grey_as_rgb = np.repeat(grey, 3, axis=-1)
    identity = identity_from_images(encoder, [torch.from_numpy(rgb), torch.from_numpy(rgba),
                                              torch.from_numpy(grey), torch.from_numpy(grey_as_rgb)])
    e = identity.embeddings
    torch.testing.assert_close(e[0], e[1])
    torch.testing.assert_close(e[2], e[3])
    assert identity.image_sizes == [(640, 480), (640, 480), (500, 400), (500, 400)]
    np.testing.assert_allclose(identity.boxes[2], [50, 60, 170, 220], atol=1.0)  # 500 px -> 640: edges blur


def test_chosen_face(encoder):
    image = torch.from_numpy(A)[None]
    largest = identity_from_images(encoder, image)
    right = identity_from_images(encoder, image, face_select=("left_to_right", 1))
    second = identity_from_images(encoder, image, face_select=("size_rank", 1))
    assert largest.boxes == [[100.0, 100.0, 220.0, 260.0]]
    assert right.boxes == second.boxes == [[400.0, 150.0, 440.0, 200.0]]
    with pytest.raises(FaceError, match="image 1 of 1.*only 2 face"):
        identity_from_images(encoder, image, face_select=("size_rank", 2))


def test_no_face_names_the_image_and_the_sizes_tried(encoder):
    blank = np.zeros_like(A)
    with pytest.raises(FaceError) as err:
        identity_from_images(encoder, torch.from_numpy(np.stack([A, blank, B])))
    assert "reference image 2 of 3" in str(err.value)
    assert "640x640, 320x320, 160x160" in str(err.value)
    with pytest.raises(FaceError) as err:
        identity_from_images(encoder, torch.from_numpy(np.stack([B, blank])), det_size=320)
    assert "reference image 2 of 2" in str(err.value) and "sizes tried: 320x320." in str(err.value)


def test_preview_shows_the_photo_with_box_and_the_aligned_crop(encoder):
    identity, uses = identity_and_faces(encoder, torch.from_numpy(np.stack([A, B])))
    preview = preview_image(uses, height=512)
    assert preview.shape == (2, 512, 768, 3)
    assert 0.0 <= float(preview.min()) and float(preview.max()) <= 1.0
    # the box outline is green at its top-left corner (photo scaled by 512 / 640, centred vertically)
    scale, oy = 512 / 640, (512 - 384) // 2
    x, y = int(100 * scale), int(100 * scale) + oy
    torch.testing.assert_close(preview[0, y, x], torch.tensor([0.0, 1.0, 0.0]))
    # the crop panel holds the aligned face enlarged: bright, textured in the middle
    centre = preview[0, 128, 512 + 128]
    assert float(centre.mean()) > 0.8
    assert uses[0].crop_bgr.shape == (112, 112, 3)
