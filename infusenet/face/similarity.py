"""Identity similarity: ArcFace cosine between an identity and the faces in generated images
(the paper's ID metric; ID loss = 1 - similarity)."""
from __future__ import annotations

import numpy as np
import torch

from .analysis import det_sizes, detect_faces, select_face
from .align import align_face, rgb_to_bgr, to_rgb_uint8
from .encoder import FaceEncoder
from .identity import FaceIdentity, _images


def identity_similarity(encoder: FaceEncoder, identity: FaceIdentity, images, det_size="auto") -> list[float | None]:
    """Per image of a batch ``[B, H, W, C]``: cosine between ``identity.embedding`` and the ArcFace
    embedding of the image's largest face, in [-1, 1]. ``None`` for an image with no face (so a batch
    with a failed seed still ranks the others; a node can show it as "no face")."""
    crops: list[np.ndarray] = []
    slots: list[int | None] = []
    for img in _images(images):
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
