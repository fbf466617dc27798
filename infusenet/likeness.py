"""Likeness controls: the reference's strength/start presets, identity tokens for a given InfuseNet, and
the sim_stage1 / aes_stage2 blend (two branches whose residuals add up)."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .weights import InfiniteYouError, InfuseNetBundle, project_identity

CUSTOM = "custom"
PRESETS: dict[str, dict[str, float] | None] = {
    CUSTOM: None,
    "reference (strength 1, start 0)": {"strength": 1.0, "start": 0.0, "end": 1.0},
    "less pasted (start 0.1)": {"strength": 1.0, "start": 0.1, "end": 1.0},
    "less pasted, freer (start 0.1, strength 0.9)": {"strength": 0.9, "start": 0.1, "end": 1.0},
}
"""Preset name -> the strength/start/end it runs with (None: the node's own values). The reference's tip
when the face looks pasted: first start 0.1 (the first 10% of the steps, where the layout forms, run on
FLUX alone; most useful with sim_stage1), then strength 0.9."""
PRESET_NAMES = list(PRESETS)


def preset_values(preset: str | None, strength: float, start: float, end: float) -> tuple[float, float, float]:
    """The (strength, start, end) that run: the preset's, or the given ones for custom (or no preset)."""
    values = PRESETS.get(preset or CUSTOM)
    if values is None:
        return strength, start, end
    return values["strength"], values["start"], values["end"]


def identity_tokens(bundle: InfuseNetBundle, identity) -> tuple[torch.Tensor, bool]:
    """The identity's tokens for ``bundle``: its embedding projected by this InfuseNet's own projection, the one
    projection an identity gets (Identity From Images leaves it to Apply, so its result does not depend on the
    InfuseNet). Tokens an identity brings along (one made outside the nodes) are used as they are only by an
    InfuseNet loaded without a projection. Returns (tokens, whether the identity brought other tokens, replaced
    by this projection: tokens of another InfuseNet's projection, e.g. aes_stage2's for a sim_stage1 Apply)."""
    given = getattr(identity, "tokens", None)
    if bundle.resampler is None:
        if given is None:
            raise InfiniteYouError("the identity has no InfuseNet tokens and this InfuseNet was loaded without an "
                                   "identity projection (image_proj_model.bin): load it with its projection.")
        return given, False
    own = project_identity(bundle, identity.embedding)
    brought_others = given is not None and not (given.shape == own.shape and torch.equal(given.float().cpu(), own))
    return own, brought_others


@dataclass(frozen=True)
class BlendWeights:
    """The strengths of the two branches of a likeness blend."""

    sim: float
    aes: float


def blend_weights(strength: float, likeness: float) -> BlendWeights:
    """``likeness`` is the sim_stage1 share of ``strength``: sim = strength * likeness, aes = strength * (1 - likeness)."""
    return BlendWeights(sim=strength * likeness, aes=strength * (1.0 - likeness))


def network_files(bundle: InfuseNetBundle) -> set[str]:
    """The real paths of the InfuseNet's own files (its projection file left out)."""
    files = bundle.files[:-1] if bundle.projection is not None else bundle.files
    return {os.path.realpath(f) for f in files}


def blend_warnings(sim: InfuseNetBundle, aes: InfuseNetBundle) -> list[str]:
    """What looks wrong in a sim/aes pair: the same file twice, or the variants in each other's socket."""
    warnings = []
    if sim is aes or network_files(sim) & network_files(aes):
        warnings.append("infusenet_sim and infusenet_aes are the same InfuseNet: the blend is one InfuseNet at the "
                        "full strength. Load sim_stage1 and aes_stage2 with two loaders.")
    elif sim.variant == "aes_stage2" and aes.variant == "sim_stage1":
        warnings.append("the variants look swapped: infusenet_sim is aes_stage2 and infusenet_aes is sim_stage1, so "
                        "likeness works backwards. Swap the two connections.")
    else:
        for socket, bundle, wanted in (("infusenet_sim", sim, "sim_stage1"), ("infusenet_aes", aes, "aes_stage2")):
            if bundle.variant not in (wanted, "unknown"):
                warnings.append(f"{socket} is {bundle.variant}, expected {wanted}.")
    return warnings
