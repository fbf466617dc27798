"""The onnxruntime / onnxruntime-gpu conflict: when install.py repairs it, and what the log says."""
from __future__ import annotations

import subprocess
import sys

from infusenet.onnx_runtime import OnnxState, current_state, provider_report, repair_plan
from devtools.comfy_env import PACK_ROOT
from tests.host_features import newest_host_only

pytestmark = newest_host_only("install.py and the onnxruntime repair: pip and stand-in wheels, no ComfyUI; every "
                              "host's environment gets onnxruntime from the pack's requirements.txt")

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


# ------------------------------------------------------------------ install.py's repair, simulated offline
# A throwaway environment (venv without pip, driven by this pip's --python) holding a stand-in `onnxruntime`
# 1.0.0; pip sees only a local folder (PIP_NO_INDEX): empty (offline / no wheel), or holding stand-in
# onnxruntime-gpu wheels whose CUDA provider loads, does not load, or loads only where it was staged.
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

CPU_ONLY = "def get_available_providers():\n    return ['CPUExecutionProvider']\n"
WITH_CUDA = "def get_available_providers():\n    return ['CUDAExecutionProvider', 'CPUExecutionProvider']\n"
ONLY_WHERE_STAGED = ("import os\n\ndef get_available_providers():\n"
                     "    staged = os.sep + 'stage' + os.sep in __file__\n"
                     "    return (['CUDAExecutionProvider'] if staged else []) + ['CPUExecutionProvider']\n")
STATE = OnnxState("1.0.0", None, CPU, cuda_gpu=True)


def write_wheel(folder: Path, dist: str, version: str, init: str) -> Path:
    name = dist.replace("-", "_")
    info = f"{name}-{version}.dist-info"
    files = {"onnxruntime/__init__.py": init,
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
             f"{info}/top_level.txt": "onnxruntime\n"}
    files[f"{info}/RECORD"] = "".join(f"{k},,\n" for k in files) + f"{info}/RECORD,,\n"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for k, v in files.items():
            z.writestr(k, v)
    return path


@pytest.fixture
def env(tmp_path, monkeypatch):
    """(python of a fresh environment with the CPU stand-in installed, pip command for it, local index)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    pip = [sys.executable, "-m", "pip", "--python", python]
    index = tmp_path / "index"
    index.mkdir()
    seed = tmp_path / "seed"
    seed.mkdir()
    write_wheel(seed, "onnxruntime", "1.0.0", CPU_ONLY)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    subprocess.run([*pip, "install", "--find-links", str(seed), "onnxruntime==1.0.0"], check=True, capture_output=True)
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    return python, pip, index


def installed(python: str) -> dict:
    code = ("import json, importlib.metadata as m\nout = {}\nfor d in ('onnxruntime', 'onnxruntime-gpu'):\n"
            "    try: out[d] = m.version(d)\n    except m.PackageNotFoundError: pass\n"
            "import onnxruntime\nout['providers'] = onnxruntime.get_available_providers()\nprint(json.dumps(out))")
    import json

    return json.loads(subprocess.run([python, "-c", code], check=True, capture_output=True, text=True).stdout)


def run_install(python, pip, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("infu_install_under_test", PACK_ROOT / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from infusenet.onnx_runtime import repair

    return repair(STATE, pip, python, tmp_path / "work", say=lambda *a, **k: None), module


def test_offline_install_leaves_onnxruntime_in_place(env, tmp_path):
    python, pip, _ = env
    before = installed(python)
    assert before == {"onnxruntime": "1.0.0", "providers": ["CPUExecutionProvider"]}
    result, install = run_install(python, pip, tmp_path)
    assert not result.changed and not result.ok
    assert installed(python) == before
    text = " ".join(result.steps)
    assert "could not get onnxruntime-gpu==1.0.0" in text and "nothing was changed" in text
    # install.py itself, with the same failing pip, exits cleanly and leaves the environment as it was
    assert install.main(pip=pip, python=python, state=STATE, workdir=tmp_path / "work2") == 0
    assert installed(python) == before


def test_gpu_package_without_a_working_cuda_provider_changes_nothing(env, tmp_path):
    python, pip, index = env
    write_wheel(index, "onnxruntime-gpu", "1.0.0", CPU_ONLY)
    write_wheel(index, "onnxruntime", "1.0.0", CPU_ONLY)
    before = installed(python)
    result, _ = run_install(python, pip, tmp_path)
    assert not result.changed and installed(python) == before
    assert "CUDA provider does not load here" in " ".join(result.steps)


def test_working_gpu_package_replaces_the_cpu_package_of_the_same_version(env, tmp_path):
    python, pip, index = env
    write_wheel(index, "onnxruntime-gpu", "1.0.0", WITH_CUDA)
    write_wheel(index, "onnxruntime", "1.0.0", CPU_ONLY)
    result, _ = run_install(python, pip, tmp_path)
    assert result.changed and result.ok, result.steps
    assert installed(python) == {"onnxruntime-gpu": "1.0.0", "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


def test_a_switch_that_does_not_work_is_rolled_back(env, tmp_path):
    python, pip, index = env
    write_wheel(index, "onnxruntime-gpu", "1.0.0", ONLY_WHERE_STAGED)
    write_wheel(index, "onnxruntime", "1.0.0", CPU_ONLY)
    before = installed(python)
    result, _ = run_install(python, pip, tmp_path)
    assert not result.changed and not result.ok
    assert installed(python) == before
    assert "rolled back" in " ".join(result.steps)
