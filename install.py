"""Post-install step (ComfyUI-Manager runs it after requirements.txt; you may run it by hand).

Repairs the onnxruntime / onnxruntime-gpu conflict so the face detector keeps its CUDA provider.
Does nothing on machines without an NVIDIA GPU or where the provider already works.
"""
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from infusenet.onnx_runtime import current_state, provider_report, repair_plan  # noqa: E402


def main() -> int:
    state = current_state()
    for step in repair_plan(state):
        print("InfiniteYou install: pip", " ".join(step), flush=True)
        subprocess.check_call([sys.executable, "-m", "pip", *step])
    print(provider_report(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
