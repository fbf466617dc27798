"""Post-install step (ComfyUI-Manager runs it after requirements.txt; you may run it by hand).

Repairs the onnxruntime / onnxruntime-gpu conflict so the face detector keeps its CUDA provider, without
ever leaving the environment worse: onnxruntime-gpu (same version) is downloaded and checked in a staging
folder first, the CPU package is removed only once the CUDA provider loads, and anything that fails is put
back. Does nothing on machines without an NVIDIA GPU or where the provider already works.
"""
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from infusenet.onnx_runtime import current_state, provider_report, repair  # noqa: E402


def main(pip=None, python=None, state=None, workdir=None) -> int:
    """``pip``/``python``/``state``/``workdir`` default to this interpreter's pip, itself, the detected
    state and a temporary folder (tests pass their own)."""
    python = python or sys.executable
    with tempfile.TemporaryDirectory(prefix="infu-onnx-") as tmp:
        repair(state or current_state(), pip or [python, "-m", "pip"], python, workdir or tmp)
    print(provider_report(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
