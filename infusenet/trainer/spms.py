"""Stage-2 data: synthesise single-person-multiple-sample (SPMS) sets with the current model.

For each real identity photo: ArcFace identity (pack's face pipeline), identity tokens from the
model's Resampler, then for each prompt an image generated through ComfyUI's own sampling
(ComfyUI's sampler) on the base patched by :func:`infusenet.patch.apply_infiniteyou`, decoded
by the VAE. An image is kept when a face is detected and its ArcFace similarity to the identity is at
least ``threshold``; kept images go to an SPMS manifest (see :mod:`infusenet.trainer.data`), the rest
are counted per reason.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch


from ..model import InfuseNet
from ..resampler import Resampler
from ..weights import InfuseNetBundle
from .data import load_rgb, write_manifest

log = logging.getLogger(__name__)


@dataclass
class GenerationRequest:
    identity_id: str
    tokens: torch.Tensor      # [1, Q, token width] (4096 for FLUX.1, the base's text width for FLUX.2)
    prompt: str
    seed: int
    width: int
    height: int
    control: torch.Tensor | None = None  # raw VAE latent [1, C, h, w] of a pose image; None: black control


@dataclass
class SynthesisReport:
    manifest: str
    accepted: int = 0
    rejected_no_face: int = 0
    rejected_low_similarity: int = 0
    skipped_identities: dict[str, str] = field(default_factory=dict)
    scores: dict[str, list[float | None]] = field(default_factory=dict)

    @property
    def rejected(self) -> int:
        return self.rejected_no_face + self.rejected_low_similarity


def bundle_from_modules(infusenet: InfuseNet, resampler: Resampler) -> InfuseNetBundle:
    """An InfuseNetBundle around trained modules (no file round trip), for Apply InfiniteYou; a FLUX.2
    :class:`~infusenet.model_flux2.InfuseNet2` serves FLUX.2 bases."""
    from .. import host
    from .init import branch_kind

    patcher = host.new_patcher(infusenet.eval(), host.torch_device(), host.offload_device())
    base = "flux2" if branch_kind(infusenet) == "FLUX.2" else "flux1"
    return InfuseNetBundle(patcher=patcher, config=infusenet.config, resampler=resampler.eval(), precision="fp32",
                           base=base)


class ComfyGenerator:
    """Text-to-image with InfiniteYou through ComfyUI's sampler: (request) -> IMAGE [1, H, W, 3]."""

    def __init__(self, base: "host.ModelPatcher", bundle: InfuseNetBundle, clip, vae, steps: int = 28,
                 cfg: float = 1.0, guidance: float = 3.5, sampler: str = "euler", scheduler: str = "simple",
                 negative: str = ""):
        self.base, self.bundle, self.clip, self.vae = base, bundle, clip, vae
        self.steps, self.cfg, self.guidance = steps, cfg, guidance
        self.sampler, self.scheduler, self.negative = sampler, scheduler, negative

    def _cond(self, text: str) -> list:
        cond, pooled = self.clip.encode_from_tokens(self.clip.tokenize(text), return_pooled=True)
        return [[cond, {"pooled_output": pooled, "guidance": self.guidance}]]

    def empty_latent(self, width: int, height: int) -> torch.Tensor:
        """The zero latent [1, C, H/f, W/f] of the base's latent format (FLUX.1: 16 channels, /8; FLUX.2: 128, /16)."""
        fmt = self.base.model.latent_format
        ratio = self.vae.spacial_compression_encode()
        return torch.zeros((1, fmt.latent_channels, height // ratio, width // ratio))

    @torch.no_grad()
    def __call__(self, req: GenerationRequest) -> torch.Tensor:
        from .. import host
        from ..patch import apply_infiniteyou

        model = apply_infiniteyou(self.base, self.bundle, req.tokens, req.control, vae=self.vae)
        latent = self.empty_latent(req.width, req.height)
        noise = host.prepare_noise(latent, req.seed)
        samples = host.sample(model, noise, self.steps, self.cfg, self.sampler, self.scheduler,
                                      self._cond(req.prompt), self._cond(self.negative), latent, seed=req.seed,
                                      disable_pbar=True)
        return self.vae.decode(samples).float().clamp(0, 1)[:1]


def synthesize_spms(identities: Sequence[tuple[str, str]], prompts: Sequence[str], face_encoder, resampler: Resampler,
                    generate: Callable[[GenerationRequest], torch.Tensor], out_dir: str | os.PathLike,
                    threshold: float = 0.6, per_identity: int | None = None, width: int = 1024, height: int = 1024,
                    seed: int = 0) -> SynthesisReport:
    """Generate, filter and write ``out_dir/spms.jsonl`` + images.

    identities: (id, photo path); prompts: used in turn, ``per_identity`` images per identity
    (default: one per prompt); generate: :class:`ComfyGenerator` or any callable of the same shape."""
    from ..face import FaceError
    from ..face.identity import identity_from_images
    from ..face.similarity import identity_similarity
    from ..weights import project_identity

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    report = SynthesisReport(manifest=str(out / "spms.jsonl"))
    records = []
    n = per_identity or len(prompts)
    for rid, photo_path in identities:
        try:
            photo, _ = load_rgb(photo_path, rid)
            identity = identity_from_images(face_encoder, [torch.from_numpy(photo).float() / 255.0])
        except (FaceError, ValueError) as e:
            report.skipped_identities[rid] = str(e)
            log.warning("SPMS: skipping identity '%s': %s", rid, e)
            continue
        tokens = project_identity(resampler, identity.embedding)
        targets, scores = [], []
        for k in range(n):
            prompt = prompts[k % len(prompts)]
            image = generate(GenerationRequest(rid, tokens, prompt, seed + k, width, height))
            score = identity_similarity(face_encoder, identity, image)[0]
            scores.append(score)
            if score is None:
                report.rejected_no_face += 1
                continue
            if score < threshold:
                report.rejected_low_similarity += 1
                continue
            name = f"images/{_safe(rid)}_{k:03d}.png"
            _save_png(image[0], out / name)
            targets.append({"image": name, "caption": prompt, "pose": "auto"})
            report.accepted += 1
        report.scores[rid] = scores
        if targets:
            records.append({"id": rid, "identity": os.path.relpath(photo_path, out), "targets": targets})
    write_manifest(report.manifest, records)
    log.info("SPMS: %d images kept, %d rejected (%d no face, %d below %.2f similarity).", report.accepted,
             report.rejected, report.rejected_no_face, report.rejected_low_similarity, threshold)
    return report


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _save_png(image: torch.Tensor, path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.clip(np.round(image.cpu().numpy() * 255.0), 0, 255).astype(np.uint8)).save(path)
