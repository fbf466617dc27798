"""Image conversions and ArcFace alignment (insightface's ``norm_crop``)."""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch

from .errors import FaceError

ARCFACE_SIZE = 112


def image_list(images: torch.Tensor | np.ndarray | Sequence) -> list:
    """A ComfyUI IMAGE batch ``[B, H, W, C]``, one image ``[H, W, C]`` or a list of images of any sizes -> a list
    of ``[H, W, C]`` images."""
    if isinstance(images, (torch.Tensor, np.ndarray)):
        if images.ndim == 3:
            return [images]
        if images.ndim == 4:
            return [images[i] for i in range(images.shape[0])]
        raise FaceError(f"Expected an IMAGE batch [B, H, W, C]; got shape {list(images.shape)}.")
    return list(images)


def to_rgb_uint8(image: torch.Tensor | np.ndarray, what: str = "image") -> np.ndarray:
    """A ComfyUI image ``[H, W, C]`` (float 0..1; C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA) -> uint8
    RGB ``[H, W, 3]``. Alpha is dropped without compositing, like PIL's ``convert('RGB')`` in the
    reference; values are rounded so an image loaded from a file gets its file's pixels back."""
    array = image.detach().cpu().float().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4):
        raise FaceError(f"The {what} must be [height, width, channels] with 1-4 channels; got shape "
                        f"{list(array.shape)}.")
    if array.shape[0] < 2 or array.shape[1] < 2:
        raise FaceError(f"The {what} is {array.shape[1]}x{array.shape[0]} pixels; too small to hold a face.")
    if array.dtype != np.uint8:
        array = np.clip(np.round(array.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    if array.shape[-1] in (1, 2):
        array = np.repeat(array[..., :1], 3, axis=-1)
    return np.ascontiguousarray(array[..., :3])


def rgb_to_bgr(rgb: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` RGB -> BGR (what insightface and the reference's ArcFace get)."""
    return np.ascontiguousarray(rgb[..., ::-1])


def alignment_matrix(keypoints: np.ndarray, size: int = ARCFACE_SIZE) -> np.ndarray:
    """The ``[2, 3]`` similarity transform insightface uses to map the five keypoints onto the
    ArcFace template (``face_align.estimate_norm``)."""
    from insightface.utils import face_align

    with warnings.catch_warnings():  # scikit-image >= 0.26 deprecates the estimate() insightface calls
        warnings.simplefilter("ignore", FutureWarning)
        return face_align.estimate_norm(np.asarray(keypoints, dtype=np.float32).reshape(5, 2), size)


def align_face(image: np.ndarray, keypoints: np.ndarray, size: int = ARCFACE_SIZE) -> np.ndarray:
    """The aligned ``[size, size, 3]`` crop, via ``insightface.utils.face_align.norm_crop`` (channel
    order as given: the reference passes BGR)."""
    from insightface.utils import face_align

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return face_align.norm_crop(image, landmark=np.asarray(keypoints, dtype=np.float32).reshape(5, 2),
                                image_size=size)


def template_keypoints(size: int = ARCFACE_SIZE) -> np.ndarray:
    """ArcFace's five template points ``[5, 2]`` in a ``size`` crop."""
    from insightface.utils import face_align

    return face_align.arcface_dst.astype(np.float64) * (size / 112.0)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a ``[2, 3]`` affine matrix to ``[K, 2]`` points."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return points @ np.asarray(matrix, dtype=np.float64)[:, :2].T + np.asarray(matrix, dtype=np.float64)[:, 2]
