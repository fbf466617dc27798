"""An identity from one or more reference photos (the reference's identity path, steps 1-4)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .align import align_face, rgb_to_bgr, to_rgb_uint8
from .analysis import DetectedFace, FaceSelect, det_sizes, detect_faces, select_face
from .encoder import FaceEncoder
from .errors import FaceError
from .pose import KEYPOINT_COLOURS


@dataclass
class FaceIdentity:
    """A face identity for InfiniteYou.

    ``embeddings`` [R, 512] float32, one L2-normalised ArcFace IR-SE50 row per reference photo;
    ``embedding`` [512]: mean of those rows, renormalised (equals the single row when R = 1);
    ``boxes`` per photo [x1, y1, x2, y2] of the face used; ``keypoints`` per photo 5 x [x, y];
    ``image_sizes`` (width, height) per photo; ``tokens`` [1, Q, 4096] once the InfuseNet's
    projection has run (set by the projection step, None before)."""

    embeddings: torch.Tensor
    embedding: torch.Tensor
    boxes: list[list[float]]
    keypoints: list[list[list[float]]]
    image_sizes: list[tuple[int, int]]
    tokens: torch.Tensor | None = None


@dataclass
class FaceUse:
    """One reference photo's detection, the uint8 RGB photo and its aligned 112x112 BGR crop."""

    face: DetectedFace
    rgb: np.ndarray
    crop_bgr: np.ndarray


def combine_embeddings(embeddings: torch.Tensor) -> torch.Tensor:
    """``[R, 512]`` -> ``[512]``: normalise rows, average, renormalise."""
    rows = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    return torch.nn.functional.normalize(rows.mean(dim=0), dim=0)


def _images(images: torch.Tensor | np.ndarray | Sequence) -> list:
    if isinstance(images, (torch.Tensor, np.ndarray)):
        if images.ndim == 3:
            return [images]
        if images.ndim == 4:
            return [images[i] for i in range(images.shape[0])]
        raise FaceError(f"Expected an IMAGE batch [B, H, W, C]; got shape {list(images.shape)}.")
    return list(images)


def find_face(encoder: FaceEncoder, image, index: int, count: int, face_select: FaceSelect = "largest",
              det_size="auto", what: str = "reference image") -> FaceUse:
    """Detect (640 -> 320 -> 160 unless a size is fixed), choose a face and align it."""
    rgb = to_rgb_uint8(image, f"{what} {index + 1} of {count}")
    bgr = rgb_to_bgr(rgb)
    sizes = det_sizes(det_size)
    faces = detect_faces(encoder.detector, bgr, sizes)
    if not faces:
        tried = ", ".join(f"{s}x{s}" for s in sizes)
        raise FaceError(f"No face found in {what} {index + 1} of {count} ({rgb.shape[1]}x{rgb.shape[0]} pixels); "
                        f"detection sizes tried: {tried}. Use a photo where the face is clearly visible.")
    try:
        face = select_face(faces, face_select)
    except FaceError as exc:
        raise FaceError(f"In {what} {index + 1} of {count}: {exc}") from None
    return FaceUse(face=face, rgb=rgb, crop_bgr=align_face(bgr, face.keypoints))


def identity_from_images(encoder: FaceEncoder, images, face_select: FaceSelect = "largest",
                         det_size="auto") -> FaceIdentity:
    """A ComfyUI IMAGE batch ``[B, H, W, C]`` (or a list of ``[H, W, C]`` images of any sizes) -> identity.

    Per photo: RGB -> BGR uint8, detect, choose a face (``"largest"`` as the reference does, or
    ``("size_rank", k)`` / ``("left_to_right", k)``), ``norm_crop`` to 112x112, ArcFace. Several photos
    combine into one identity: the mean of the normalised embeddings, renormalised."""
    return identity_and_faces(encoder, images, face_select, det_size)[0]


def identity_and_faces(encoder: FaceEncoder, images, face_select: FaceSelect = "largest",
                       det_size="auto") -> tuple[FaceIdentity, list[FaceUse]]:
    """:func:`identity_from_images` plus what was used per photo (for :func:`preview_image`)."""
    batch = _images(images)
    if not batch:
        raise FaceError("No reference image given.")
    uses = [find_face(encoder, img, i, len(batch), face_select, det_size) for i, img in enumerate(batch)]
    embeddings = encoder.embed(np.stack([u.crop_bgr for u in uses]))
    identity = FaceIdentity(
        embeddings=embeddings,
        embedding=combine_embeddings(embeddings),
        boxes=[[float(v) for v in u.face.box] for u in uses],
        keypoints=[[[float(x), float(y)] for x, y in u.face.keypoints] for u in uses],
        image_sizes=[(int(u.rgb.shape[1]), int(u.rgb.shape[0])) for u in uses],
    )
    return identity, uses




def preview_image(uses: Sequence[FaceUse], height: int = 512) -> torch.Tensor:
    """IMAGE ``[R, height, height * 3 // 2, 3]``: per photo, the photo fitted into a ``height`` square with
    the face box and keypoints drawn, and beside it the aligned crop (what ArcFace saw) enlarged."""
    import cv2

    from .align import alignment_matrix, template_keypoints, transform_points

    side = height
    crop_side = side // 2
    frames = []
    for use in uses:
        canvas = np.full((side, side + crop_side, 3), 32, dtype=np.uint8)
        h, w = use.rgb.shape[:2]
        scale = side / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        ox, oy = (side - nw) // 2, (side - nh) // 2
        canvas[oy:oy + nh, ox:ox + nw] = cv2.resize(use.rgb, (nw, nh), interpolation=cv2.INTER_AREA)
        x1, y1, x2, y2 = use.face.box * scale + np.array([ox, oy, ox, oy])
        thick = max(1, side // 256)
        cv2.rectangle(canvas, (int(x1), int(y1)), (int(x2), int(y2)), (0, 255, 0), thick)
        for (x, y), colour in zip(use.face.keypoints * scale + np.array([ox, oy]), KEYPOINT_COLOURS):
            cv2.circle(canvas, (int(x), int(y)), 2 * thick + 1, colour, -1)
        crop_rgb = np.ascontiguousarray(use.crop_bgr[..., ::-1])
        big = cv2.resize(crop_rgb, (crop_side, crop_side), interpolation=cv2.INTER_LINEAR)
        aligned = transform_points(use.face.keypoints, alignment_matrix(use.face.keypoints))
        for (x, y), colour in zip(aligned * crop_side / 112.0, KEYPOINT_COLOURS):
            cv2.circle(big, (int(x), int(y)), 2 * thick, colour, -1)
        for x, y in template_keypoints(crop_side):
            cv2.circle(big, (int(x), int(y)), 3 * thick + 1, (255, 255, 255), 1)
        canvas[:crop_side, side:] = big
        frames.append(canvas)
    return torch.from_numpy(np.stack(frames)).float() / 255.0


def merge_identities(first: FaceIdentity, second: FaceIdentity) -> FaceIdentity:
    """One identity from the photos of both (``first``'s photos first): embeddings concatenated and
    recombined as for a batch. Tokens are left unset: project the merged embedding again."""
    embeddings = torch.cat([first.embeddings.float().cpu(), second.embeddings.float().cpu()])
    return FaceIdentity(
        embeddings=embeddings,
        embedding=combine_embeddings(embeddings),
        boxes=[*first.boxes, *second.boxes],
        keypoints=[*first.keypoints, *second.keypoints],
        image_sizes=[*first.image_sizes, *second.image_sizes],
    )
