"""ComfyUI's inference-written FLUX blocks, made trainable without changing their code or keys.

The blocks update their stream inputs in place (``img += ...``, ``txt += ...`` in a
``DoubleStreamBlock``, ``x += ...`` in a ``SingleStreamBlock``) after a norm has saved them for the
backward pass. Each trained call therefore works on copies of its tensor inputs, and a
``saved_tensors_hooks`` pair decides what autograd keeps:

* ``aliased`` (default): a saved tensor that shares storage with one of those inputs (the norm
  inputs, the only saved tensors the blocks overwrite) is copied when saved; any other saved
  tensor is kept as is and its version counter is checked when the backward pass uses it, so a
  host whose blocks overwrite something else fails loudly instead of giving wrong gradients.
  Extra memory per call: one copy of each stream input per norm that reads it (2 of ``img`` and
  2 of ``txt`` in a double block, 1 of ``x`` in a single block), plus the small ``vec`` and ``pe``.
* ``all``: every saved tensor is copied (twice the saved activations of a block).

Blocks called with ``modulation_dims`` (reference latents) modulate a fresh tensor in place too;
those calls always copy every saved tensor.

With gradient checkpointing the block runs without saving anything and is recomputed in the
backward pass (re-entrant checkpoint: only the block inputs are kept, and the recomputation runs
under the same hooks). Tensors nested in an argument (FLUX.2's ``vec``: tuples of ``ModulationOut``
computed once by the global modulation) are inputs of the checkpoint too, so each block's backward
reaches the modulation through its own inputs.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

MODES = ("aliased", "all")


@dataclass
class CopyStats:
    """What the pack hooks saved during the calls since the last :meth:`reset` (bytes)."""

    copied_bytes: int = 0
    kept_bytes: int = 0

    def reset(self) -> None:
        self.copied_bytes = self.kept_bytes = 0


class _SavedTensorPolicy:
    def __init__(self, mutated: list[Tensor], copy_all: bool, stats: CopyStats):
        self.storages = {t.untyped_storage().data_ptr() for t in mutated}
        self.copy_all = copy_all
        self.stats = stats

    def pack(self, t: Tensor):
        if isinstance(t, nn.Parameter):
            return t, None
        nbytes = t.numel() * t.element_size()
        if self.copy_all or t.untyped_storage().data_ptr() in self.storages:
            self.stats.copied_bytes += nbytes
            return t.clone(), None
        self.stats.kept_bytes += nbytes
        return t, t._version

    @staticmethod
    def unpack(packed) -> Tensor:
        t, version = packed
        if version is not None and t._version != version:
            raise RuntimeError(
                f"A tensor {tuple(t.shape)} that a FLUX block saved for the backward pass was changed in place "
                "afterwards, so its gradients would be wrong; train with "
                "config.precision.saved_activation_copies='all' on this ComfyUI.")
        return t


class _Slot(int):
    """Where the n-th tensor of a block call's arguments goes back (see :func:`_rebuild`)."""


def _rebuild(value, convert):
    """``value`` with ``convert`` applied to every leaf inside tuples, lists, dicts and dataclasses; a container
    whose leaves all come back unchanged is kept as the very object (``transformer_options`` stays the
    caller's dict)."""
    if isinstance(value, (tuple, list)):
        items = [_rebuild(v, convert) for v in value]
        if all(a is b for a, b in zip(items, value)):
            return value
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    if isinstance(value, dict):
        items = {k: _rebuild(v, convert) for k, v in value.items()}
        return value if all(items[k] is value[k] for k in value) else items
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _rebuild(getattr(value, f.name), convert) for f in dataclasses.fields(value) if f.init}
        return value if all(fields[n] is getattr(value, n) for n in fields) else dataclasses.replace(value, **fields)
    return convert(value)


def _take_tensors(value, tensors: list[Tensor]):
    """``value`` with each tensor inside it replaced by a :class:`_Slot`, the tensors appended to ``tensors``."""
    def take(leaf):
        if not isinstance(leaf, Tensor):
            return leaf
        tensors.append(leaf)
        return _Slot(len(tensors) - 1)

    return _rebuild(value, take)


def _put_tensors(value, tensors):
    """The inverse of :func:`_take_tensors`: each slot filled with its tensor from ``tensors``."""
    return _rebuild(value, lambda leaf: tensors[leaf] if isinstance(leaf, _Slot) else leaf)


def train_blocks(blocks, gradient_checkpointing: bool, copies: str = "aliased") -> CopyStats:
    """Make ``blocks`` trainable (see the module docstring); returns the counters their hooks fill.

    A block already made trainable is left as it is (its first settings stay)."""
    if copies not in MODES:
        raise ValueError(f"saved_activation_copies must be one of {MODES}, not {copies!r}")
    stats = CopyStats()
    for block in blocks:
        if "forward" in block.__dict__:
            continue
        original = block.forward

        def forward(*args, _original=original, **kwargs):
            if not torch.is_grad_enabled():
                return _original(*args, **kwargs)
            inputs: list[Tensor] = []
            template = _take_tensors((args, kwargs), inputs)
            copy_all = copies == "all" or any(v is not None for k, v in kwargs.items() if k.startswith("modulation_dims"))

            def run(*tensors):
                tensors = [t.clone() for t in tensors]
                policy = _SavedTensorPolicy(tensors, copy_all, stats)
                call_args, call_kwargs = _put_tensors(template, tensors)
                with torch.autograd.graph.saved_tensors_hooks(policy.pack, policy.unpack):
                    return _original(*call_args, **call_kwargs)

            if gradient_checkpointing:
                return checkpoint(run, *inputs, use_reentrant=True)
            return run(*inputs)

        block.forward = forward
    return stats


def release_blocks(blocks) -> None:
    """Undo :func:`train_blocks`."""
    for block in blocks:
        block.__dict__.pop("forward", None)
