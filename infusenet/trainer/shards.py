"""Data at scale: input WebDataset shards, the sharded encoder cache and its streaming dataset.

Input shards (``webdataset`` tars; members of one sample share a key, ``<key>.<ext>``):

* ``jpg``/``jpeg``/``png``/``webp`` - the target image (required);
* ``txt`` - the caption (else ``json`` ``caption`` or ``caption_en``);
* ``id.jpg``/``id.png``/... - the identity photo, or a precomputed ArcFace embedding: ``embedding.npy``
  [512] or ``json`` ``embedding`` [512] / ``embeddings`` [[512], ...] with ``bboxes`` [[x1, y1, x2, y2], ...]
  (one per face; ``face`` picks one, else the largest box), the layout MultiID-2M's labels use;
* ``pose.png``/... - the control image; ``json`` ``"pose": "auto"`` draws it from the target's face;
* ``json`` ``id`` (else the key) and ``name`` (an identity cluster, "none" for none), kept in the
  shard records (``person``).

A precomputed embedding must come from the face encoder the trained InfuseNet will see at inference
(the pack's ArcFace); embeddings of another recognition model (MultiID-2M ships antelopev2's) train
a branch for that model. The face box centres the bucket crop on the face.

Cache (:func:`prepare_shards`): ``shards.json`` (settings), ``empty_text.safetensors`` and per shard
``shard-NNNNNN.tar`` (per sample ``<key>.safetensors``: bf16 ``latent`` [16, h, w], ``control``
[16, h, w], ``embedding`` [512], ``context`` [T, C], ``pooled`` [P]; ``<key>.json``: id and bucket)
beside ``shard-NNNNNN.json``, its index and completion record (count, bucket of each sample, byte
offset and size of each tensor file), written after the tar is complete. Shard ``k`` holds input unit
``k`` (manifest samples ``k * shard_size ...`` or input tar ``k``) and is made by rank ``k % world``;
a rerun skips every shard whose record exists, so a crashed preparation resumes where it stopped.

Reading (:class:`ShardedDataset`): the per-shard records give every sample's bucket and byte range;
the order of an epoch (shards shuffled, then a shuffle buffer, then batches of one bucket) is computed
from them alone, so step ``s`` of any rank is known without reading tensors, and each rank reads only
the samples of its slice.
"""
from __future__ import annotations

import io
import json
import logging
import mmap
import os
import random
import re
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from safetensors.torch import save as save_safetensors

from .buckets import Bucket, aspect_buckets
from .data import (EMPTY_TEXT_FILE, DataError, EncodedSample, Encoders, PrepareReport, Sample,
                   SampleEncoder, cache_tensors, check_loader, read_empty_text, read_manifest)
from .text import T5_TOKENS

log = logging.getLogger(__name__)

SHARDS_FILE = "shards.json"
SHARD_RECORD = re.compile(r"^shard-(\d{6})\.json$")
FORMAT = "infusenet-shards"
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
SETTINGS_THAT_MATTER = ("format", "version", "buckets", "t5_tokens", "dtype", "shard_size", "units")


def shard_name(k: int) -> str:
    return f"shard-{k:06d}"


@dataclass
class ShardReport(PrepareReport):
    """What one rank did: samples encoded or skipped, and the shards it wrote or found finished."""

    written: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- input
def _json_of(rec: dict) -> dict:
    raw = rec.get("json")
    if raw is None:
        return {}
    try:
        meta = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"sample '{rec.get('__key__')}' in '{rec.get('__url__')}': its json member is not JSON ({e})") from e
    return meta if isinstance(meta, dict) else {}


def _first(rec: dict, prefix: str) -> bytes | None:
    for ext in IMAGE_EXTS:
        if prefix + ext in rec:
            return rec[prefix + ext]
    return None


def _box(b) -> tuple[float, float, float, float]:
    return tuple(float(v) for v in list(b)[:4])


def sample_from_record(rec: dict) -> Sample:
    """A :class:`~infusenet.trainer.data.Sample` from one webdataset record (raw bytes per extension)."""
    key, url = rec.get("__key__", "?"), rec.get("__url__", "?")
    meta = _json_of(rec)
    sid = str(meta.get("id", key))
    target = _first(rec, "")
    if target is None:
        raise DataError(f"sample '{sid}' in '{url}' has no target image (one of {', '.join(IMAGE_EXTS)})")
    caption = rec["txt"].decode("utf-8") if "txt" in rec else str(meta.get("caption", meta.get("caption_en", "")))
    boxes = meta.get("bboxes") or ([meta["bbox"]] if meta.get("bbox") is not None else [])
    embeddings = meta.get("embeddings") or ([meta["embedding"]] if meta.get("embedding") is not None else [])
    if "embedding.npy" in rec:
        embeddings = [np.load(io.BytesIO(rec["embedding.npy"]), allow_pickle=False)]
    face = meta.get("face")
    if face is None and len(boxes) > 1:
        face = max(range(len(boxes)), key=lambda i: (boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1]))
    face = int(face or 0)
    box = _box(boxes[face]) if face < len(boxes) else None
    identity = _first(rec, "id.")
    embedding = None
    if identity is None and embeddings:
        if face >= len(embeddings):
            raise DataError(f"sample '{sid}' in '{url}': face {face} has no embedding ({len(embeddings)} given)")
        embedding = np.asarray(embeddings[face], dtype=np.float32).reshape(-1).tolist()
    pose = _first(rec, "pose.")
    if pose is None and meta.get("pose") == "auto":
        pose = "auto"
    person = None if meta.get("name") in (None, "none") else str(meta["name"])
    return Sample(sid, "spss", identity, target, caption, pose, embedding, box, person)


def read_input_shard(url: str) -> tuple[list[Sample], dict[str, str]]:
    """(samples, problems by key) of one input tar, read with ``webdataset``."""
    import webdataset as wds

    samples, problems = [], {}
    ds = wds.WebDataset(url, shardshuffle=False, nodesplitter=None, workersplitter=None, empty_check=False)
    for rec in ds:
        try:
            samples.append(sample_from_record(rec))
        except DataError as e:
            problems[str(rec.get("__key__"))] = str(e)
    return samples, problems


def input_units(source, shard_size: int) -> list[Callable[[], tuple[list[Sample], dict[str, str]]]]:
    """The units of work, in a fixed order: slices of ``shard_size`` manifest samples (``source`` a
    ``.jsonl`` file), or input tars (``source`` a tar, a folder of tars or a list of tars)."""
    if isinstance(source, (str, os.PathLike)) and str(source).endswith(".jsonl"):
        samples, problems = read_manifest(source)
        chunks = [samples[i:i + shard_size] for i in range(0, len(samples), shard_size)] or [[]]
        return [(lambda c=c, p=(problems if k == 0 else {}): (c, dict(p))) for k, c in enumerate(chunks)]
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            tars = sorted(str(p) for p in path.glob("*.tar"))
        elif path.is_file():
            tars = [str(path)]
        else:
            raise DataError(f"data source '{source}' is neither a manifest (.jsonl), a tar nor a folder of tars")
    else:
        tars = [str(p) for p in source]
    if not tars:
        raise DataError(f"data source '{source}' holds no .tar shards")
    return [(lambda t=t: read_input_shard(t)) for t in tars]


# ---------------------------------------------------------------- writing
def _atomic_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _rank_world(rank: int | None, world: int | None) -> tuple[int, int]:
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world = int(os.environ.get("WORLD_SIZE", 1)) if world is None else world
    if not 0 <= rank < world:
        raise ValueError(f"rank must be in [0, world); got rank {rank} of {world}")
    return rank, world


def _settings(cache: Path, settings: dict) -> None:
    path = cache / SHARDS_FILE
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        differ = [k for k in SETTINGS_THAT_MATTER if old.get(k) != settings.get(k)]
        if differ:
            raise DataError(f"cache '{cache}' was prepared with other settings ({', '.join(f'{k}: {old.get(k)} -> {settings.get(k)}' for k in differ)}); "
                            "use another folder, or the settings it was made with")
        return
    _atomic_json(path, settings)


def member_ranges(tar_path: str | os.PathLike) -> dict[str, tuple[int, int]]:
    """{member name: (byte offset of its data, size)} of a tar file, read from the headers."""
    import tarfile

    with tarfile.open(tar_path, "r:") as tf:
        return {m.name: (m.offset_data, m.size) for m in tf.getmembers() if m.isfile()}


def write_shard(cache: Path, k: int, encoded: Iterable[tuple[Sample, EncodedSample]],
                skipped: dict[str, str] | None = None) -> dict:
    """Write ``shard-k.tar`` from already encoded samples (under a temporary name, then renamed) and its
    record ``shard-k.json`` last: a shard counts as finished only when its record exists. Returns the record."""
    import webdataset as wds

    name = shard_name(k)
    tmp = cache / f"{name}.tar.tmp{os.getpid()}"
    entries = []
    try:
        with open(tmp, "wb") as f:
            sink = wds.TarWriter(f)
            try:
                for j, (sample, item) in enumerate(encoded):
                    key = f"{k:06d}_{j:05d}"
                    tensors = {n: t.to(torch.bfloat16).contiguous() for n, t in item.tensors.items()}
                    sink.write({"__key__": key, "safetensors": save_safetensors(tensors),
                                "json": {"id": sample.id, "bucket": list(item.bucket)}})
                    entry = {"key": key, "id": sample.id, "bucket": list(item.bucket)}
                    if isinstance(sample.target, str):
                        entry["target"] = sample.target
                    if sample.person is not None:
                        entry["person"] = sample.person
                    entries.append(entry)
            finally:
                sink.close()
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)     # an interrupted shard leaves nothing behind (a killed one, its .tmp)
        raise
    ranges = member_ranges(tmp)
    for e in entries:
        e["offset"], e["size"] = ranges[f"{e['key']}.safetensors"]
    os.replace(tmp, cache / f"{name}.tar")
    counts: dict[str, int] = defaultdict(int)
    for e in entries:
        counts["{}x{}".format(*e["bucket"])] += 1
    record = {"shard": f"{name}.tar", "count": len(entries), "buckets": dict(counts), "samples": entries,
              "skipped": dict(skipped or {})}
    _atomic_json(cache / f"{name}.json", record)
    log.info("Shard %s: %d samples", name, len(entries))
    return record


def write_settings(cache: Path, buckets: list[Bucket], t5_tokens: int, shard_size: int, units: int, source: str) -> None:
    """``shards.json``; a folder prepared with other settings is refused (DataError names the differences)."""
    cache.mkdir(parents=True, exist_ok=True)
    _settings(cache, {"format": FORMAT, "version": 1, "buckets": [list(b) for b in buckets], "t5_tokens": t5_tokens,
                      "dtype": "bfloat16", "shard_size": shard_size, "units": units, "source": source})


def write_empty_text(cache: Path, empty: dict[str, torch.Tensor]) -> None:
    """``empty_text.safetensors``: the empty caption's context and pooled vector, for caption dropout."""
    if not (cache / EMPTY_TEXT_FILE).is_file():
        tmp = cache / f"{EMPTY_TEXT_FILE}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(save_safetensors({k: v.to(torch.bfloat16).contiguous() for k, v in empty.items()}))
        os.replace(tmp, cache / EMPTY_TEXT_FILE)


def _encode_all(samples: list[Sample], encoder: SampleEncoder, buckets: list[Bucket], report: ShardReport,
                skipped: dict[str, str]) -> Iterator[tuple[Sample, EncodedSample]]:
    for sample in samples:
        try:
            item = encoder.encode(sample, buckets)
        except DataError as e:
            log.warning("Skipping %s", e)
            report.skipped[sample.id] = skipped[sample.id] = str(e)
            continue
        report.prepared.append(sample.id)
        if item.notes:
            report.notes[sample.id] = "; ".join(item.notes)
        yield sample, item


def prepare_shards(source, cache_dir: str | os.PathLike, encoders: Encoders, area: int = 1024 * 1024,
                   buckets: list[Bucket] | None = None, multiple: int = 64, shard_size: int = 256,
                   rank: int | None = None, world: int | None = None, t5_tokens: int = T5_TOKENS) -> ShardReport:
    """Encode ``source`` (a JSONL manifest, an input tar, a folder or a list of input tars) into the
    sharded cache ``cache_dir`` (see the module docstring); this process does the shards of ``rank`` of
    ``world`` (default: torchrun's RANK and WORLD_SIZE, else 0 of 1) and skips finished ones.

    buckets: training resolutions (width, height), multiples of 16; default :func:`aspect_buckets` of
    ``area`` and ``multiple``. Each target goes to the bucket nearest its aspect ratio."""
    rank, world = _rank_world(rank, world)
    buckets = [tuple(b) for b in (buckets or aspect_buckets(area, multiple))]
    bad = [b for b in buckets if b[0] % 16 or b[1] % 16]
    if bad:
        raise DataError(f"bucket resolutions must be multiples of 16; got {bad}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1; got {shard_size}")
    cache = Path(cache_dir)
    units = input_units(source, shard_size)
    write_settings(cache, buckets, t5_tokens, shard_size, len(units), str(source))
    encoder = SampleEncoder(encoders, t5_tokens)
    write_empty_text(cache, encoder.empty_text())
    report = ShardReport()
    for k, unit in enumerate(units):
        if k % world != rank:
            continue
        name = shard_name(k)
        if (cache / f"{name}.json").is_file() and (cache / f"{name}.tar").is_file():
            report.reused.append(name)
            continue
        samples, problems = unit()
        report.skipped.update(problems)
        skipped = dict(problems)
        write_shard(cache, k, _encode_all(samples, encoder, buckets, report, skipped), skipped)
        report.written.append(name)
    log.info("Rank %d of %d: %d shards written, %d already finished, %d samples, %d skipped.", rank, world,
             len(report.written), len(report.reused), len(report.prepared), len(report.skipped))
    return report


# ---------------------------------------------------------------- reading
SAFETENSORS_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}


def read_safetensors(buffer, start: int, size: int) -> dict[str, torch.Tensor]:
    """Tensors of the safetensors file stored at ``buffer[start:start + size]`` (a memory map), as
    read-only views of the buffer: an 8-byte header length, a JSON header, then the raw data."""
    view = memoryview(buffer)[start:start + size]
    n = int.from_bytes(view[:8], "little")
    header = json.loads(bytes(view[8:8 + n]))
    base = 8 + n
    out = {}
    with warnings.catch_warnings():      # the views are read-only; every reader copies (to fp32) first
        warnings.filterwarnings("ignore", message="The given buffer is not writable")
        for name, info in header.items():
            if name == "__metadata__":
                continue
            dtype = SAFETENSORS_DTYPES.get(info["dtype"])
            if dtype is None:
                raise DataError(f"unsupported tensor type {info['dtype']} in a shard (expected {list(SAFETENSORS_DTYPES)})")
            a, b = info["data_offsets"]
            t = torch.frombuffer(view[base + a:base + b], dtype=dtype) if b > a else torch.empty(0, dtype=dtype)
            out[name] = t.reshape(info["shape"])
    return out


def buffer_shuffle(items: Iterable[int], size: int, rng: random.Random) -> Iterator[int]:
    """Shuffle a stream with a buffer of ``size`` items: each new item takes the place of a random one,
    which leaves; the rest leaves shuffled at the end."""
    buf: list[int] = []
    for x in items:
        if len(buf) < size:
            buf.append(x)
            continue
        j = rng.randrange(size)
        yield buf[j]
        buf[j] = x
    rng.shuffle(buf)
    yield from buf


class ShardedDataset:
    """The sharded cache of :func:`prepare_shards`: ``dataset[i]`` -> dict of CPU float32 tensors.

    ``buckets``: train only on samples of these resolutions (None: all the cache holds).
    ``shuffle_buffer``: samples in the shuffle buffer. Loader settings as :class:`~.data.CachedDataset`."""

    def __init__(self, cache_dir: str | os.PathLike, buckets: list[Bucket] | None = None, shuffle_buffer: int = 1000,
                 caption_dropout: float = 0.0, num_workers: int = 0, prefetch: int = 2):
        self.root = Path(cache_dir)
        if not (self.root / SHARDS_FILE).is_file():
            raise DataError(f"'{self.root}' holds no {SHARDS_FILE}: run infusenet.trainer.shards.prepare_shards first")
        with open(self.root / SHARDS_FILE, encoding="utf-8") as f:
            self.settings = json.load(f)
        if shuffle_buffer < 1:
            raise ValueError(f"shuffle_buffer must be >= 1; got {shuffle_buffer}")
        self.shuffle_buffer = int(shuffle_buffer)
        self.caption_dropout, self.num_workers, self.prefetch = check_loader(caption_dropout, num_workers, prefetch)
        wanted = None if buckets is None else {tuple(b) for b in buckets}
        self.shards: list[str] = []
        self.skipped: dict[str, str] = {}
        ids, shard_of, offset, size, bucket = [], [], [], [], []
        records = sorted(n for n in os.listdir(self.root) if SHARD_RECORD.match(n))
        for rec_name in records:
            with open(self.root / rec_name, encoding="utf-8") as f:
                rec = json.load(f)
            self.skipped.update(rec.get("skipped", {}))
            if not (self.root / rec["shard"]).is_file():
                log.warning("Skipping shard %s: its tar '%s' is missing", rec_name, rec["shard"])
                continue
            s = len(self.shards)
            self.shards.append(rec["shard"])
            for e in rec["samples"]:
                if wanted is not None and tuple(e["bucket"]) not in wanted:
                    continue
                ids.append(e["id"])
                shard_of.append(s)
                offset.append(e["offset"])
                size.append(e["size"])
                bucket.append(tuple(e["bucket"]))
        units = self.settings.get("units")
        if units is not None and len(records) < units:
            log.warning("Cache %s holds %d of %d shards: its preparation has not finished.", self.root, len(records), units)
        if not ids:
            raise DataError(f"cache '{self.root}' has no usable samples" + (f" in buckets {sorted(wanted)}" if wanted else ""))
        self._ids = ids
        self.buckets: list[Bucket] = sorted(set(bucket))
        index = {b: i for i, b in enumerate(self.buckets)}
        self.shard_of = np.asarray(shard_of, dtype=np.int64)
        self.offset = np.asarray(offset, dtype=np.int64)
        self.size = np.asarray(size, dtype=np.int64)
        self.bucket_of = np.asarray([index[b] for b in bucket], dtype=np.int64)
        counts = np.bincount(self.bucket_of, minlength=len(self.buckets))
        self.resolution = self.buckets[int(counts.argmax())]
        self._files: dict[int, mmap.mmap] = {}
        self._pid = os.getpid()
        self._epoch: tuple[tuple, list[list[int]]] | None = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_files"] = {}
        return state

    def __len__(self) -> int:
        return len(self._ids)

    def ids(self) -> list[str]:
        return list(self._ids)

    def bucket_counts(self) -> dict[Bucket, int]:
        counts = np.bincount(self.bucket_of, minlength=len(self.buckets))
        return {b: int(c) for b, c in zip(self.buckets, counts)}

    def _map(self, shard: int) -> mmap.mmap:
        if os.getpid() != self._pid:      # a forked DataLoader worker maps the files itself
            self._files, self._pid = {}, os.getpid()
        m = self._files.get(shard)
        if m is None:
            with open(self.root / self.shards[shard], "rb") as f:
                m = self._files[shard] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return m

    def read(self, i: int) -> dict[str, torch.Tensor]:
        """The stored (bf16) tensors of sample ``i``, read in place from its shard's memory map."""
        shard = int(self.shard_of[i])
        m = self._map(shard)
        start, size = int(self.offset[i]), int(self.size[i])
        if start + size > len(m):
            raise DataError(f"shard '{self.root / self.shards[shard]}' is shorter than its record says")
        return read_safetensors(m, start, size)

    def stored(self, i: int) -> dict[str, torch.Tensor]:
        """The cache keys of sample ``i`` as stored (bf16 views); :func:`~.data.collate` stacks, then converts."""
        return cache_tensors(self.read(i))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v.float() for k, v in self.stored(i).items()}

    def empty_text(self) -> dict[str, torch.Tensor]:
        return {k: v.float() for k, v in read_empty_text(self.root).items()}

    # ------------------------------------------------------------ order
    def batches_per_epoch(self, global_batch: int) -> int:
        return sum(c // global_batch for c in self.bucket_counts().values())

    def epoch_batches(self, epoch: int, global_batch: int, seed: int, shuffle: bool) -> list[list[int]]:
        """The global batches of one epoch, each a list of ``global_batch`` sample indices of one bucket:
        the shards in an order drawn from (seed, epoch), their samples through the shuffle buffer, and
        a batch made whenever a bucket has ``global_batch`` samples waiting (the rest of a bucket at the
        end of the epoch is left out, so every epoch has :meth:`batches_per_epoch` batches)."""
        key = (epoch, global_batch, seed, shuffle)
        if self._epoch is not None and self._epoch[0] == key:
            return self._epoch[1]
        rng = random.Random(seed * 1_000_003 + epoch * 7_919 + 3)
        order = list(range(len(self.shards)))
        if shuffle:
            rng.shuffle(order)
        starts = np.searchsorted(self.shard_of, np.arange(len(self.shards) + 1))
        stream: Iterable[int] = (i for s in order for i in range(int(starts[s]), int(starts[s + 1])))
        if shuffle:
            stream = buffer_shuffle(stream, self.shuffle_buffer, rng)
        waiting: dict[int, list[int]] = defaultdict(list)
        batches = []
        for i in stream:
            b = int(self.bucket_of[i])
            waiting[b].append(i)
            if len(waiting[b]) == global_batch:
                batches.append(waiting.pop(b))
        self._epoch = (key, batches)
        return batches

    def global_batch(self, step: int, global_batch: int, seed: int, shuffle: bool) -> list[int]:
        """Sample indices of the global batch of ``step`` (global positions ``step * B ...``)."""
        n = self.batches_per_epoch(global_batch)
        if n == 0:
            raise DataError(f"no bucket of cache '{self.root}' holds a global batch of {global_batch} samples "
                            f"(samples per bucket: {self.bucket_counts()}); use a smaller batch or more data")
        epoch, k = divmod(step, n)
        return self.epoch_batches(epoch, global_batch, seed, shuffle)[k]
