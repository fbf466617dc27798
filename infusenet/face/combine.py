"""Several reference photos -> one identity embedding, and what each photo contributed.

Modes: ``"mean"`` (the normalised rows averaged, renormalised: every photo counts the same),
``"quality weighted"`` (the same with each photo weighted by its :mod:`quality`), ``"best photo"`` (only
the highest-quality photo; the first of equals)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .errors import FaceError
from .similarity import LIKELY_SAME

COMBINE_MODES = ("mean", "quality weighted", "best photo")


def check_mode(mode: str) -> str:
    if mode not in COMBINE_MODES:
        raise FaceError(f"Unknown way to combine photos {mode!r}; expected one of {list(COMBINE_MODES)}.")
    return mode


def combination_weights(qualities: Sequence[float], mode: str) -> torch.Tensor:
    """``[R]`` weights summing to 1. When every quality is 0, "quality weighted" counts the photos equally."""
    check_mode(mode)
    q = torch.tensor([float(v) for v in qualities], dtype=torch.float64)
    if q.numel() == 0:
        raise FaceError("No reference photo to combine.")
    if mode == "mean" or (mode == "quality weighted" and float(q.sum()) <= 0.0):
        return torch.full_like(q, 1.0 / q.numel())
    if mode == "quality weighted":
        return q / q.sum()
    weights = torch.zeros_like(q)
    weights[int(torch.argmax(q))] = 1.0  # argmax returns the first of equals
    return weights


def mean_embedding(embeddings: torch.Tensor) -> torch.Tensor:
    """``[R, 512]`` -> ``[512]``: normalise rows, average, renormalise."""
    rows = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    return torch.nn.functional.normalize(rows.mean(dim=0), dim=0)


def weighted_embedding(embeddings: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``[R, 512]``, ``[R]`` -> ``[512]``: normalise rows, weighted sum, renormalise."""
    rows = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    return torch.nn.functional.normalize((rows * weights.to(rows.dtype)[:, None]).sum(dim=0), dim=0)


def combine(embeddings: torch.Tensor, qualities: Sequence[float], mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(identity embedding ``[512]``, weights ``[R]``). "mean" is exactly :func:`mean_embedding`."""
    weights = combination_weights(qualities, mode)
    if mode == "mean":
        return mean_embedding(embeddings), weights
    return weighted_embedding(embeddings, weights), weights


@dataclass(frozen=True)
class PhotoAgreement:
    """How one photo agrees with the others: cosine to the combined identity, cosine to the mean of the other
    photos (None for a single photo) and whether it is an outlier (that cosine below the "unlikely" threshold).
    The other photos count equally here whatever the combine mode, so a sharp photo of someone else cannot
    make the good photos look like outliers."""

    similarity: float
    similarity_to_others: float | None
    outlier: bool


def agreements(embeddings: torch.Tensor, combined: torch.Tensor) -> list[PhotoAgreement]:
    rows = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    target = torch.nn.functional.normalize(combined.float(), dim=0)
    out = []
    for i in range(rows.shape[0]):
        others = [j for j in range(rows.shape[0]) if j != i]
        to_others = float(rows[i] @ mean_embedding(rows[others])) if others else None
        out.append(PhotoAgreement(float(rows[i] @ target), to_others, to_others is not None and to_others < LIKELY_SAME))
    return out
