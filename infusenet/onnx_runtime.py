"""Which ONNX Runtime the face detector runs on, and how to repair the usual install conflict.

insightface depends on the ``onnxruntime`` (CPU) distribution. Installed after ``onnxruntime-gpu``,
it overwrites the shared ``onnxruntime`` package folder, and the CUDA provider silently disappears.
:func:`repair_plan` decides what to reinstall; ``install.py`` runs it, and :func:`provider_report`
says at start-up what is active.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import metadata

log = logging.getLogger("InfiniteYou")

GPU_PROVIDERS = ("CUDAExecutionProvider", "ROCMExecutionProvider", "CoreMLExecutionProvider", "DmlExecutionProvider")


@dataclass(frozen=True)
class OnnxState:
    cpu_dist: str | None        # version of the `onnxruntime` distribution, if installed
    gpu_dist: str | None        # version of `onnxruntime-gpu`, if installed
    providers: tuple[str, ...]  # what onnxruntime reports as available
    cuda_gpu: bool              # torch sees an NVIDIA GPU


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def current_state() -> OnnxState:
    try:
        import onnxruntime

        providers = tuple(onnxruntime.get_available_providers())
    except Exception:  # a broken install must not stop ComfyUI from starting
        providers = ()
    try:
        import torch

        cuda_gpu = bool(torch.cuda.is_available() and torch.version.cuda)
    except Exception:
        cuda_gpu = False
    return OnnxState(_dist_version("onnxruntime"), _dist_version("onnxruntime-gpu"), providers, cuda_gpu)


def repair_plan(state: OnnxState) -> list[list[str]]:
    """pip argument lists that leave a working CUDA provider, or [] when nothing needs doing.

    Only acts where an NVIDIA GPU exists, ``onnxruntime-gpu`` is installed and its CUDA provider is
    missing: the CPU package is removed and the GPU package reinstalled over the shared folder.
    """
    if not state.cuda_gpu or "CUDAExecutionProvider" in state.providers:
        return []
    if state.gpu_dist is None:
        return [["install", "onnxruntime-gpu"]] if state.cpu_dist is None else [
            ["uninstall", "-y", "onnxruntime"], ["install", "onnxruntime-gpu"]]
    plan = []
    if state.cpu_dist is not None:
        plan.append(["uninstall", "-y", "onnxruntime"])
    plan.append(["install", "--force-reinstall", "--no-deps", f"onnxruntime-gpu=={state.gpu_dist}"])
    return plan


def provider_report(state: OnnxState | None = None) -> str:
    """One line for the log: the active providers and, where a GPU goes unused, the fix."""
    state = state or current_state()
    active = ", ".join(state.providers) or "none (onnxruntime failed to import)"
    line = f"InfiniteYou face detector: ONNX Runtime providers available: {active}"
    plan = repair_plan(state)
    if plan:
        commands = "; ".join("pip " + " ".join(step) for step in plan)
        line += (f". An NVIDIA GPU is present but ONNX Runtime has no CUDA provider (onnxruntime "
                 f"{state.cpu_dist or '-'} / onnxruntime-gpu {state.gpu_dist or '-'}): face detection runs "
                 f"on the CPU. Fix: run this pack's install.py, or: {commands}")
    return line
