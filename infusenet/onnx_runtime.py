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


# ---------------------------------------------------------------- the safe repair install.py runs
CHECK_CUDA = ("import sys\n"
              "if sys.argv[1]: sys.path.insert(0, sys.argv[1])\n"
              "import onnxruntime\n"
              "sys.exit(0 if 'CUDAExecutionProvider' in onnxruntime.get_available_providers() else 3)\n")


@dataclass
class RepairResult:
    changed: bool               # the environment's ONNX Runtime packages were changed (and work)
    ok: bool                    # the CUDA provider loads now
    steps: list[str]            # what was done, in order, for the user


def cuda_provider_loads(python: str, path: str | None = None) -> bool:
    """Whether ``onnxruntime`` (from ``path`` first when given) offers the CUDA provider in a fresh interpreter."""
    import subprocess

    try:
        run = subprocess.run([python, "-c", CHECK_CUDA, path or ""], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return run.returncode == 0


def repair(state: OnnxState, pip: list[str], python: str, workdir, say=print) -> RepairResult:
    """Give ONNX Runtime its CUDA provider without ever leaving the environment worse than it was.

    ``onnxruntime-gpu`` of the installed version is downloaded (with the CPU package's wheel, for a way
    back) and installed into a staging folder first; only when its CUDA provider loads there, in a fresh
    interpreter, is the CPU package removed and the GPU package installed from the downloaded wheel. If
    the provider then does not load, the previous packages are put back. ``pip``: the command prefix
    (``[python, "-m", "pip"]``); ``say``: where each step is reported."""
    import subprocess
    from pathlib import Path

    steps: list[str] = []

    def note(text: str) -> None:
        steps.append(text)
        say(f"InfiniteYou install: {text}", flush=True)

    def pip_ok(*args: str) -> bool:
        run = subprocess.run([*pip, *args], capture_output=True, text=True)
        if run.returncode != 0:
            tail = (run.stderr or run.stdout).strip().splitlines()[-1:] or [""]
            note(f"pip {' '.join(args)} failed: {tail[0]}")
        return run.returncode == 0

    if not repair_plan(state):
        note("nothing to repair (no NVIDIA GPU, or the CUDA provider already loads).")
        return RepairResult(False, "CUDAExecutionProvider" in state.providers, steps)
    version = state.gpu_dist or state.cpu_dist
    gpu = f"onnxruntime-gpu=={version}" if version else "onnxruntime-gpu"
    before = f"onnxruntime {state.cpu_dist or '-'} / onnxruntime-gpu {state.gpu_dist or '-'}"
    unchanged = f"nothing was changed: {before} stay installed (face detection on the CPU)."
    work = Path(workdir)
    wheels, rollback, stage = work / "wheels", work / "rollback", work / "stage"
    for folder in (wheels, rollback, stage):
        folder.mkdir(parents=True, exist_ok=True)

    note(f"downloading {gpu} (nothing is removed before it is installed and checked).")
    if not pip_ok("download", "--no-deps", "--dest", str(wheels), gpu):
        note(f"could not get {gpu} (offline, or no wheel for this platform); {unchanged}")
        return RepairResult(False, False, steps)
    if state.cpu_dist and not pip_ok("download", "--no-deps", "--dest", str(rollback), f"onnxruntime=={state.cpu_dist}"):
        note(f"could not keep a copy of onnxruntime=={state.cpu_dist} to go back to; {unchanged}")
        return RepairResult(False, False, steps)
    offline = ("--no-index", "--find-links", str(wheels))
    if not pip_ok("install", "--no-deps", *offline, "--target", str(stage), gpu):
        note(f"{gpu} did not install into a staging folder; {unchanged}")
        return RepairResult(False, False, steps)
    if not cuda_provider_loads(python, str(stage)):
        note(f"{gpu} installs but its CUDA provider does not load here (CUDA or cuDNN libraries missing?); {unchanged}")
        return RepairResult(False, False, steps)
    note(f"{gpu} loads its CUDA provider; replacing the CPU package.")
    switched = (not state.cpu_dist or pip_ok("uninstall", "-y", "onnxruntime")) and \
        pip_ok("install", "--no-deps", "--force-reinstall", *offline, gpu)
    if switched and cuda_provider_loads(python):
        note(f"done: onnxruntime-gpu {version or ''} is installed and its CUDA provider loads.".replace("  ", " "))
        return RepairResult(True, True, steps)
    note("the CUDA provider does not load after the switch; putting the previous packages back.")
    if state.gpu_dist is None:
        pip_ok("uninstall", "-y", "onnxruntime-gpu")
    if state.cpu_dist:
        pip_ok("install", "--no-deps", "--force-reinstall", "--no-index", "--find-links", str(rollback),
               f"onnxruntime=={state.cpu_dist}")
    note(f"rolled back to {before}.")
    return RepairResult(False, False, steps)
