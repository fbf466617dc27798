"""How usable one reference photo's face is for ArcFace: detector score, face size and sharpness.

    quality = clip(score, 0, 1) * min(1, short_side / 112) * sharpness / (sharpness + 100)

``score``: the detector's confidence; ``short_side``: the shorter side of the face box in photo pixels
(112 is the ArcFace crop: a smaller face is enlarged when aligned and loses detail); ``sharpness``: the
variance of the Laplacian of the aligned 112x112 crop in grey levels 0..255 (a blurred or flat face scores
low; 100 gives half marks, a sharp photo scores several hundred). The result lies in [0, 1]."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .analysis import DetectedFace

CROP_SIDE = 112
SHARPNESS_HALF = 100.0


@dataclass(frozen=True)
class FaceQuality:
    """One photo's face: detector score, face box short side (photo pixels), sharpness and the quality."""

    detector_score: float
    face_size: float
    sharpness: float
    quality: float


def crop_sharpness(crop_bgr: np.ndarray) -> float:
    """Variance of the Laplacian of an aligned uint8 BGR crop ``[112, 112, 3]`` in grey levels."""
    import cv2

    grey = cv2.cvtColor(np.ascontiguousarray(crop_bgr), cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def quality_score(detector_score: float, face_size: float, sharpness: float) -> float:
    """The formula in the module docstring."""
    score_term = min(max(float(detector_score), 0.0), 1.0)
    size_term = min(1.0, max(float(face_size), 0.0) / CROP_SIDE)
    sharp_term = max(float(sharpness), 0.0) / (max(float(sharpness), 0.0) + SHARPNESS_HALF)
    return score_term * size_term * sharp_term


def face_quality(face: DetectedFace, crop_bgr: np.ndarray) -> FaceQuality:
    x1, y1, x2, y2 = (float(v) for v in face.box)
    size = min(x2 - x1, y2 - y1)
    sharpness = crop_sharpness(crop_bgr)
    return FaceQuality(float(face.score), size, sharpness, quality_score(face.score, size, sharpness))
