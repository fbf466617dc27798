"""Identity similarity: ArcFace cosine between an identity and the faces in generated images
(the paper's ID metric; ID loss = 1 - similarity), and the cosines that say whether two faces are one person."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from .analysis import det_sizes, detect_faces, select_face
from .align import align_face, image_list, rgb_to_bgr, to_rgb_uint8
from .encoder import FaceEncoder

if TYPE_CHECKING:
    from .identity import FaceIdentity

SAME_PERSON = 0.45
"""ArcFace cosine at or above which two faces are the same person: InsightFace buffalo_l's verification
threshold, cosine distance 0.55 (serengil/deepface, deepface/config/threshold.py, tuned on face-pair benchmarks)."""
LIKELY_SAME = 0.32
"""ArcFace cosine at or above which two faces are likely the same person: deepface's ArcFace threshold,
cosine distance 0.68 (same source). Below it: unlikely."""

SIMILARITY_BANDS = (
    (SAME_PERSON, "same", "same person (ArcFace verification threshold 0.45)"),
    (LIKELY_SAME, "likely", "likely the same person: try another seed, strength 1.0 or more sim_stage1"),
    (-1.0, "unlikely", "unlikely the same person"),
)
"""(from, band id, meaning), highest first. The thresholds are face-verification thresholds measured on photo
pairs, not on generated images. For scale: the InfiniteYou paper's mean ID similarity on its test set is 0.791
(ID loss 0.209), PuLID-FLUX 0.775, FLUX IP-Adapter 0.228."""


def identity_similarity(encoder: FaceEncoder, identity: FaceIdentity, images, det_size="auto") -> list[float | None]:
    """Per image of a batch ``[B, H, W, C]``: cosine between ``identity.embedding`` and the ArcFace
    embedding of the image's largest face, in [-1, 1]. ``None`` for an image with no face (so a batch
    with a failed seed still ranks the others; a node can show it as "no face")."""
    crops: list[np.ndarray] = []
    slots: list[int | None] = []
    for img in image_list(images):
        bgr = rgb_to_bgr(to_rgb_uint8(img, "generated image"))
        faces = detect_faces(encoder.detector, bgr, det_sizes(det_size))
        if not faces:
            slots.append(None)
            continue
        slots.append(len(crops))
        crops.append(align_face(bgr, select_face(faces, "largest").keypoints))
    scores: list[float | None] = [None] * len(slots)
    if crops:
        embeddings = encoder.embed(np.stack(crops))
        target = torch.nn.functional.normalize(identity.embedding.float().cpu(), dim=0)
        cos = (embeddings @ target).tolist()
        scores = [None if s is None else float(cos[s]) for s in slots]
    return scores


def rank_images(scores: list[float | None]) -> list[int]:
    """Batch indices from the highest similarity to the lowest (ties in batch order), then the images with no
    face in batch order."""
    scored = sorted((i for i, s in enumerate(scores) if s is not None), key=lambda i: (-scores[i], i))
    return scored + [i for i, s in enumerate(scores) if s is None]


def keep_best(images: torch.Tensor, scores: list[float | None], keep: int) -> tuple[torch.Tensor, list[int]]:
    """The ``keep`` best images of the batch ``[B, H, W, C]``, best first, and their batch indices."""
    kept = rank_images(scores)[:max(1, int(keep))]
    return images[kept], kept
