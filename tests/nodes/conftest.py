"""The pack imported in-process as ComfyUI imports it: a package named after its folder."""
from __future__ import annotations

import importlib.util
import sys

import pytest

from devtools.comfy_env import PACK_ROOT

PACKAGE = "infiniteyou_studio_under_test"


def import_pack():
    if PACKAGE not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACKAGE, PACK_ROOT / "__init__.py",
                                                      submodule_search_locations=[str(PACK_ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = module
        spec.loader.exec_module(module)
    return importlib.import_module(f"{PACKAGE}.nodes")


@pytest.fixture(scope="session")
def pack_nodes():
    return import_pack()
