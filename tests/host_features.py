"""The one way a test may be left out: a feature the ComfyUI under test does not have. The reason names
the ComfyUI version and what it lacks, and scripts/test.sh prints it in the per-host summary."""
from __future__ import annotations

import pytest

from devtools.comfy_env import comfyui_version


def needs_host(has_feature: bool, lacking: str):
    """Mark a test that applies only to ComfyUI releases that have a feature (``lacking`` says what)."""
    return pytest.mark.skipif(not has_feature, reason=f"not applicable to ComfyUI {comfyui_version()}: {lacking}")


def newest_host_only(why: str):
    """Mark a test whose subject is the same on every ComfyUI (``why`` says what it exercises): it runs on
    the newest test host only, to save CI time, and the summary says so."""
    from devtools.comfy_env import HOST_NAMES

    newest = max(HOST_NAMES, key=lambda v: tuple(int(x) for x in v.split(".")))
    version = comfyui_version()
    return pytest.mark.skipif(version != newest, reason=f"runs on the newest host only (ComfyUI {newest}; this is "
                                                        f"{version}): {why}")
