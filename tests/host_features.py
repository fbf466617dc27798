"""The one way a test may be left out: a feature the ComfyUI under test does not have. The reason names
the ComfyUI version and what it lacks, and scripts/test.sh prints it in the per-host summary."""
from __future__ import annotations

import pytest

from devtools.comfy_env import comfyui_version


def needs_host(has_feature: bool, lacking: str):
    """Mark a test that applies only to ComfyUI releases that have a feature (``lacking`` says what)."""
    return pytest.mark.skipif(not has_feature, reason=f"not applicable to ComfyUI {comfyui_version()}: {lacking}")
