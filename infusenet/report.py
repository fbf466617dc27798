"""What the nodes tell the frontend after a run: plain data for the web extension (``ui["infu_report"]``).

Each report is a JSON-ready dict with a ``kind``; images are referenced by the ``{filename, subfolder,
type}`` entries ComfyUI's preview saving returns (the node layer saves them and passes them in).
"""
from __future__ import annotations

import hashlib
import json
from typing import Sequence

import torch

from .face.identity import photo_rows
from .face.similarity import SIMILARITY_BANDS


def payload(report: dict) -> list[str]:
    """The ``ui`` value ComfyUI sends to the frontend: a one-element list (lists are concatenated per batch)."""
    return [json.dumps(report)]


def fingerprint(embedding: torch.Tensor) -> str:
    """A short name for an identity (6 hex digits of its rounded embedding): the identity node shows it and
    every Apply node that uses the identity shows the same one."""
    values = torch.round(embedding.detach().float().cpu().flatten() * 1e4).to(torch.int32).numpy().tobytes()
    return hashlib.sha1(values).hexdigest()[:6]


def identity_report(identity, images: Sequence[dict]) -> dict:
    """The faces used (box, keypoints, photo size) and, per photo, its measurements from
    ``infusenet.face.identity.photo_rows`` (face size, detector score, sharpness, quality, weight,
    similarity to the identity and to the other photos, outlier); ``combine`` is how the photos were combined."""
    rows = photo_rows(identity)
    photos = [{"box": [round(float(v), 1) for v in box], "keypoints": [[round(float(x), 1), round(float(y), 1)] for x, y in kps],
               "size": list(size), **{k: v for k, v in row.items() if k not in ("box", "image_size")}}
              for box, kps, size, row in zip(identity.boxes, identity.keypoints, identity.image_sizes, rows)]
    return {"kind": "identity", "fingerprint": fingerprint(identity.embedding), "photos": photos, "images": list(images),
            "tokens": None if identity.tokens is None else int(identity.tokens.shape[1]),
            "combine": getattr(identity, "combine", "mean"), "outliers": [r["photo"] for r in rows if r["outlier"]]}


def similarity_band(score: float | None) -> dict:
    if score is None:
        return {"score": None, "band": "no_face", "meaning": "no face found in this image"}
    for threshold, band, meaning in SIMILARITY_BANDS:
        if score >= threshold:
            return {"score": round(float(score), 4), "band": band, "meaning": meaning}
    return {"score": round(float(score), 4), "band": SIMILARITY_BANDS[-1][1], "meaning": SIMILARITY_BANDS[-1][2]}


def similarity_report(scores: Sequence[float | None], identity=None, ranking: Sequence[int] | None = None,
                      kept: Sequence[int] = ()) -> dict:
    """One row per image (score, band, rank: 1 = best, by score; images with no face last), which were kept."""
    rows = [similarity_band(s) for s in scores]
    for rank, index in enumerate(ranking or []):
        rows[index]["rank"] = rank + 1
        rows[index]["kept"] = index in kept
    valid = [(s, -i) for i, s in enumerate(scores) if s is not None]  # ties: the first image, as the ranking
    return {"kind": "similarity", "rows": rows, "best_index": -max(valid)[1] if valid else -1, "kept": list(kept),
            "fingerprint": None if identity is None else fingerprint(identity.embedding),
            "bands": [{"from": t, "band": b, "meaning": m} for t, b, m in SIMILARITY_BANDS]}


def infusenet_report(bundle) -> dict:
    c = bundle.config
    return {"kind": "infusenet", "variant": bundle.variant, "precision": bundle.precision, "double_blocks": c.depth,
            "single_blocks": c.depth_single_blocks, "hidden_size": c.hidden_size, "tokens": bundle.num_tokens,
            "base": bundle.base_name}


def pose_report(width: int, height: int, images: Sequence[dict]) -> dict:
    return {"kind": "pose", "width": int(width), "height": int(height), "images": list(images)}


def apply_report(identity, strength: float, start: float, end: float, window: str, mask_images: Sequence[dict],
                 has_control: bool, preset: str = "custom", variant: str | None = None, reprojected: bool = False) -> dict:
    """What an Apply ran: the effective strength/start/end (after its preset), the InfuseNet's variant, and
    whether the identity's tokens were re-projected with this InfuseNet's own projection."""
    return {"kind": "apply", "fingerprint": fingerprint(identity.embedding), "photos": len(identity.boxes),
            "strength": strength, "start": start, "end": end, "window": window, "mask": list(mask_images),
            "control": has_control, "preset": preset, "variant": variant, "reprojected": bool(reprojected)}


def blend_report(identity, preset: str, strength: float, start: float, end: float, likeness: float,
                 branches: Sequence[dict], warnings: Sequence[str], mask_images: Sequence[dict], has_control: bool) -> dict:
    """A likeness blend: the effective values and one entry per branch (``{"socket", "variant", "strength",
    "ran", "reprojected"}``), plus what looks wrong about the pair."""
    return {"kind": "blend", "fingerprint": fingerprint(identity.embedding), "preset": preset, "strength": strength,
            "start": start, "end": end, "likeness": likeness, "branches": list(branches), "warnings": list(warnings),
            "mask": list(mask_images), "control": has_control}


def face_encoder_report(info: dict) -> dict:
    return {"kind": "face_encoder", "providers": list(info.get("providers", [])), "device": info.get("device"),
            "dtype": info.get("dtype")}


def face_mask_report(masks: Sequence[dict], grow: float, feather: int) -> dict:
    return {"kind": "face_mask", "mask": list(masks), "grow": grow, "feather": feather}


def mask_thumbnail(mask: torch.Tensor, side: int = 128) -> torch.Tensor:
    """The first mask of a batch ``[B, H, W]`` (or ``[H, W]``) scaled so its longer side is ``side``: ``[1, h, w]``."""
    m = mask.detach().float().cpu()
    m = m.reshape(-1, m.shape[-2], m.shape[-1])[:1]
    h, w = m.shape[-2:]
    scale = side / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return torch.nn.functional.interpolate(m[:, None], size=size, mode="bilinear", align_corners=False)[:, 0].clamp(0, 1)


def regions_report(width: int, height: int, order: str, feather: int, found: int, regions: Sequence[dict],
                   pairs: Sequence[dict], warnings: Sequence[str], images: Sequence[dict]) -> dict:
    """Face Regions: the layout photo on the canvas with numbered coloured regions (``images``), per region
    ``{"mask", "box", "centre", "share", "identity", "fingerprint", "colour"}``, the pairwise ArcFace cosines of
    the connected identities and the mixing warnings."""
    return {"kind": "regions", "width": int(width), "height": int(height), "order": order, "feather": int(feather),
            "found": int(found), "regions": list(regions), "pairs": list(pairs), "warnings": list(warnings),
            "images": list(images)}
