"""The onnxruntime / onnxruntime-gpu conflict: when install.py repairs it, and what the log says."""
from __future__ import annotations

import subprocess
import sys

from infusenet.onnx_runtime import OnnxState, current_state, provider_report, repair_plan
from devtools.comfy_env import PACK_ROOT

CPU = ("CPUExecutionProvider",)
CUDA = ("CUDAExecutionProvider", "CPUExecutionProvider")


def test_nothing_to_repair_without_a_gpu_or_with_a_working_cuda_provider():
    assert repair_plan(OnnxState("1.32.0", "1.31.1", CPU, cuda_gpu=False)) == []
    assert repair_plan(OnnxState("1.32.0", "1.31.1", CUDA, cuda_gpu=True)) == []
    assert repair_plan(OnnxState(None, "1.31.1", CUDA, cuda_gpu=True)) == []


def test_cpu_package_over_the_gpu_package_is_replaced_by_the_same_gpu_version():
    plan = repair_plan(OnnxState("1.32.0", "1.31.1", CPU, cuda_gpu=True))
    assert plan == [["uninstall", "-y", "onnxruntime"],
                    ["install", "--force-reinstall", "--no-deps", "onnxruntime-gpu==1.31.1"]]
    assert repair_plan(OnnxState("1.32.0", None, CPU, cuda_gpu=True)) == [
        ["uninstall", "-y", "onnxruntime"], ["install", "onnxruntime-gpu"]]


def test_report_names_the_providers_and_the_fix_when_a_gpu_goes_unused():
    line = provider_report(OnnxState("1.32.0", "1.31.1", CPU, cuda_gpu=True))
    assert "CPUExecutionProvider" in line and "face detection runs on the CPU" in line
    assert "pip uninstall -y onnxruntime; pip install --force-reinstall --no-deps onnxruntime-gpu==1.31.1" in line
    assert "Fix" not in provider_report(OnnxState("1.32.0", None, CPU, cuda_gpu=False))


def test_install_script_on_this_machine_changes_nothing_and_reports():
    state = current_state()
    assert repair_plan(state) == []  # no NVIDIA GPU here
    out = subprocess.run([sys.executable, str(PACK_ROOT / "install.py")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ONNX Runtime providers available: " in out.stdout and "CPUExecutionProvider" in out.stdout
