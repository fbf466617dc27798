"""Trainer checkpoints: ``output_dir/step-XXXXXX/`` with

* ``shards/``: ``torch.distributed.checkpoint`` (DCP) files written by every rank in parallel, each its
  own shards (no gather): ``model`` (the trained parameters), ``optim`` (AdamW moments and step
  counters, keyed by parameter name) and ``ema``; keys as published FLUX files name them (q/k norm
  ``.scale``) so a checkpoint resumes on any ComfyUI;
* ``state.pt`` (rank 0): step, LR scheduler, RNG, the world size it was written on, the configuration,
  the base's rotary ``axes_dim`` and the stage.

DCP loads each rank's part of every tensor, whatever world size wrote it: a checkpoint resumes on
another number of processes, with the optimiser state read shard by shard.
:func:`read_trainable` consolidates the parameters in one process (for export and stage 2).
Folders written before sharded checkpoints (``trainable.safetensors`` + ``ema.safetensors``) are
still read by :func:`read_trainable`.
"""
from __future__ import annotations

import contextlib
import logging
import re
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
                                                     set_model_state_dict, set_optimizer_state_dict)

from .. import host
from .ema import EMA

log = logging.getLogger(__name__)

SHARDS_DIR = "shards"
STATE_FILE = "state.pt"
TRAINABLE_FILE = "trainable.safetensors"   # parameters, in folders written before sharded checkpoints
EMA_FILE = "ema.safetensors"
STEP_DIR = re.compile(r"^step-(\d+)$")
_OPTIONS = StateDictOptions(flatten_optimizer_state_dict=True)
_NORM_PARAM = re.compile(r"(\.(?:query_norm|key_norm))\.(?:scale|weight)(?=\.|$)")


def published(key: str) -> str:
    """A parameter name (or optimiser entry naming one) with the q/k norm as published files name it."""
    return _NORM_PARAM.sub(r"\1.scale", key)


def _renamed(sd: dict) -> tuple[dict, dict[str, str]]:
    out, names = {}, {}
    for key, value in sd.items():
        out[published(key)] = value
        names[published(key)] = key
    return out, names


def _live_state(module: nn.Module, optimizer: torch.optim.Optimizer, ema: EMA | None) -> tuple[dict, dict]:
    """{"model", "optim"[, "ema"]} -> published-key state dicts of this rank's tensors (DTensors under
    FSDP), and published -> own name per section."""
    state, names = {}, {}
    state["model"], names["model"] = _renamed(get_model_state_dict(module, options=_OPTIONS))
    state["optim"], names["optim"] = _renamed(get_optimizer_state_dict(module, optimizer, options=_OPTIONS))
    if ema is not None:
        state["ema"], names["ema"] = _renamed(ema.state_dict())
    return state, names


@contextlib.contextmanager
def _quiet_single_process():
    """DCP warns that it runs in one process when no process group exists: that is intended here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is ")
        yield


def write_shards(folder: Path, module: nn.Module, optimizer: torch.optim.Optimizer, ema: EMA | None) -> None:
    """Every rank writes its shards into ``folder`` (a collective under torch.distributed)."""
    state, _ = _live_state(module, optimizer, ema)
    with _quiet_single_process():
        dcp.save(state, checkpoint_id=str(folder))


def read_shards(folder: Path, module: nn.Module, optimizer: torch.optim.Optimizer, ema: EMA | None) -> None:
    """Load ``folder`` into this rank's parameters, optimiser state and EMA (each rank reads its part)."""
    state, names = _live_state(module, optimizer, ema)
    if ema is None:
        state.pop("ema", None)
    with _quiet_single_process():
        dcp.load(state, checkpoint_id=str(folder))
    own = {section: {names[section][k]: v for k, v in sd.items()} for section, sd in state.items()}
    set_model_state_dict(module, own["model"], options=_OPTIONS)
    set_optimizer_state_dict(module, optimizer, own["optim"], options=_OPTIONS)
    if ema is not None:
        ema.load_state_dict(own["ema"])


def read_state(folder: Path) -> dict:
    folder = Path(folder)
    if not (folder / STATE_FILE).is_file():
        raise FileNotFoundError(f"'{folder}' is not a trainer checkpoint: {STATE_FILE} is missing")
    return torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)


def read_trainable(folder: str | Path, ema: bool = False) -> tuple[dict[str, Tensor], list[int]]:
    """(whole float32 parameters of the checkpoint, ``infusenet.*`` and ``resampler.*`` with published
    keys, on the CPU; the base's rotary ``axes_dim``). ``ema``: the EMA instead. One process."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    folder = Path(folder)
    section = "ema" if ema else "model"
    if (folder / SHARDS_DIR).is_dir():
        from torch.distributed.checkpoint.state_dict_loader import _load_state_dict_from_keys

        state = read_state(folder)
        with _quiet_single_process():
            loaded = _load_state_dict_from_keys(section, checkpoint_id=str(folder / SHARDS_DIR))
        if section not in loaded:
            raise FileNotFoundError(f"checkpoint '{folder}' holds no {section} (the run kept no EMA)")
        sd = {k: v.float() for k, v in loaded[section].items()}
        return sd, [int(a) for a in state.get("axes_dim", (16, 56, 56))]
    path = folder / (EMA_FILE if ema else TRAINABLE_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"'{folder}' is not a trainer checkpoint folder{' with EMA' if ema else ''}: neither "
                                f"'{SHARDS_DIR}/' nor '{path.name}' is there")
    with safe_open(str(path), "pt") as f:
        axes = [int(a) for a in (f.metadata() or {}).get("axes_dim", "16,56,56").split(",")]
    return host.to_published_keys(load_file(str(path))), axes


def is_checkpoint(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / STATE_FILE).is_file() and ((folder / SHARDS_DIR).is_dir() or (folder / TRAINABLE_FILE).is_file())


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """``step-XXXXXX`` folders of ``out_dir``, oldest first."""
    if not Path(out_dir).is_dir():
        return []
    found = [(int(m.group(1)), p) for p in Path(out_dir).iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def prune(out_dir: str | Path, keep_last: int | None) -> None:
    if keep_last:
        for old in list_checkpoints(out_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)


RESUMABLE_CHANGES = ("schedule.", "checkpoint.", "distributed.", "precision.gradient_checkpointing",
                     "precision.saved_activation_copies", "optim.optimizer", "optim.grad_accum_steps", "watch.",
                     "data.num_workers", "data.prefetch")
"""Settings that may change between a checkpoint and its resumption (how long, how often, on how many
processes, with or without recomputation, which AdamW kernel, how many micro-steps per step, what is
shown while it trains, how many loader processes read ahead): the
rest shapes what is trained and how."""


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return out


def config_differences(saved: dict, current: dict, defaults: dict | None = None) -> list[str]:
    """``"field saved -> current"`` for each training setting that differs (see :data:`RESUMABLE_CHANGES`).
    ``defaults``: the value of a setting a checkpoint predates (written before the setting existed)."""
    a, b = _flatten(saved), _flatten(current)
    for key, value in _flatten(defaults or {}).items():
        a.setdefault(key, value)
    return [f"{key} {a.get(key, '(unset)')!r} -> {b.get(key, '(unset)')!r}" for key in sorted(set(a) | set(b))
            if not key.startswith(RESUMABLE_CHANGES) and a.get(key) != b.get(key)]
