"""The keypoint (pose) image: the reference's resize-and-pad, detection, and InstantID-style drawing."""
from __future__ import annotations

import math

import numpy as np
import torch

from .align import rgb_to_bgr, to_rgb_uint8
from .analysis import DetectedFace, FaceSelect, det_sizes, detect_faces, select_face
from .encoder import FaceEncoder
from .errors import FaceError

DEFAULT_WIDTH, DEFAULT_HEIGHT = 864, 1152  # the reference's output size
# RGB colours of the five keypoints (eyes, nose, mouth corners); limb k->2 takes keypoint k's colour.
KEYPOINT_COLOURS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255))
LIMBS = ((0, 2), (1, 2), (3, 2), (4, 2))
LIMB_HALF_WIDTH = 4
LIMB_INTENSITY = 0.6
POINT_RADIUS = 10


def fit_to_canvas(rgb: np.ndarray, width: int, height: int, fill: int = 255,
                  resample: int | None = None) -> np.ndarray:
    """The reference's resize-and-pad: scale (LANCZOS, aspect kept) so the photo matches the target's
    shorter side (the width when ``width <= height``), then paste it centred on a ``fill`` canvas of
    ``width x height``; the other side is padded when short and centre-cropped when it overflows
    (a 480x640 photo into 256x320 becomes 256x341 and loses 11 rows at the top, 10 at the bottom)."""
    from PIL import Image

    src_h, src_w = rgb.shape[:2]
    if width <= height:
        new_w, new_h = width, int(width * (src_h / src_w))
    else:
        new_w, new_h = int(height * (src_w / src_h)), height
    new_w, new_h = max(new_w, 1), max(new_h, 1)
    mode = "L" if rgb.ndim == 2 else "RGB"
    resized = Image.fromarray(np.ascontiguousarray(rgb)).resize((new_w, new_h), Image.LANCZOS if resample is None else resample)
    canvas = Image.new(mode, (width, height), fill if mode == "L" else (fill,) * 3)
    canvas.paste(resized, ((width - new_w) // 2, (height - new_h) // 2))  # floor division, as the reference
    return np.asarray(canvas)


def draw_keypoints(keypoints: np.ndarray, width: int, height: int) -> np.ndarray:
    """Keypoints on black, uint8 RGB ``[height, width, 3]``: the four limbs to the nose as filled
    ellipses (half-width 4) at 60% intensity, then filled circles of radius 10 at full colour."""
    import cv2

    kps = np.asarray(keypoints, dtype=np.float64).reshape(5, 2)
    limbs = np.zeros((height, width, 3), dtype=np.float64)
    for a, b in LIMBS:
        (xa, ya), (xb, yb) = kps[a], kps[b]
        length = math.hypot(xa - xb, ya - yb)
        angle = math.degrees(math.atan2(ya - yb, xa - xb))
        centre = (int(np.mean([xa, xb])), int(np.mean([ya, yb])))
        polygon = cv2.ellipse2Poly(centre, (int(length / 2), LIMB_HALF_WIDTH), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(limbs, polygon, KEYPOINT_COLOURS[a])
    out = np.ascontiguousarray((limbs * LIMB_INTENSITY).astype(np.uint8))
    for (x, y), colour in zip(kps, KEYPOINT_COLOURS):
        cv2.circle(out, (int(x), int(y)), POINT_RADIUS, colour, -1)
    return out


def _mask_array(mask, photo_hw: tuple[int, int], width: int, height: int) -> np.ndarray:
    """A ComfyUI MASK ``[H, W]`` or ``[1, H, W]`` over the pose photo -> ``[height, width]`` over the canvas."""
    m = mask.detach().cpu().float().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask, np.float32)
    if m.ndim == 3:
        m = m[0]
    if m.ndim != 2:
        raise FaceError(f"The pose mask must be [H, W] or [1, H, W]; got shape {list(m.shape)}.")
    if m.shape != photo_hw:
        import cv2

        m = cv2.resize(m, (photo_hw[1], photo_hw[0]), interpolation=cv2.INTER_LINEAR)
    m8 = np.clip(np.round(m * 255.0), 0, 255).astype(np.uint8)
    return fit_to_canvas(m8, width, height, fill=0).astype(np.float32) / 255.0


def fitted_photo(photo, width: int, height: int, what: str, canvas_name: str) -> tuple[np.ndarray, np.ndarray]:
    """One photo (IMAGE ``[1, H, W, C]`` or ``[H, W, C]``) as uint8 RGB, and fitted to a ``width x height``
    canvas as the reference fits its pose photo. ``what`` and ``canvas_name`` name them in errors."""
    if width < 16 or height < 16:
        raise FaceError(f"{canvas_name} size {width}x{height} is too small (at least 16x16).")
    if isinstance(photo, (torch.Tensor, np.ndarray)) and photo.ndim == 4:
        if photo.shape[0] != 1:
            raise FaceError(f"The {what} must be one image; got a batch of {photo.shape[0]}.")
        photo = photo[0]
    rgb = to_rgb_uint8(photo, what)
    return rgb, fit_to_canvas(rgb, width, height)


def pose_keypoints(encoder: FaceEncoder, photo, width: int = DEFAULT_WIDTH, height: int = DEFAULT_HEIGHT,
                   mask=None, face_select: FaceSelect = "largest", det_size="auto") -> tuple[DetectedFace, np.ndarray]:
    """(the chosen face on the fitted canvas, the fitted uint8 RGB canvas ``[height, width, 3]``).

    With ``mask``, only faces whose box centre lies in the mask (> 0.5) count, and the 640 -> 320 -> 160
    fallback goes on until such a face is found."""
    rgb, canvas = fitted_photo(photo, width, height, "pose reference image", "Pose image")
    keep = None
    if mask is not None:
        region = _mask_array(mask, rgb.shape[:2], width, height)

        def keep(face: DetectedFace) -> bool:
            x, y = face.centre
            xi, yi = min(max(int(x), 0), width - 1), min(max(int(y), 0), height - 1)
            return bool(region[yi, xi] > 0.5)

    sizes = det_sizes(det_size)
    faces = detect_faces(encoder.detector, rgb_to_bgr(canvas), sizes, keep)
    if not faces:
        where = " inside the mask" if mask is not None else ""
        tried = ", ".join(f"{s}x{s}" for s in sizes)
        raise FaceError(f"No face found{where} in the pose reference image (fitted to {width}x{height}); "
                        f"detection sizes tried: {tried}.")
    try:
        face = select_face(faces, face_select)
    except FaceError as exc:
        raise FaceError(f"In the pose reference image: {exc}") from None
    return face, canvas


def pose_image(encoder: FaceEncoder, photo, width: int = DEFAULT_WIDTH, height: int = DEFAULT_HEIGHT,
               mask=None, face_select: FaceSelect = "largest", det_size="auto") -> torch.Tensor:
    """The InfuseNet control image, IMAGE ``[1, height, width, 3]`` float 0..1: the photo fitted to the
    output size as the reference does, its chosen face's five keypoints drawn on black."""
    face, _ = pose_keypoints(encoder, photo, width, height, mask, face_select, det_size)
    return torch.from_numpy(draw_keypoints(face.keypoints, width, height)).float().div(255.0).unsqueeze(0)
