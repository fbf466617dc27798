"""Generated "people" that the stand-in face models tell apart, for tests of combining photos and mixing.

The stand-in detector finds bright rectangles; a person here is a face split into two bright colours by a
person-specific pattern (halves side by side or stacked, or thirds). ``calibrated_arcface_state`` gives
IR-SE50 weights whose last batch norm is fitted to these people (mean and variance of its input), so that
their embeddings spread out as real identities do: the same person at other sizes or blurred stays above
the "same person" cosine, other people fall below the "unlikely" one."""
from __future__ import annotations

from pathlib import Path

import numpy as np

COLOURS = ((1.0, 1.0, 0.55), (0.55, 1.0, 1.0), (1.0, 0.55, 1.0), (1.0, 0.85, 0.75), (0.75, 0.85, 1.0), (0.85, 1.0, 0.75))
PEOPLE = 6
CALIBRATION_BOX = (200, 100, 360, 300)  # on a 640x480 photo


def draw_person(size: tuple[int, int], boxes, person: int) -> np.ndarray:
    """A black ``[H, W, 3]`` float photo (``size`` = (width, height)) with ``person``'s face in each box."""
    width, height = size
    image = np.zeros((height, width, 3), np.float32)
    first, second = np.array(COLOURS[person % PEOPLE], np.float32), np.array(COLOURS[(person + 3) % PEOPLE], np.float32)
    for x1, y1, x2, y2 in boxes:
        ys, xs = np.mgrid[y1:y2, x1:x2]
        u, v = (xs - x1) / (x2 - x1), (ys - y1) / (y2 - y1)
        pattern = (u < 0.5, v < 0.5, (u * 3).astype(int) % 2 == 0, (v * 3).astype(int) % 2 == 0)[person % 4]
        image[y1:y2, x1:x2] = np.where(pattern[..., None], first, second)
    return image


def calibrated_arcface_state(detector, seed: int = 1) -> dict:
    """Random IR-SE50 weights (``devtools.face_models``) with the last BatchNorm1d fitted to the people."""
    import torch

    from devtools.face_models import arcface_ir_se50_state_dict
    from infusenet.face.align import align_face, rgb_to_bgr, to_rgb_uint8
    from infusenet.face.analysis import detect_faces
    from infusenet.face.arcface import ArcFaceIRSE50, crops_to_input

    state = arcface_ir_se50_state_dict(seed)
    net = ArcFaceIRSE50()
    net.load_state_dict(state)
    net.eval()
    crops = []
    for person in range(PEOPLE):
        bgr = rgb_to_bgr(to_rgb_uint8(draw_person((640, 480), [CALIBRATION_BOX], person), "calibration photo"))
        face = max(detect_faces(detector, bgr, (640, 320, 160)), key=lambda f: f.area)
        crops.append(align_face(bgr, face.keypoints))
    with torch.no_grad():
        x = crops_to_input(np.stack(crops), torch.device("cpu"), torch.float32)
        features = net.output_layer[:4](net.body(net.input_layer(x)))
    state["output_layer.4.running_mean"] = features.mean(0)
    state["output_layer.4.running_var"] = features.var(0) + 1e-6
    state["output_layer.4.weight"] = torch.ones(512)
    state["output_layer.4.bias"] = torch.zeros(512)
    return state


def write_calibrated_arcface(path: Path, detector) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(calibrated_arcface_state(detector), str(path))
    return path
