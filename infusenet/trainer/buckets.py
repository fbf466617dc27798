"""Aspect-ratio buckets: a few training resolutions of about the same area, and the fit of an image
into the nearest one (cover resize, then a crop that keeps the face when its box is known)."""
from __future__ import annotations

import math

import numpy as np

Bucket = tuple[int, int]          # (width, height), multiples of ``multiple``


def _round_to(x: float, multiple: int) -> int:
    return max(multiple, int(round(x / multiple)) * multiple)


def aspect_buckets(area: int = 1024 * 1024, multiple: int = 64, max_ratio: float = 2.0) -> list[Bucket]:
    """Resolutions of about ``area`` pixels: the square, then widths growing by ``2 * multiple`` with the
    height that keeps the area, and each one turned, up to an aspect ratio of ``max_ratio``.

    1024² (multiple 64): 1024x1024, 1152x896, 896x1152, 1280x832, 832x1280, 1408x768, 768x1408."""
    if area <= 0 or multiple <= 0 or max_ratio < 1:
        raise ValueError(f"aspect_buckets needs area > 0, multiple > 0, max_ratio >= 1; got {area}, {multiple}, {max_ratio}")
    side = _round_to(math.sqrt(area), multiple)
    buckets: list[Bucket] = [(side, side)]
    k = 1
    while True:
        w = side + 2 * multiple * k
        h = _round_to(area / w, multiple)
        if w / h > max_ratio + 1e-9:
            break
        buckets += [(w, h), (h, w)]
        k += 1
    return buckets


def nearest_bucket(width: int, height: int, buckets: list[Bucket]) -> Bucket:
    """The bucket whose aspect ratio is closest (in log ratio) to width/height; ties go to the first."""
    if not buckets:
        raise ValueError("no buckets to choose from")
    r = math.log(width / height)
    return min(buckets, key=lambda b: abs(math.log(b[0] / b[1]) - r))


def crop_origin(size: int, target: int, centre: float | None) -> int:
    """Left/top of a ``target`` window in ``size`` pixels: centred on ``centre`` (clamped), else centred."""
    if centre is None:
        return (size - target) // 2
    return int(min(max(round(centre - target / 2), 0), size - target))


def fit_to_bucket(rgb: np.ndarray, bucket: Bucket, face_box: tuple[float, float, float, float] | None = None
                  ) -> tuple[np.ndarray, tuple[float, float, float, float] | None]:
    """uint8 [H, W, 3] -> uint8 [bh, bw, 3] covering the bucket (LANCZOS, aspect kept) and cropped; the
    crop is centred on ``face_box`` (x1, y1, x2, y2 in input pixels) when given, else on the image.
    Returns the image and the face box in the output's pixels (None without one)."""
    from PIL import Image

    width, height = bucket
    h, w = rgb.shape[:2]
    scale = max(width / w, height / h)
    nw, nh = max(width, round(w * scale)), max(height, round(h * scale))
    im = Image.fromarray(rgb).resize((nw, nh), Image.LANCZOS)
    cx = cy = None
    if face_box is not None:
        cx = (face_box[0] + face_box[2]) / 2 * nw / w
        cy = (face_box[1] + face_box[3]) / 2 * nh / h
    x, y = crop_origin(nw, width, cx), crop_origin(nh, height, cy)
    out = np.array(im.crop((x, y, x + width, y + height)))
    box = None
    if face_box is not None:
        box = (face_box[0] * nw / w - x, face_box[1] * nh / h - y, face_box[2] * nw / w - x, face_box[3] * nh / h - y)
    return out, box
