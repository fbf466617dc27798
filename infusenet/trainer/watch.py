"""Watching a run: TensorBoard scalars every step and, every N steps, validation images of held-out people
scored with the paper's identity metric.

:class:`RunWatcher` is what :class:`~infusenet.trainer.loop.Trainer` calls (rank 0 logs, every rank joins
the validation because gathering sharded weights is a collective):

* ``on_step(step, scalars)``: ``train/loss``, ``train/lr``, ``train/grad_norm``, ``train/samples_per_s``,
  ``train/memory_gb`` (and any other scalar it is given) with TensorBoard's ``SummaryWriter``.
* ``maybe_validate(step, trainer)``: every ``watch.validate_every`` steps, for each validation identity and
  prompt, one image generated with the current weights through the patch inference uses
  (:func:`infusenet.patch.apply_infiniteyou` on ComfyUI's sampler, via
  :class:`~infusenet.trainer.spms.ComfyGenerator`), scored with the ArcFace cosine to every reference photo.

Scores (:class:`ValidationResult`): ``identity[name]`` is the mean similarity of that person's images to
that person's photo (the ID metric; an image where no face is found counts 0, "no likeness");
``mean`` is its mean over people; ``other_mean`` is the wrong-person control, the mean similarity of each
person's images to the *other* people's photos: a branch that learns identity raises ``mean`` above it,
one that learns "a face" raises both. Images go to TensorBoard (reference photo, then one image per
prompt) and to ``log_dir/validation/step-XXXXXX/`` as PNG files with ``scores.json``.

Validation leaves training as it was: it runs on CPU copies of the weights, under ``torch.no_grad``,
and restores the random number generators, the modules' train/eval modes and the base's placement.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from .config import TrainConfig, ValidationIdentity

log = logging.getLogger(__name__)

STEP_SCALARS = ("loss", "lr", "grad_norm", "samples_per_s", "memory_gb")


# ---------------------------------------------------------------- scores
@dataclass
class ValidationResult:
    """One validation: ``images[name]`` [P, H, W, 3] (one per prompt), ``similarity[name][other]`` per
    prompt (None: no face found), the summaries described in the module docstring, and the files written."""

    step: int
    images: dict[str, torch.Tensor] = field(default_factory=dict)
    similarity: dict[str, dict[str, list[float | None]]] = field(default_factory=dict)
    identity: dict[str, float] = field(default_factory=dict)
    mean: float = float("nan")
    other_mean: float = float("nan")
    faces_found: float = 0.0
    seconds: float = 0.0
    folder: str | None = None


def face_embeddings(encoder, images: torch.Tensor) -> list[torch.Tensor | None]:
    """ArcFace embedding [512] of the largest face of each image of ``images`` [B, H, W, 3], None where no face
    is found: the steps of :func:`infusenet.face.similarity.identity_similarity` (same detection sizes,
    face choice and alignment), run once per image so that an image can be scored against several people."""
    from ..face.align import align_face, rgb_to_bgr, to_rgb_uint8
    from ..face.analysis import det_sizes, detect_faces, select_face

    crops, slots = [], []
    for i in range(images.shape[0]):
        bgr = rgb_to_bgr(to_rgb_uint8(images[i], "validation image"))
        faces = detect_faces(encoder.detector, bgr, det_sizes("auto"))
        slots.append(len(crops) if faces else None)
        if faces:
            crops.append(align_face(bgr, select_face(faces, "largest").keypoints))
    embedded = encoder.embed(np.stack(crops)) if crops else None
    return [None if s is None else embedded[s] for s in slots]


def cosine(embedding: torch.Tensor | None, identity) -> float | None:
    """Cosine of an image's face embedding with ``identity.embedding`` (None stays None)."""
    if embedding is None:
        return None
    target = torch.nn.functional.normalize(identity.embedding.float().cpu(), dim=0)
    return float(embedding.float() @ target)


def summarise(result: ValidationResult) -> ValidationResult:
    """Fill ``identity``, ``mean``, ``other_mean`` and ``faces_found`` from ``similarity`` (no face: 0)."""
    def score(values: list[float | None]) -> float:
        return float(np.mean([0.0 if v is None else v for v in values])) if values else float("nan")

    names = list(result.similarity)
    result.identity = {n: score(result.similarity[n][n]) for n in names}
    result.mean = float(np.mean(list(result.identity.values()))) if names else float("nan")
    others = [score(result.similarity[n][o]) for n in names for o in names if o != n]
    result.other_mean = float(np.mean(others)) if others else float("nan")
    own = [v for n in names for v in result.similarity[n][n]]
    result.faces_found = sum(v is not None for v in own) / len(own) if own else 0.0
    return result


# ---------------------------------------------------------------- generation
@dataclass
class Reference:
    """A validation person ready to use: identity (ArcFace of the photo), the photo [H, W, 3] and the raw VAE
    latent of its pose image (None: black control)."""

    name: str
    identity: object
    photo: torch.Tensor
    control: torch.Tensor | None = None


def load_references(identities: Sequence[ValidationIdentity | dict], face_encoder, vae,
                    size: tuple[int, int]) -> list[Reference]:
    """Read each validation photo, find its face and embed it; encode pose images at ``size`` (width, height).
    Raises ValueError naming the person and the file when a photo cannot be used."""
    from ..face import FaceError
    from ..face.identity import identity_from_images
    from .data import DataError, _image_tensor, cover_resize, load_rgb

    refs: list[Reference] = []
    seen: set[str] = set()
    for item in identities:
        spec = item if isinstance(item, ValidationIdentity) else ValidationIdentity(**item)
        if spec.name in seen:
            raise ValueError(f"watch.identities: the name '{spec.name}' is used twice; give each person a name of their own")
        seen.add(spec.name)
        try:
            rgb, _ = load_rgb(spec.photo, spec.name)
            photo = torch.from_numpy(rgb).float() / 255.0
            identity = identity_from_images(face_encoder, [photo])
            control = None
            if spec.pose is not None:
                pose, _ = load_rgb(spec.pose, spec.name)
                control = vae.encode(_image_tensor(cover_resize(pose, *size)))[:1].float().cpu()
        except (FaceError, DataError) as e:
            raise ValueError(f"watch.identities: validation person '{spec.name}' cannot be used: {e}") from e
        refs.append(Reference(spec.name, identity, photo, control))
    return refs


def generate_validation(base_patcher, infusenet, resampler, references: Sequence[Reference], config: TrainConfig,
                        clip, vae, face_encoder, step: int = 0) -> ValidationResult:
    """Images of every reference person for every prompt of ``config.watch``, generated by ComfyUI's sampler
    on ``base_patcher`` with ``infusenet`` / ``resampler`` applied as Apply InfiniteYou applies them, and
    their similarity to every reference photo. ``infusenet``/``resampler`` are switched to eval mode: pass
    copies (:meth:`Trainer.full_modules`)."""
    from ..weights import project_identity
    from .spms import ComfyGenerator, GenerationRequest, bundle_from_modules

    from .. import host

    w = config.watch
    start = time.perf_counter()
    bundle = bundle_from_modules(infusenet, resampler)
    generator = ComfyGenerator(base_patcher, bundle, clip, vae, steps=w.steps, cfg=w.cfg, guidance=w.guidance,
                               sampler=w.sampler, scheduler=w.scheduler)
    result = ValidationResult(step=step)
    try:
        with torch.no_grad():
            for ref in references:
                tokens = project_identity(resampler, ref.identity.embedding)
                images = [generator(GenerationRequest(ref.name, tokens, prompt, w.seed + k, w.width, w.height,
                                                      control=ref.control))
                          for k, prompt in enumerate(w.prompts)]
                result.images[ref.name] = torch.cat(images).float().cpu()
    finally:
        host.unload_patcher(bundle.patcher)  # the copy leaves the device with this validation
    for ref in references:
        embeddings = face_embeddings(face_encoder, result.images[ref.name])
        result.similarity[ref.name] = {other.name: [cosine(e, other.identity) for e in embeddings]
                                       for other in references}
    result.seconds = time.perf_counter() - start
    return summarise(result)


# ---------------------------------------------------------------- training state
@contextlib.contextmanager
def training_state_kept(trainer) -> Iterator[None]:
    """Restore, on exit, what validation could disturb: torch (CPU and CUDA), Python and NumPy random states,
    every module's train/eval mode, and the frozen base on its device."""
    torch_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    python_state, numpy_state = random.getstate(), np.random.get_state()
    modes = [(m, m.training) for m in trainer.module.modules()]
    base = getattr(trainer, "base", None)
    base_modes = [(m, m.training) for m in base.dm.modules()] if base is not None else []
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        for module, mode in modes + base_modes:
            module.train(mode)
        if base is not None:
            base.load()  # model management may have offloaded the base to make room for sampling


# ---------------------------------------------------------------- the watcher
def _rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", "0"))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "person"


def _finite(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


class RunWatcher:
    """TensorBoard logging and periodic validation for one run (see the module docstring).

    config: the run's TrainConfig (``watch`` section). clip, vae, face_encoder: a ComfyUI CLIP and VAE for
    the base (the ones the cache was prepared with) and the pack's face encoder; needed only when
    ``watch.validate_every`` > 0. rank: this process's rank (default: torch.distributed's, else ``RANK``)."""

    def __init__(self, config: TrainConfig, clip=None, vae=None, face_encoder=None, rank: int | None = None):
        self.config = config
        self.watch = config.watch
        self.rank = _rank() if rank is None else rank
        self.is_main = self.rank == 0
        self.log_dir = Path(self.watch.log_dir or Path(config.checkpoint.output_dir) / "logs")
        self.clip, self.vae, self.face_encoder = clip, vae, face_encoder
        self.results: list[ValidationResult] = []
        self.references: list[Reference] = []
        w = self.watch
        if not isinstance(w.validate_every, int) or w.validate_every < 0:
            raise ValueError(f"watch.validate_every must be a whole number >= 0 (0: never); got {w.validate_every!r}")
        if w.validate_every:
            missing = [n for n, v in (("clip", clip), ("vae", vae), ("face_encoder", face_encoder)) if v is None]
            if missing:
                raise ValueError(f"watch.validate_every={w.validate_every} needs a ComfyUI CLIP, VAE and face encoder "
                                 f"for the validation images; missing: {', '.join(missing)}")
            if not w.identities:
                raise ValueError("watch.validate_every is set but watch.identities is empty: list the held-out "
                                 "people (ValidationIdentity(name, photo)) to validate with")
            if not w.prompts:
                raise ValueError("watch.prompts is empty: validation needs at least one prompt")
            if w.ema and config.optim.ema_decay is None:
                raise ValueError("watch.ema scores the EMA weights, but this run keeps none: set optim.ema_decay "
                                 "or watch.ema=False")
            if getattr(config.distributed, "shard_base", False):
                raise ValueError("watch.validate_every samples with the whole base model on rank 0, but "
                                 "distributed.shard_base shards it: set one of them off")
            if w.width % 16 or w.height % 16 or w.width <= 0 or w.height <= 0:
                raise ValueError(f"watch.width/height must be positive multiples of 16; got {w.width}x{w.height}")
        self.writer = None
        if self.is_main and w.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.log_dir.mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(str(self.log_dir))
        if self.is_main and w.validate_every:
            self.references = load_references(w.identities, face_encoder, vae, (w.width, w.height))

    # -------------------------------------------------------- scalars
    def on_step(self, step: int, scalars: dict[str, float]) -> None:
        """Log one optimiser step's scalars as ``train/<name>`` (rank 0; non-numbers are skipped)."""
        if self.writer is None:
            return
        for name in (*STEP_SCALARS, *sorted(set(scalars) - set(STEP_SCALARS))):
            if name in scalars and (value := _finite(scalars[name])) is not None:
                self.writer.add_scalar(f"train/{name}", value, step)

    # -------------------------------------------------------- validation
    def maybe_validate(self, step: int, trainer) -> ValidationResult | None:
        """Validate when ``step`` is a multiple of ``validate_every``. Every rank calls this; rank 0 returns
        the result, the others None. (To see the untrained branch, call :meth:`validate` before training.)"""
        every = self.watch.validate_every
        if not every or step % every:
            return None
        return self.validate(step, trainer)

    def validate(self, step: int, trainer) -> ValidationResult | None:
        """Generate, score and log the validation images with the trainer's current weights."""
        with training_state_kept(trainer):
            modules = trainer.full_modules(ema=self.watch.ema)  # a collective: every rank takes part
            if modules is None or not self.is_main:
                return None
            result = generate_validation(trainer.base.patcher, *modules, self.references, self.config,
                                         self.clip, self.vae, self.face_encoder, step)
        self.record(result)
        return result

    def record(self, result: ValidationResult) -> None:
        """Write a validation to TensorBoard and to ``log_dir/validation/step-XXXXXX/``."""
        self.results.append(result)
        folder = self.log_dir / "validation" / f"step-{result.step:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        result.folder = str(folder)
        refs = {r.name: r for r in self.references}
        for name, images in result.images.items():
            for k in range(images.shape[0]):
                _save_png(images[k], folder / f"{_safe(name)}_{k:02d}.png")
        summary = {"step": result.step, "mean": result.mean, "other_mean": result.other_mean,
                   "faces_found": result.faces_found, "identity": result.identity, "similarity": result.similarity,
                   "prompts": list(self.watch.prompts), "seconds": result.seconds}
        (folder / "scores.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
        log.info("validation at step %d: identity similarity %.3f (other people %.3f), faces found %.0f%%",
                 result.step, result.mean, result.other_mean, 100 * result.faces_found)
        if self.writer is None:
            return
        for name, value in result.identity.items():
            self.writer.add_scalar(f"validation/identity/{_safe(name)}", value, result.step)
        for tag, value in (("identity_mean", result.mean), ("other_identity_mean", result.other_mean),
                           ("faces_found", result.faces_found), ("seconds", result.seconds)):
            if math.isfinite(value):
                self.writer.add_scalar(f"validation/{tag}", value, result.step)
        for name, images in result.images.items():
            ref = refs.get(name)
            strip = _strip(ref.photo if ref is not None else None, images)
            self.writer.add_image(f"validation/{_safe(name)}", strip.numpy(), result.step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _strip(photo: torch.Tensor | None, images: torch.Tensor) -> torch.Tensor:
    """[H, (1 + P) * W, 3]: the reference photo (fitted into an H x W cell) then the P generated images."""
    _, h, w, _ = images.shape
    cells = [images[k] for k in range(images.shape[0])]
    if photo is not None:
        from .data import cover_resize

        fitted = cover_resize(np.clip(np.round(photo.numpy() * 255.0), 0, 255).astype(np.uint8), w, h)
        cells.insert(0, torch.from_numpy(fitted.copy()).float() / 255.0)
    return torch.cat(cells, dim=1).clamp(0, 1)


def _save_png(image: torch.Tensor, path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.clip(np.round(image.float().cpu().numpy() * 255.0), 0, 255).astype(np.uint8)).save(path)
