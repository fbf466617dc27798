"""Regions for two or more people without drawing masks: the faces of a layout photo split the canvas.

The layout photo is fitted to the output canvas exactly as the pose image does (:func:`.pose.fitted_photo`)
and the faces are found on that canvas, so a region lines up with the keypoints the pose image draws for
the same photo. Each canvas pixel belongs to the face whose box is nearest (distance 0 inside the box;
where boxes overlap or distances tie, the face whose centre is nearest)."""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Sequence

import numpy as np
import torch

from .align import rgb_to_bgr
from .analysis import DetectedFace, det_sizes
from .encoder import FaceEncoder
from .errors import FaceError
from .pose import fitted_photo
from .similarity import SAME_PERSON

ORDERS = ("left to right", "right to left", "largest first", "top to bottom")
MAX_PEOPLE = 4
REGION_COLOURS = ((230, 60, 60), (60, 140, 240), (60, 200, 90), (240, 190, 40))  # RGB, region 1..4


@dataclass
class FaceRegions:
    """``masks`` [people, height, width] float32 summing to 1 at every pixel; ``faces`` the faces on the
    canvas in region order; ``canvas`` the fitted layout photo (uint8 RGB [height, width, 3]);
    ``found`` how many faces the layout photo has."""

    masks: torch.Tensor
    faces: list[DetectedFace]
    canvas: np.ndarray
    found: int


def order_faces(faces: Sequence[DetectedFace], order: str) -> list[DetectedFace]:
    if order == "left to right":
        return sorted(faces, key=lambda f: f.centre[0])
    if order == "right to left":
        return sorted(faces, key=lambda f: -f.centre[0])
    if order == "largest first":
        return sorted(faces, key=lambda f: -f.area)
    if order == "top to bottom":
        return sorted(faces, key=lambda f: f.centre[1])
    raise FaceError(f"Unknown order {order!r}; expected one of {list(ORDERS)}.")


def partition(boxes: Sequence[Sequence[float]], width: int, height: int) -> np.ndarray:
    """int64 [height, width]: the index of the face each pixel (at its centre) belongs to: the nearest box,
    ties by the nearest box centre, then the first face."""
    ys = (np.arange(height, dtype=np.float64) + 0.5)[:, None]
    xs = (np.arange(width, dtype=np.float64) + 0.5)[None, :]
    labels = np.zeros((height, width), dtype=np.int64)
    best_box = best_centre = None
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        box_dist = np.hypot(np.maximum(np.maximum(x1 - xs, xs - x2), 0.0), np.maximum(np.maximum(y1 - ys, ys - y2), 0.0))
        centre_dist = np.hypot(xs - (x1 + x2) / 2, ys - (y1 + y2) / 2)
        if best_box is None:
            best_box, best_centre = box_dist, centre_dist
            continue
        tie = np.abs(box_dist - best_box) <= 1e-9
        better = (~tie & (box_dist < best_box)) | (tie & (centre_dist < best_centre))
        labels[better] = k
        best_box = np.where(better, box_dist, best_box)
        best_centre = np.where(better, centre_dist, best_centre)
    return labels


def region_masks(labels: np.ndarray, count: int, feather: int) -> np.ndarray:
    """float32 [count, H, W] one-hot masks of ``labels``; with ``feather`` > 0 each is blurred (Gaussian,
    kernel 2 * feather + 1, as the face mask) and the set renormalised so it still sums to 1."""
    import cv2

    masks = np.stack([(labels == k).astype(np.float32) for k in range(count)])
    if feather <= 0:
        return masks
    k = 2 * int(feather) + 1
    masks = np.stack([cv2.GaussianBlur(m, (k, k), 0) for m in masks])
    return masks / masks.sum(axis=0, keepdims=True)


def detect_people(encoder: FaceEncoder, canvas_rgb: np.ndarray, people: int, sizes: Sequence[int]) -> list[DetectedFace]:
    """The faces at the first detection size that finds at least ``people`` (else the most found)."""
    bgr = rgb_to_bgr(canvas_rgb)
    best: list[DetectedFace] = []
    for size in sizes:
        faces = encoder.detector.detect(bgr, size)
        if len(faces) > len(best):
            best = faces
        if len(faces) >= people:
            break
    return best


def face_regions(encoder: FaceEncoder, layout, width: int, height: int, people: int = 2,
                 order: str = "left to right", feather: int = 0, det_size="auto") -> FaceRegions:
    """Masks for ``people`` identities from a layout photo (IMAGE ``[1, H, W, C]`` or ``[H, W, C]``): the
    ``people`` largest faces, sorted by ``order``, each with the part of the ``width x height`` canvas
    nearest to it."""
    if not 1 <= int(people) <= MAX_PEOPLE:
        raise FaceError(f"people must be 1 to {MAX_PEOPLE}; got {people}.")
    if order not in ORDERS:
        raise FaceError(f"Unknown order {order!r}; expected one of {list(ORDERS)}.")
    _, canvas = fitted_photo(layout, width, height, "layout photo", "Canvas")
    sizes = det_sizes(det_size)
    faces = detect_people(encoder, canvas, people, sizes)
    if len(faces) < people:
        tried = ", ".join(f"{s}x{s}" for s in sizes)
        raise FaceError(
            f"{people} people asked for, but the layout photo (fitted to {width}x{height}) has "
            f"{len(faces)} face{'s' if len(faces) != 1 else ''} (detection sizes tried: {tried}). Use a photo "
            f"where all {people} faces are clearly visible, or set people to {max(len(faces), 1)}.")
    chosen = order_faces(sorted(faces, key=lambda f: -f.area)[:people], order)
    labels = partition([f.box for f in chosen], width, height)
    masks = region_masks(labels, people, feather)
    return FaceRegions(torch.from_numpy(masks), chosen, canvas, len(faces))


def mixing_pairs(identities: Sequence[tuple[str, object]]) -> list[tuple[str, str, float]]:
    """ArcFace cosine of every pair of connected identities ``(input name, FaceIdentity)``: (a, b, cosine)."""
    out = []
    for (name_a, a), (name_b, b) in combinations(identities, 2):
        ea = torch.nn.functional.normalize(a.embedding.float().cpu(), dim=0)
        eb = torch.nn.functional.normalize(b.embedding.float().cpu(), dim=0)
        out.append((name_a, name_b, float(ea @ eb)))
    return out


def mixing_warnings(pairs: Sequence[tuple[str, str, float]]) -> list[str]:
    """A warning for each pair at or above the "same person" threshold."""
    return [f"{a} and {b} are the same person to ArcFace (cosine {c:.3f} >= {SAME_PERSON}): the two identities "
            "will mix; use photos of different people" for a, b, c in pairs if c >= SAME_PERSON]


def regions_preview(regions: FaceRegions, alpha: float = 0.45) -> torch.Tensor:
    """IMAGE [1, H, W, 3]: the fitted layout photo with each region tinted in its colour, its face box
    outlined and its number written at the face centre."""
    import cv2

    canvas = regions.canvas.astype(np.float32)
    masks = regions.masks.numpy()
    tint = np.zeros_like(canvas)
    for k in range(masks.shape[0]):
        tint += masks[k][..., None] * np.array(REGION_COLOURS[k], np.float32)
    out = np.clip(canvas * (1 - alpha) + tint * alpha, 0, 255).astype(np.uint8)
    h, w = out.shape[:2]
    thick = max(1, min(h, w) // 200)
    for k, face in enumerate(regions.faces):
        x1, y1, x2, y2 = (int(round(v)) for v in face.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), REGION_COLOURS[k], thick)
        cx, cy = (int(round(v)) for v in face.centre)
        scale = max(0.6, min(h, w) / 300)
        (tw, th), _ = cv2.getTextSize(str(k + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, 2 * thick)
        cv2.putText(out, str(k + 1), (cx - tw // 2, cy + th // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 4 * thick)
        cv2.putText(out, str(k + 1), (cx - tw // 2, cy + th // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 2 * thick)
    return torch.from_numpy(out).float().div(255.0).unsqueeze(0)


def regions_report_lines(regions: FaceRegions, width: int, height: int, order: str, feather: int,
                         identities: dict[str, object], pairs: Sequence[tuple[str, str, float]],
                         fingerprint=lambda identity: "") -> list[str]:
    """The node's text report: the canvas, one line per mask (used or not) and the mixing check."""
    people = regions.masks.shape[0]
    lines = [f"{people} region{'s' if people != 1 else ''} on {width}x{height} from {regions.found} face"
             f"{'s' if regions.found != 1 else ''} in the layout photo; order {order}; feather {feather} px"]
    total = float(width * height)
    for k in range(MAX_PEOPLE):
        name = f"identity_{k + 1}"
        if k >= people:
            extra = f"; {name} is connected but gets no region" if name in identities else ""
            lines.append(f"mask_{k + 1}: unused (people = {people}), all zero{extra}")
            continue
        x1, y1, x2, y2 = regions.faces[k].box
        share = float(regions.masks[k].sum()) / total
        who = f"{name} ({fingerprint(identities[name])})" if name in identities else f"{name} not connected"
        lines.append(f"mask_{k + 1}: face at {x1:.0f},{y1:.0f}-{x2:.0f},{y2:.0f} on the canvas, "
                     f"{100 * share:.1f}% of the image; {who}")
    for a, b, cosine in pairs:
        lines.append(f"{a} vs {b}: ArcFace cosine {cosine:.3f}")
    lines.extend(f"WARNING: {w}" for w in mixing_warnings(pairs))
    return lines
