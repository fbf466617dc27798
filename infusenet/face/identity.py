"""An identity from one or more reference photos (the reference's identity path, steps 1-4)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from .align import align_face, image_list, rgb_to_bgr, to_rgb_uint8
from .analysis import DetectedFace, FaceSelect, det_sizes, detect_faces, parse_face_select, select_face
from .combine import PhotoAgreement, agreements, check_mode, combine
from .encoder import FaceEncoder
from .errors import FaceError
from .pose import KEYPOINT_COLOURS
from .quality import FaceQuality, face_quality
from .similarity import LIKELY_SAME


@dataclass
class FaceIdentity:
    """A face identity for InfiniteYou.

    ``embeddings`` [R, 512] float32, one L2-normalised ArcFace IR-SE50 row per reference photo;
    ``embedding`` [512]: those rows combined as ``combine`` says (see :mod:`.combine`; "mean": the mean,
    renormalised; equals the single row when R = 1); ``boxes`` per photo [x1, y1, x2, y2] of the face
    used; ``keypoints`` per photo 5 x [x, y]; ``image_sizes`` (width, height) per photo; ``tokens``
    [1, Q, width]: None as made here (Apply projects ``embedding`` with its InfuseNet's own projection,
    :func:`infusenet.likeness.identity_tokens`); tokens brought by other code serve an InfuseNet without one.
    ``qualities`` per photo (:class:`.quality.FaceQuality`), ``face_choices`` per photo (which face, in
    words) and ``weights`` per photo (what each counted in ``embedding``); empty when not measured."""

    embeddings: torch.Tensor
    embedding: torch.Tensor
    boxes: list[list[float]]
    keypoints: list[list[list[float]]]
    image_sizes: list[tuple[int, int]]
    tokens: torch.Tensor | None = None
    qualities: list[FaceQuality] = field(default_factory=list)
    face_choices: list[str] = field(default_factory=list)
    combine: str = "mean"
    weights: list[float] = field(default_factory=list)


@dataclass
class FaceUse:
    """One reference photo's detection, the uint8 RGB photo and its aligned 112x112 BGR crop."""

    face: DetectedFace
    rgb: np.ndarray
    crop_bgr: np.ndarray
    choice: str = "the face"


def choice_words(face_select: FaceSelect, found: int) -> str:
    """Which face was used, in words: ``"the largest of 2 faces"``, ``"the 2nd from the left of 3 faces"``."""
    mode, index = parse_face_select(face_select)
    n = index + 1
    nth = f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"
    if mode == "size_rank":
        what = "largest" if index == 0 else f"{nth} largest"
    else:
        what = f"{nth} from the left"
    return f"the {what} of {found} face{'s' if found != 1 else ''}"


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
    return FaceUse(face=face, rgb=rgb, crop_bgr=align_face(bgr, face.keypoints),
                   choice=choice_words(face_select, len(faces)))


def identity_from_images(encoder: FaceEncoder, images, face_select: FaceSelect = "largest",
                         det_size="auto", combine_mode: str = "mean") -> FaceIdentity:
    """A ComfyUI IMAGE batch ``[B, H, W, C]`` (or a list of ``[H, W, C]`` images of any sizes) -> identity.

    Per photo: RGB -> BGR uint8, detect, choose a face (``"largest"`` as the reference does, or
    ``("size_rank", k)`` / ``("left_to_right", k)``), ``norm_crop`` to 112x112, ArcFace, and measure the
    face's quality. Several photos combine into one identity as ``combine_mode`` says (see
    :mod:`.combine`; "mean": the mean of the normalised embeddings, renormalised)."""
    return identity_and_faces(encoder, images, face_select, det_size, combine_mode)[0]


def identity_and_faces(encoder: FaceEncoder, images, face_select: FaceSelect = "largest",
                       det_size="auto", combine_mode: str = "mean") -> tuple[FaceIdentity, list[FaceUse]]:
    """:func:`identity_from_images` plus what was used per photo (for :func:`preview_image`)."""
    check_mode(combine_mode)
    batch = image_list(images)
    if not batch:
        raise FaceError("No reference image given.")
    uses = [find_face(encoder, img, i, len(batch), face_select, det_size) for i, img in enumerate(batch)]
    embeddings = encoder.embed(np.stack([u.crop_bgr for u in uses]))
    qualities = [face_quality(u.face, u.crop_bgr) for u in uses]
    embedding, weights = combine(embeddings, [q.quality for q in qualities], combine_mode)
    identity = FaceIdentity(
        embeddings=embeddings,
        embedding=embedding,
        boxes=[[float(v) for v in u.face.box] for u in uses],
        keypoints=[[[float(x), float(y)] for x, y in u.face.keypoints] for u in uses],
        image_sizes=[(int(u.rgb.shape[1]), int(u.rgb.shape[0])) for u in uses],
        qualities=qualities,
        face_choices=[u.choice for u in uses],
        combine=combine_mode,
        weights=[float(w) for w in weights],
    )
    return identity, uses


def photo_agreements(identity: FaceIdentity) -> list[PhotoAgreement]:
    """Per photo: cosine to the identity, to the mean of the other photos, and the outlier flag."""
    return agreements(identity.embeddings, identity.embedding)


def photo_rows(identity: FaceIdentity) -> list[dict]:
    """Per photo, JSON-ready: ``choice`` (which face), ``box``, ``face_size`` [w, h] in photo pixels,
    ``detector_score``, ``sharpness``, ``quality`` (None when not measured), ``weight`` in the identity,
    ``similarity`` (cosine to the identity), ``similarity_to_others`` (to the mean of the other photos,
    None for one photo) and ``outlier``."""
    rows = []
    for i, agreement in enumerate(photo_agreements(identity)):
        x1, y1, x2, y2 = identity.boxes[i]
        q = identity.qualities[i] if i < len(identity.qualities) else None
        rows.append({
            "photo": i + 1,
            "image_size": list(identity.image_sizes[i]),
            "choice": identity.face_choices[i] if i < len(identity.face_choices) else "the face",
            "box": [round(float(v), 1) for v in identity.boxes[i]],
            "face_size": [round(x2 - x1, 1), round(y2 - y1, 1)],
            "detector_score": None if q is None else round(q.detector_score, 4),
            "sharpness": None if q is None else round(q.sharpness, 2),
            "quality": None if q is None else round(q.quality, 4),
            "weight": round(identity.weights[i], 4) if i < len(identity.weights) else None,
            "similarity": round(agreement.similarity, 4),
            "similarity_to_others": None if agreement.similarity_to_others is None
            else round(agreement.similarity_to_others, 4),
            "outlier": agreement.outlier,
        })
    return rows


def photo_report_lines(identity: FaceIdentity) -> list[str]:
    """One human-readable line per photo: face used, size, score, sharpness, quality, weight, similarity."""
    lines = []
    for row in photo_rows(identity):
        (w, h), (x1, y1, x2, y2), (fw, fh) = row["image_size"], row["box"], row["face_size"]
        parts = [f"photo {row['photo']} ({w}x{h}): {row['choice']}, box {x1:.0f},{y1:.0f}-{x2:.0f},{y2:.0f} "
                 f"({fw:.0f}x{fh:.0f} px)"]
        if row["quality"] is not None:
            parts.append(f"detector score {row['detector_score']:.3f}, sharpness {row['sharpness']:.1f}, "
                         f"quality {row['quality']:.3f}")
        if row["weight"] is not None:
            parts.append(f"weight {row['weight']:.3f} ({identity.combine})")
        parts.append(f"similarity to the identity {row['similarity']:.3f}")
        if row["similarity_to_others"] is not None:
            parts.append(f"to the other photos {row['similarity_to_others']:.3f}")
        if row["outlier"]:
            parts.append(f"OUTLIER (below {LIKELY_SAME} to the others): another person or an unusable photo?")
        lines.append("; ".join(parts))
    return lines


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


def merge_identities(first: FaceIdentity, second: FaceIdentity, combine_mode: str | None = None) -> FaceIdentity:
    """One identity from the photos of both (``first``'s photos first): embeddings concatenated and all
    photos recombined with ``combine_mode`` (None: ``second``'s). Tokens are left unset: project the merged
    embedding again. A weighting mode needs every photo's quality (identities made here have them)."""
    mode = check_mode(combine_mode or second.combine)
    embeddings = torch.cat([first.embeddings.float().cpu(), second.embeddings.float().cpu()])
    qualities = [*first.qualities, *second.qualities]
    measured = len(qualities) == embeddings.shape[0]
    if mode != "mean" and not measured:
        raise FaceError(f"Combining photos by {mode!r} needs each photo's face quality; the identity to add to "
                        "was made without it. Make it with InfiniteYou Identity From Images.")
    embedding, weights = combine(embeddings, [q.quality for q in qualities] if measured
                                 else [1.0] * embeddings.shape[0], mode)
    choices = [*first.face_choices, *second.face_choices]
    return FaceIdentity(
        embeddings=embeddings,
        embedding=embedding,
        boxes=[*first.boxes, *second.boxes],
        keypoints=[*first.keypoints, *second.keypoints],
        image_sizes=[*first.image_sizes, *second.image_sizes],
        qualities=qualities if measured else [],
        face_choices=choices if len(choices) == embeddings.shape[0] else [],
        combine=mode,
        weights=[float(w) for w in weights],
    )
