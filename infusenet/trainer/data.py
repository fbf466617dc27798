"""Training data: the manifest format, the encoder cache and the dataset the loop reads.

Manifest: a JSON Lines file, one record per line; paths are relative to the manifest's folder.

* SPSS (stage 1) record - the identity photo is also the target::

      {"id": "anna", "identity": "photos/anna.jpg", "caption": "a photo of a woman", "pose": "auto"}

* SPMS (stage 2) record - one real identity photo, several targets of the same person::

      {"id": "anna", "identity": "photos/anna.jpg",
       "targets": [{"image": "spms/anna_0.png", "caption": "anna on a beach", "pose": "spms/anna_0_pose.png"},
                   {"image": "spms/anna_1.png", "caption": "anna in a cafe"}]}

``pose``: an image file used as the control image, ``"auto"`` (the target's face keypoints drawn
with the pack's :func:`~infusenet.face.pose.pose_image`) or absent/null (a black image, the
reference's control without a pose). Each target becomes one sample, id ``"<id>/<k>"``.

:func:`prepare_cache` runs the encoders once and writes, per sample, ``samples/<n>.safetensors`` with
``latent`` [16, h, w] (raw VAE latent of the target resized and centre-cropped to the resolution),
``control`` [16, h, w] (raw VAE latent of the control image), ``embedding`` [512] (ArcFace of the
identity photo), ``context`` [T, C] and ``pooled`` [P] (text encoder) and an ``index.json``.
Samples that fail (missing or unreadable file, no detectable face) are reported by id and skipped.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)

INDEX_FILE = "index.json"
CACHE_KEYS = ("latent", "control", "embedding", "context", "pooled")


class DataError(ValueError):
    """A sample that cannot be used; the message names the sample and the file."""


@dataclass
class Sample:
    """One training pair as the manifest describes it (absolute paths)."""

    id: str
    kind: str                 # "spss" | "spms"
    identity: str
    target: str
    caption: str
    pose: str | None = None   # path, "auto" or None (black control)


@dataclass
class PrepareReport:
    prepared: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)   # sample id -> reason
    notes: dict[str, str] = field(default_factory=dict)     # sample id -> conversion done (image mode)


@dataclass
class Encoders:
    """What the cache needs: the pack's face encoder, a ComfyUI CLIP and a ComfyUI VAE."""

    face: object
    clip: object
    vae: object


# ---------------------------------------------------------------- manifest
def read_manifest(path: str | os.PathLike) -> tuple[list[Sample], dict[str, str]]:
    """(samples, problems by record id). A bad line is reported and skipped, never fatal."""
    path = Path(path)
    root = path.parent
    samples: list[Sample] = []
    problems: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                rid = str(rec["id"])
                identity = str(root / rec["identity"])
            except (ValueError, KeyError, TypeError) as e:
                problems[f"line {line_no}"] = f"{path}:{line_no} is not a manifest record with 'id' and 'identity': {e}"
                continue

            def pose_of(r: dict) -> str | None:
                p = r.get("pose")
                return None if p is None else p if p == "auto" else str(root / p)

            if "targets" in rec:
                for k, t in enumerate(rec["targets"]):
                    try:
                        samples.append(Sample(f"{rid}/{k}", "spms", identity, str(root / t["image"]),
                                              str(t.get("caption", "")), pose_of(t)))
                    except (KeyError, TypeError) as e:
                        problems[f"{rid}/{k}"] = f"{path}:{line_no}: target {k} of '{rid}' has no 'image': {e}"
            else:
                samples.append(Sample(rid, "spss", identity, identity, str(rec.get("caption", "")), pose_of(rec)))
    return samples, problems


def write_manifest(path: str | os.PathLike, records: list[dict]) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    return str(path)


# ---------------------------------------------------------------- images
def load_rgb(path: str, sample_id: str) -> tuple[np.ndarray, str | None]:
    """uint8 RGB [H, W, 3] and a note when the file's mode had to be converted.

    16-bit greyscale is scaled to 8 bits; CMYK, palette, greyscale and alpha images are converted
    to RGB (alpha dropped). Raises DataError naming the sample for missing or unreadable files."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not os.path.isfile(path):
        raise DataError(f"sample '{sample_id}': image file '{path}' does not exist")
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                a = np.asarray(im, dtype=np.float64)
                a = a / (65535.0 if mode.startswith("I;16") or a.max() > 255 else 255.0)
                rgb = np.repeat(np.clip(np.round(a * 255.0), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
            elif mode == "F":
                a = np.asarray(im, dtype=np.float64)
                rgb = np.repeat(np.clip(np.round(a * (255.0 if a.max() <= 1.0 else 1.0)), 0, 255).astype(np.uint8)[..., None], 3, -1)
            else:
                rgb = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"sample '{sample_id}': '{path}' is not a readable image ({e})") from e
    note = None if mode == "RGB" else f"'{os.path.basename(path)}' had mode {mode}; converted to RGB"
    return np.array(rgb, copy=True, order="C"), note


def cover_resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize (aspect kept, LANCZOS) to cover width x height, then centre-crop to it."""
    from PIL import Image

    h, w = rgb.shape[:2]
    scale = max(width / w, height / h)
    nw, nh = max(width, round(w * scale)), max(height, round(h * scale))
    im = Image.fromarray(rgb).resize((nw, nh), Image.LANCZOS)
    x, y = (nw - width) // 2, (nh - height) // 2
    return np.asarray(im.crop((x, y, x + width, y + height)))


def _image_tensor(rgb: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> ComfyUI IMAGE [1, H, W, 3] float 0..1."""
    return torch.from_numpy(rgb).float().div(255.0).unsqueeze(0)


# ---------------------------------------------------------------- cache
def encode_text(clip, caption: str) -> tuple[torch.Tensor, torch.Tensor]:
    """ComfyUI CLIP -> (context [T, C], pooled [P]) float32 on CPU."""
    cond, pooled = clip.encode_from_tokens(clip.tokenize(caption), return_pooled=True)
    return cond[0].float().cpu(), pooled[0].float().cpu()


def prepare_cache(manifest: str | os.PathLike, cache_dir: str | os.PathLike, encoders: Encoders,
                  resolution: tuple[int, int] = (1024, 1024)) -> PrepareReport:
    """Encode every sample of ``manifest`` once into ``cache_dir`` (see the module docstring).

    resolution: (width, height) of the training images, multiples of 16."""
    from ..face import FaceError
    from ..face.identity import identity_from_images
    from ..face.pose import pose_image

    width, height = resolution
    if width % 16 or height % 16:
        raise DataError(f"training resolution must be a multiple of 16; got {width}x{height}")
    cache = Path(cache_dir)
    (cache / "samples").mkdir(parents=True, exist_ok=True)
    samples, problems = read_manifest(manifest)
    report = PrepareReport(skipped=dict(problems))
    embeddings: dict[str, torch.Tensor] = {}
    black = None
    entries = []
    for sample in samples:
        try:
            notes = []
            if sample.identity not in embeddings:
                photo, note = load_rgb(sample.identity, sample.id)
                notes.append(note)
                try:
                    ident = identity_from_images(encoders.face, [torch.from_numpy(photo).float() / 255.0])
                except FaceError as e:
                    raise DataError(f"sample '{sample.id}': no usable face in identity photo '{sample.identity}' ({e})") from e
                embeddings[sample.identity] = ident.embedding.float().cpu()
            target, note = load_rgb(sample.target, sample.id)
            notes.append(note)
            target = cover_resize(target, width, height)
            latent = encoders.vae.encode(_image_tensor(target))[0].float().cpu()
            if sample.pose is None:
                if black is None:
                    black = encoders.vae.encode(torch.zeros(1, height, width, 3))[0].float().cpu()
                control = black
            else:
                if sample.pose == "auto":
                    try:
                        pose = pose_image(encoders.face, _image_tensor(target)[0], width, height)
                    except FaceError as e:
                        raise DataError(f"sample '{sample.id}': no face in target '{sample.target}' to draw the pose from ({e})") from e
                else:
                    rgb, note = load_rgb(sample.pose, sample.id)
                    notes.append(note)
                    pose = _image_tensor(cover_resize(rgb, width, height))
                control = encoders.vae.encode(pose)[0].float().cpu()
            context, pooled = encode_text(encoders.clip, sample.caption)
        except DataError as e:
            log.warning("Skipping %s", e)
            report.skipped[sample.id] = str(e)
            continue
        name = f"{len(entries):07d}.safetensors"
        save_file({"latent": latent.contiguous(), "control": control.contiguous(),
                   "embedding": embeddings[sample.identity].contiguous(), "context": context.contiguous(),
                   "pooled": pooled.contiguous()}, str(cache / "samples" / name))
        entries.append({"id": sample.id, "kind": sample.kind, "file": f"samples/{name}", "caption": sample.caption})
        report.prepared.append(sample.id)
        done = [n for n in notes if n]
        if done:
            report.notes[sample.id] = "; ".join(done)
            log.info("sample '%s': %s", sample.id, report.notes[sample.id])
    with open(cache / INDEX_FILE, "w", encoding="utf-8") as f:
        json.dump({"version": 1, "resolution": [width, height], "manifest": str(manifest), "samples": entries,
                   "skipped": report.skipped, "notes": report.notes}, f, indent=1)
    log.info("Cache %s: %d samples prepared, %d skipped.", cache, len(entries), len(report.skipped))
    return report


class CachedDataset:
    """The prepared samples of a cache folder; ``dataset[i]`` -> dict of CPU float32 tensors."""

    def __init__(self, cache_dir: str | os.PathLike):
        self.root = Path(cache_dir)
        index = self.root / INDEX_FILE
        if not index.is_file():
            raise DataError(f"'{self.root}' holds no {INDEX_FILE}: run infusenet.trainer.data.prepare_cache first")
        with open(index, encoding="utf-8") as f:
            meta = json.load(f)
        self.resolution = tuple(meta["resolution"])
        self.entries = []
        self.skipped: dict[str, str] = {}
        for e in meta["samples"]:
            if (self.root / e["file"]).is_file():
                self.entries.append(e)
            else:
                self.skipped[e["id"]] = f"sample '{e['id']}': cache file '{self.root / e['file']}' is missing"
                log.warning("Skipping %s", self.skipped[e["id"]])
        if not self.entries:
            raise DataError(f"cache '{self.root}' has no usable samples")

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return load_file(str(self.root / self.entries[i]["file"]))

    def ids(self) -> list[str]:
        return [e["id"] for e in self.entries]


def sample_position(position: int, n: int, seed: int, shuffle: bool) -> int:
    """Dataset index at global position ``position`` of the endless stream of epochs: each epoch is a
    permutation of range(n) drawn from (seed, epoch). The data position is therefore the step."""
    epoch, k = divmod(position, n)
    if not shuffle:
        return k
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return int(torch.randperm(n, generator=g)[k])


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([it[k] for it in items]) for k in CACHE_KEYS}


def step_batch(dataset: CachedDataset, step: int, global_batch: int, rank: int, world: int, seed: int,
               shuffle: bool) -> tuple[dict[str, torch.Tensor], list[int]]:
    """This rank's slice of the global batch of ``step`` and the global positions it holds."""
    per_rank = global_batch // world
    positions = [step * global_batch + rank * per_rank + k for k in range(per_rank)]
    items = [dataset[sample_position(p, len(dataset), seed, shuffle)] for p in positions]
    return collate(items), positions


def batch_stream(dataset, global_batch: int, rank: int, world: int, seed: int, shuffle: bool, start_step: int = 0):
    """Endless iterator of (this rank's batch, its global positions) from ``start_step`` on: the one way the
    trainer reads data, whatever the dataset's kind."""
    step = start_step
    while True:
        yield step_batch(dataset, step, global_batch, rank, world, seed, shuffle)
        step += 1
