"""Alignment on real photos nobody on the project made (scikit-image's astronaut, insightface's t1.jpg
group photo), with a real landmark detector from a PyPI wheel (facenet-pytorch's MTCNN, whose five
landmarks come in insightface's order): the aligned crop must put the eyes where ArcFace's template does."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from infusenet.face.align import align_face, alignment_matrix, template_keypoints, transform_points
from tests.host_features import newest_host_only

pytestmark = newest_host_only("face alignment (numpy, OpenCV) checked with facenet-pytorch's MTCNN: no ComfyUI code")


@pytest.fixture(scope="module")
def mtcnn():
    try:
        import facenet_pytorch
    except ImportError:
        pytest.fail("facenet-pytorch is not installed: scripts/setup.sh installs it (tests/requirements-nodeps.txt, "
                    "pip install --no-deps facenet-pytorch==2.6.0)")
    return facenet_pytorch.MTCNN(keep_all=True, device="cpu", post_process=False)


def landmarks(mtcnn, rgb: np.ndarray) -> list[np.ndarray]:
    """Faces' five landmarks [5, 2] (image x, y), largest box first."""
    boxes, _, points = mtcnn.detect(rgb, landmarks=True)
    if boxes is None:
        return []
    order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    return [points[i].astype(np.float64) for i in order]


def photos() -> dict[str, np.ndarray]:
    import cv2
    import insightface
    from skimage import data

    group = Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"
    return {"astronaut": data.astronaut(), "t1": cv2.imread(str(group))[..., ::-1].copy()}


@pytest.mark.parametrize("name", ["astronaut", "t1"])
def test_aligned_crop_puts_the_eyes_on_the_template(mtcnn, name):
    rgb = photos()[name]
    found = landmarks(mtcnn, rgb)
    assert found, f"MTCNN found no face in {name}"
    kps = found[0]
    if name == "astronaut":  # published reference: about [[205,102],[248,104],[225,129],[202,139],[245,142]]
        np.testing.assert_allclose(kps[:2], [[205, 102], [248, 104]], atol=6)
    template = template_keypoints(112)
    # 1) the similarity transform maps the detected points onto the template (eyes within 3 px)
    mapped = transform_points(kps, alignment_matrix(kps))
    np.testing.assert_allclose(mapped[:2], template[:2], atol=3.0)
    # 2) the pixels agree: detect again on the aligned crop (made at 4x so MTCNN sees it well). MTCNN
    # needs some context around a face, so it looks at the same warp with a margin of 224 px, whose
    # centre is checked to be the crop itself.
    import cv2

    crop = align_face(rgb, kps, size=448)
    pad = 224
    matrix = alignment_matrix(kps, 448).copy()
    matrix[:, 2] += pad
    wide = cv2.warpAffine(rgb, matrix, (448 + 2 * pad, 448 + 2 * pad), borderValue=0.0)
    inner = wide[pad:pad + 448, pad:pad + 448].astype(int)
    assert np.abs(inner[2:-2, 2:-2] - crop[2:-2, 2:-2].astype(int)).max() <= 1
    again = landmarks(mtcnn, wide)
    assert again, "MTCNN found no face in the aligned crop"
    eyes = (again[0][:2] - pad) / 4.0
    np.testing.assert_allclose(eyes, template[:2], atol=3.0)
    # the eyes are level and in the template's order (left eye left)
    assert eyes[0, 0] < eyes[1, 0] and abs(eyes[0, 1] - eyes[1, 1]) < 3.0


def test_crop_at_112_is_the_same_transform_at_a_quarter_scale(mtcnn):
    rgb = photos()["astronaut"]
    kps = landmarks(mtcnn, rgb)[0]
    np.testing.assert_allclose(alignment_matrix(kps, 448)[:, :2] / 4, alignment_matrix(kps, 112)[:, :2], atol=1e-4)
    assert align_face(rgb, kps).shape == (112, 112, 3)
