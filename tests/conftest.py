"""Shared fixtures. Importing this module makes the test ComfyUI importable in-process (CPU)."""
from __future__ import annotations

import pytest

from tests.comfy_host import enable_in_process_comfy

enable_in_process_comfy()


@pytest.fixture
def seeded():
    """A fixed torch seed for tests that build random models."""
    import torch

    torch.manual_seed(0)
    return 0
