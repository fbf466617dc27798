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
identity photo), ``context`` [T, C] and ``pooled`` [P] (text encoder, FLUX's T5 at 512 tokens: see
:mod:`.text`), ``empty_text.safetensors`` (the empty caption, for caption dropout) and an ``index.json``.
With FLUX.2 [klein] encoders the latents are [128, h/2, w/2] (the FLUX.2 VAE's /16) and ``pooled`` is
empty ([0]); a cache may also leave ``pooled`` out (:data:`OPTIONAL_KEYS`).
Samples that fail (missing or unreadable file, no detectable face) are reported by id and skipped.
For large sets, :func:`infusenet.trainer.shards.prepare_shards` writes the same tensors into tar shards.

Reading: :func:`open_dataset` opens either cache; :func:`batch_stream` is the one way the trainer reads
batches, with the global-position scheme of :func:`step_batch` (step ``s`` holds positions
``s * B .. s * B + B - 1``; rank ``r`` of ``w`` takes ``s * B + r * B / w + k``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .buckets import Bucket, fit_to_bucket, nearest_bucket
from .text import T5_TOKENS, encode_caption

log = logging.getLogger(__name__)

INDEX_FILE = "index.json"
EMPTY_TEXT_FILE = "empty_text.safetensors"
CACHE_KEYS = ("latent", "control", "embedding", "context", "pooled")
OPTIONAL_KEYS = ("pooled",)
"""Cache keys a sample may lack: FLUX.2 has no pooled text vector (read as an empty [0] tensor)."""


def cache_tensors(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The :data:`CACHE_KEYS` of a stored sample, an absent optional key as an empty tensor of the sample's dtype."""
    dtype = raw["latent"].dtype if "latent" in raw else torch.float32
    return {k: raw[k] if k in raw or k not in OPTIONAL_KEYS else torch.zeros(0, dtype=dtype) for k in CACHE_KEYS}


class DataError(ValueError):
    """A sample that cannot be used; the message names the sample and the file."""


@dataclass
class Sample:
    """One training pair as the manifest describes it (absolute paths)."""

    id: str
    kind: str                 # "spss" | "spms"
    identity: str | bytes | None      # path or encoded image; None with a precomputed embedding
    target: str | bytes
    caption: str
    pose: str | bytes | None = None   # path or encoded image, "auto" or None (black control)
    embedding: list[float] | None = None               # precomputed ArcFace [512] instead of the photo
    face_box: tuple[float, float, float, float] | None = None  # x1, y1, x2, y2 of the face in the target
    person: str | None = None                           # identity cluster, when the data names one


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
def load_rgb(path: str | bytes, sample_id: str, name: str = "") -> tuple[np.ndarray, str | None]:
    """uint8 RGB [H, W, 3] and a note when the file's mode had to be converted.

    ``path``: a file, or the encoded bytes of one (``name`` says which member they came from).
    16-bit greyscale is scaled to 8 bits; CMYK, palette, greyscale and alpha images are converted
    to RGB (alpha dropped). Raises DataError naming the sample for missing or unreadable files."""
    import io

    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(path, (bytes, bytearray)):
        source, path = io.BytesIO(path), name or "image bytes"
    elif not os.path.isfile(path):
        raise DataError(f"sample '{sample_id}': image file '{path}' does not exist")
    else:
        source = path
    try:
        with Image.open(source) as im:
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
    return fit_to_bucket(rgb, (width, height))[0]


def _image_tensor(rgb: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> ComfyUI IMAGE [1, H, W, 3] float 0..1."""
    return torch.from_numpy(rgb).float().div(255.0).unsqueeze(0)


# ---------------------------------------------------------------- encoding one sample
@dataclass
class EncodedSample:
    """The cached tensors of one sample (float32, CPU) and the bucket its target was fitted to."""

    tensors: dict[str, torch.Tensor]
    bucket: Bucket
    notes: list[str]


class SampleEncoder:
    """Runs the encoders on one sample at a time; what samples share is computed once (the identity
    embedding of a photo, the black control of a resolution, the empty caption)."""

    def __init__(self, encoders: Encoders, t5_tokens: int = T5_TOKENS):
        self.encoders = encoders
        self.t5_tokens = t5_tokens
        self._embeddings: dict[str, torch.Tensor] = {}
        self._black: dict[Bucket, torch.Tensor] = {}
        self._empty: dict[str, torch.Tensor] | None = None

    def empty_text(self) -> dict[str, torch.Tensor]:
        """{"context": [T, C], "pooled": [P]} of the empty caption (what caption dropout trains on)."""
        if self._empty is None:
            context, pooled = encode_caption(self.encoders.clip, "", self.t5_tokens)
            self._empty = {"context": context.contiguous(), "pooled": pooled.contiguous()}
        return self._empty

    def identity(self, sample: Sample, notes: list) -> torch.Tensor:
        """ArcFace embedding [512]: the sample's precomputed one (made unit length, as the pack's face
        encoder gives it) or the face encoder's on the identity photo."""
        from ..face import FaceError
        from ..face.identity import identity_from_images

        if sample.embedding is not None:
            e = torch.as_tensor(np.asarray(sample.embedding, dtype=np.float32)).flatten()
            if e.numel() != 512 or not torch.isfinite(e).all() or float(e.norm()) == 0:
                raise DataError(f"sample '{sample.id}': the precomputed embedding must be 512 finite numbers, not all "
                                f"zero; got {e.numel()} values")
            return e / e.norm()
        if sample.identity is None:
            raise DataError(f"sample '{sample.id}' has neither an identity photo nor a precomputed embedding")
        key = sample.identity if isinstance(sample.identity, str) else hashlib.sha1(sample.identity).hexdigest()
        if key not in self._embeddings:
            photo, note = load_rgb(sample.identity, sample.id, "identity photo")
            notes.append(note)
            where = sample.identity if isinstance(sample.identity, str) else f"identity photo of '{sample.id}'"
            try:
                ident = identity_from_images(self.encoders.face, [torch.from_numpy(photo).float() / 255.0])
            except FaceError as e:
                raise DataError(f"sample '{sample.id}': no usable face in identity photo '{where}' ({e})") from e
            self._embeddings[key] = ident.embedding.float().cpu().flatten()
        return self._embeddings[key]

    def control(self, sample: Sample, target: np.ndarray, target_size: tuple[int, int], bucket: Bucket,
                notes: list) -> torch.Tensor:
        from ..face import FaceError
        from ..face.pose import pose_image

        width, height = bucket
        vae = self.encoders.vae
        if sample.pose is None:
            if bucket not in self._black:
                self._black[bucket] = vae.encode(torch.zeros(1, height, width, 3))[0].float().cpu()
            return self._black[bucket]
        if isinstance(sample.pose, str) and sample.pose == "auto":
            try:
                pose = pose_image(self.encoders.face, _image_tensor(target)[0], width, height)
            except FaceError as e:
                where = sample.target if isinstance(sample.target, str) else "the target image"
                raise DataError(f"sample '{sample.id}': no face in target '{where}' to draw the pose from ({e})") from e
        else:
            rgb, note = load_rgb(sample.pose, sample.id, "pose image")
            notes.append(note)
            box = sample.face_box
            if box is not None:   # the pose image is drawn over the target: keep the same crop
                sx, sy = rgb.shape[1] / target_size[0], rgb.shape[0] / target_size[1]
                box = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
            pose = _image_tensor(fit_to_bucket(rgb, bucket, box)[0])
        return vae.encode(pose)[0].float().cpu()

    def encode(self, sample: Sample, buckets: list[Bucket]) -> EncodedSample:
        """All cached tensors of ``sample``, its target fitted to the nearest of ``buckets``.
        Raises DataError naming the sample when a file is missing or unreadable or has no face."""
        notes: list = []
        embedding = self.identity(sample, notes)
        target, note = load_rgb(sample.target, sample.id, "target image")
        notes.append(note)
        size = (target.shape[1], target.shape[0])
        bucket = nearest_bucket(*size, buckets)
        target, _ = fit_to_bucket(target, bucket, sample.face_box)
        latent = self.encoders.vae.encode(_image_tensor(target))[0].float().cpu()
        control = self.control(sample, target, size, bucket, notes)
        context, pooled = encode_caption(self.encoders.clip, sample.caption, self.t5_tokens)
        tensors = {"latent": latent, "control": control, "embedding": embedding, "context": context, "pooled": pooled}
        return EncodedSample({k: v.contiguous() for k, v in tensors.items()}, bucket, [n for n in notes if n])


# ---------------------------------------------------------------- the per-file cache
def encode_text(clip, caption: str) -> tuple[torch.Tensor, torch.Tensor]:
    """ComfyUI CLIP -> (context [T, C], pooled [P]) float32 on CPU (FLUX's T5 at 512 tokens)."""
    return encode_caption(clip, caption)


def prepare_cache(manifest: str | os.PathLike, cache_dir: str | os.PathLike, encoders: Encoders,
                  resolution: tuple[int, int] = (1024, 1024), t5_tokens: int = T5_TOKENS) -> PrepareReport:
    """Encode every sample of ``manifest`` once into ``cache_dir`` (see the module docstring).

    resolution: (width, height) of the training images, multiples of 16."""
    width, height = resolution
    if width % 16 or height % 16:
        raise DataError(f"training resolution must be a multiple of 16; got {width}x{height}")
    cache = Path(cache_dir)
    (cache / "samples").mkdir(parents=True, exist_ok=True)
    samples, problems = read_manifest(manifest)
    report = PrepareReport(skipped=dict(problems))
    encoder = SampleEncoder(encoders, t5_tokens)
    entries = []
    for sample in samples:
        try:
            encoded = encoder.encode(sample, [(width, height)])
        except DataError as e:
            log.warning("Skipping %s", e)
            report.skipped[sample.id] = str(e)
            continue
        name = f"{len(entries):07d}.safetensors"
        save_file(encoded.tensors, str(cache / "samples" / name))
        entries.append({"id": sample.id, "kind": sample.kind, "file": f"samples/{name}", "caption": sample.caption})
        report.prepared.append(sample.id)
        if encoded.notes:
            report.notes[sample.id] = "; ".join(encoded.notes)
            log.info("sample '%s': %s", sample.id, report.notes[sample.id])
    save_file(encoder.empty_text(), str(cache / EMPTY_TEXT_FILE))
    with open(cache / INDEX_FILE, "w", encoding="utf-8") as f:
        json.dump({"version": 1, "resolution": [width, height], "manifest": str(manifest), "samples": entries,
                   "skipped": report.skipped, "notes": report.notes}, f, indent=1)
    log.info("Cache %s: %d samples prepared, %d skipped.", cache, len(entries), len(report.skipped))
    return report


class CachedDataset:
    """The prepared samples of a cache folder; ``dataset[i]`` -> dict of CPU float32 tensors.

    Loader settings: ``caption_dropout`` (share of samples trained on the empty caption), ``num_workers``
    and ``prefetch`` (DataLoader processes for :func:`batch_stream`; 0: read in the training process)."""

    def __init__(self, cache_dir: str | os.PathLike, caption_dropout: float = 0.0, num_workers: int = 0,
                 prefetch: int = 2):
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
        self.caption_dropout, self.num_workers, self.prefetch = check_loader(caption_dropout, num_workers, prefetch)
        self._epoch: tuple[tuple[int, int], list[int]] | None = None

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return cache_tensors(load_file(str(self.root / self.entries[i]["file"])))

    def ids(self) -> list[str]:
        return [e["id"] for e in self.entries]

    def empty_text(self) -> dict[str, torch.Tensor]:
        return read_empty_text(self.root)

    def epoch_order(self, epoch: int, seed: int) -> list[int]:
        """The permutation of epoch ``epoch`` (drawn once per epoch, kept for the next draws)."""
        if self._epoch is None or self._epoch[0] != (epoch, seed):
            g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            self._epoch = ((epoch, seed), torch.randperm(len(self), generator=g).tolist())
        return self._epoch[1]

    def global_batch(self, step: int, global_batch: int, seed: int, shuffle: bool) -> list[int]:
        """Dataset indices of global positions ``step * B .. step * B + B - 1`` (epochs are permutations)."""
        out = []
        for p in range(step * global_batch, (step + 1) * global_batch):
            epoch, k = divmod(p, len(self))
            out.append(self.epoch_order(epoch, seed)[k] if shuffle else k)
        return out


def check_loader(caption_dropout: float, num_workers: int, prefetch: int) -> tuple[float, int, int]:
    if not 0.0 <= caption_dropout < 1.0:
        raise ValueError(f"caption_dropout is a share of samples in [0, 1); got {caption_dropout}")
    if num_workers < 0 or prefetch < 1:
        raise ValueError(f"num_workers must be >= 0 and prefetch >= 1; got {num_workers} and {prefetch}")
    return float(caption_dropout), int(num_workers), int(prefetch)


def read_empty_text(root: Path) -> dict[str, torch.Tensor]:
    path = Path(root) / EMPTY_TEXT_FILE
    if not path.is_file():
        raise DataError(f"caption dropout needs the empty caption's encoding '{path}', which this cache lacks: "
                        "prepare the cache again, or set data.caption_dropout to 0")
    empty = load_file(str(path))
    empty.setdefault("pooled", torch.zeros(0, dtype=empty["context"].dtype))   # FLUX.2: none
    return empty


def open_dataset(config) -> "CachedDataset":
    """The dataset a :class:`~infusenet.trainer.config.DataConfig` names, with its loader settings.

    ``format``: "files" (``index.json`` of :func:`prepare_cache`), "shards" (``shards.json`` of
    :func:`infusenet.trainer.shards.prepare_shards`) or "auto" (whichever the folder holds)."""
    from .shards import SHARDS_FILE, ShardedDataset

    root = Path(config.cache_dir)
    fmt = config.format
    if fmt == "auto":
        fmt = "shards" if (root / SHARDS_FILE).is_file() else "files"
    loader = dict(caption_dropout=config.caption_dropout, num_workers=config.num_workers, prefetch=config.prefetch)
    if fmt == "files":
        return CachedDataset(root, **loader)
    if fmt == "shards":
        return ShardedDataset(root, buckets=config.buckets, shuffle_buffer=config.shuffle_buffer, **loader)
    raise ValueError(f"data.format must be 'auto', 'files' or 'shards'; got {fmt!r}")


# ---------------------------------------------------------------- batches
def sample_position(position: int, n: int, seed: int, shuffle: bool) -> int:
    """Dataset index at global position ``position`` of the endless stream of epochs: each epoch is a
    permutation of range(n) drawn from (seed, epoch). The data position is therefore the step."""
    epoch, k = divmod(position, n)
    if not shuffle:
        return k
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return int(torch.randperm(n, generator=g)[k])


def caption_dropped(seed: int, position: int, rate: float) -> bool:
    """Whether the sample at global ``position`` trains on the empty caption: a draw from (seed, position),
    so it does not depend on the rank, the workers or a resume."""
    return rate > 0 and random.Random(seed * 1_000_003 + position * 104_729 + 5).random() < rate


def collate(items: list[dict[str, torch.Tensor]], as_float: bool = True) -> dict[str, torch.Tensor]:
    """Stack the samples of one batch: {key: float32 [B, ...]} for the cache keys (stored bf16 is
    stacked first and converted once; an absent ``pooled`` is stacked empty, [B, 0])."""
    items = [cache_tensors(it) for it in items]
    for k in CACHE_KEYS:
        shapes = {tuple(it[k].shape) for it in items}
        if len(shapes) > 1:
            raise DataError(f"the samples of one batch have '{k}' of different shapes {sorted(shapes)}; a cache "
                            "holds one text length (T5 at 512 tokens; FLUX.2's Qwen3 text is 512 tokens unless a "
                            "caption is longer) and one resolution per batch. Prepare the cache again with this "
                            "version, or shorten captions past 512 tokens.")
    return {k: (torch.stack([it[k] for it in items]).float() if as_float else torch.stack([it[k] for it in items]))
            for k in CACHE_KEYS}


def step_batch(dataset, step: int, global_batch: int, rank: int, world: int, seed: int,
               shuffle: bool, as_float: bool = True) -> tuple[dict[str, torch.Tensor], list[int]]:
    """This rank's slice of the global batch of ``step`` and the global positions it holds
    (``as_float=False``: tensors as the cache stores them)."""
    per_rank = global_batch // world
    indices = dataset.global_batch(step, global_batch, seed, shuffle)[rank * per_rank:(rank + 1) * per_rank]
    positions = [step * global_batch + rank * per_rank + k for k in range(per_rank)]
    load = getattr(dataset, "stored", dataset.__getitem__)
    items = [load(i) for i in indices]
    rate = getattr(dataset, "caption_dropout", 0.0)
    if rate > 0:
        empty = dataset.empty_text()
        items = [{**it, **{k: v.to(it[k].dtype if k in it else v.dtype) for k, v in empty.items()}}
                 if caption_dropped(seed, p, rate) else it
                 for it, p in zip(items, positions)]
    return collate(items, as_float), positions


class StepBatches(torch.utils.data.IterableDataset):
    """Batches ``start_step, start_step + 1, ...`` for DataLoader workers: worker i of n makes the steps
    ``start_step + i + k * n``; the DataLoader takes them from the workers in turn, so the stream is
    the same as without workers."""

    def __init__(self, dataset, global_batch: int, rank: int, world: int, seed: int, shuffle: bool, start_step: int):
        super().__init__()
        self.args = (dataset, global_batch, rank, world, seed, shuffle)
        self.start_step = start_step

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        step = self.start_step + worker
        while True:
            yield step_batch(self.args[0], step, *self.args[1:], as_float=False)
            step += workers


def _as_is(batch):
    return batch


def batch_stream(dataset, global_batch: int, rank: int, world: int, seed: int, shuffle: bool, start_step: int = 0):
    """Endless iterator of (this rank's batch, its global positions) from ``start_step`` on: the one way the
    trainer reads data, whatever the dataset's kind. With ``dataset.num_workers`` > 0 the batches are made
    by DataLoader worker processes, ``dataset.prefetch`` batches ahead per worker; the stream is the same.
    Batches are float32 [B, ...] tensors."""
    workers = int(getattr(dataset, "num_workers", 0) or 0)
    if workers <= 0:
        step = start_step
        while True:
            yield step_batch(dataset, step, global_batch, rank, world, seed, shuffle)
            step += 1
    loader = torch.utils.data.DataLoader(
        StepBatches(dataset, global_batch, rank, world, seed, shuffle, start_step), batch_size=None,
        num_workers=workers, prefetch_factor=int(getattr(dataset, "prefetch", 2)), collate_fn=_as_is)
    for batch, positions in loader:   # workers hand over stored bf16 (half the bytes); float32 here
        yield {k: v.float() for k, v in batch.items()}, positions
