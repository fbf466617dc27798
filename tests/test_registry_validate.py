"""The Comfy Registry's own check, ``comfy node validate`` from the ``comfy-cli`` package, passes on this
pack with no warning (the registry turns warnings into errors at publishing), and fails on a pyproject.toml
the registry would refuse, so a pass means something.

comfy-cli is a command-line tool with its own dependency set (typer, uv, ruff, telemetry clients): it is
installed once into its own environment under ``.host/tools/`` (pinned below), never into a host's.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.comfy_env import PACK_ROOT
from tests.host_features import newest_host_only

pytestmark = newest_host_only("runs the registry's validator on this repository's files; no ComfyUI code")

COMFY_CLI = "comfy-cli==1.23.0"
TOOLS = Path(os.environ.get("INFU_TOOLS_DIR", PACK_ROOT / ".host" / "tools"))


@pytest.fixture(scope="module")
def comfy_cli() -> Path:
    """The ``comfy`` command of a comfy-cli environment of its own (made on first use)."""
    venv = TOOLS / "comfy-cli"
    exe = venv / "bin" / "comfy"
    stamp = venv / "installed.txt"
    if not (exe.exists() and stamp.exists() and stamp.read_text() == COMFY_CLI):
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        COMFY_CLI], check=True, stdout=subprocess.DEVNULL)
        stamp.write_text(COMFY_CLI)
    return exe


def validate(comfy: Path, folder: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "HOME": str(TOOLS / "home")}
    return subprocess.run([str(comfy), "--skip-prompt", "node", "validate"],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=300)


def pack_copy(tmp_path: Path) -> Path:
    """The files the validator reads: the pack's tracked sources (no .host, no venvs)."""
    dest = tmp_path / "pack"
    shutil.copytree(PACK_ROOT, dest, ignore=shutil.ignore_patterns(".host", ".git", "__pycache__", "*.pyc", ".ci"))
    return dest


def test_the_pack_passes_the_registry_validation_with_no_warning(comfy_cli, tmp_path):
    result = validate(comfy_cli, pack_copy(tmp_path))
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "All validation checks passed" in out, out
    assert "warning" not in out.lower(), out


def test_code_the_registry_will_refuse_is_reported(comfy_cli, tmp_path):
    """exec/eval and two statements on one line: warnings today, errors at publishing soon."""
    pack = pack_copy(tmp_path)
    (pack / "nodes" / "unsafe_example.py").write_text("x = 1; y = 2\nexec('z = 3')\n")
    result = validate(comfy_cli, pack)
    out = result.stdout + result.stderr
    assert "Security warnings found" in out, out
    assert "All validation checks passed" not in out, out


def test_a_pyproject_without_a_version_fails_the_validation(comfy_cli, tmp_path):
    pack = pack_copy(tmp_path)
    pyproject = pack / "pyproject.toml"
    text = pyproject.read_text()
    assert 'version = "' in text
    pyproject.write_text("\n".join(l for l in text.splitlines() if not l.startswith("version = ")))
    result = validate(comfy_cli, pack)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "version is empty" in out, out
