"""A soft mask over a detected face: the region to repaint when recrafting a photo."""
from __future__ import annotations

import numpy as np
import torch

from .align import image_list
from .analysis import FaceSelect, det_sizes
from .encoder import FaceEncoder
from .identity import find_face


def box_mask(box, width: int, height: int, grow: float, feather: int) -> np.ndarray:
    """float32 [height, width]: an ellipse covering ``box`` [x1, y1, x2, y2] grown by ``grow`` times its
    size on each side, its edge blurred over ``feather`` pixels."""
    import cv2

    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half_w, half_h = (x2 - x1) * (0.5 + grow), (y2 - y1) * (0.5 + grow)
    mask = np.zeros((height, width), dtype=np.float32)
    cv2.ellipse(mask, (round(cx), round(cy)), (max(1, round(half_w)), max(1, round(half_h))), 0, 0, 360, 1.0, -1)
    if feather > 0:
        k = 2 * int(feather) + 1
        mask = cv2.GaussianBlur(mask, (k, k), 0)
    return np.clip(mask, 0.0, 1.0)


def face_mask(encoder: FaceEncoder, images, grow: float = 0.35, feather: int = 16,
              face_select: FaceSelect = "largest", det_size="auto") -> torch.Tensor:
    """MASK [B, H, W] for an IMAGE batch: per image, the chosen face's grown, feathered ellipse.
    Raises FaceError naming the image when it has no face."""
    det_sizes(det_size)  # validate early
    batch = image_list(images)
    masks = []
    for i, img in enumerate(batch):
        use = find_face(encoder, img, i, len(batch), face_select, det_size, what="image")
        h, w = use.rgb.shape[:2]
        masks.append(torch.from_numpy(box_mask(use.face.box, w, h, grow, feather)))
    return torch.stack(masks)
