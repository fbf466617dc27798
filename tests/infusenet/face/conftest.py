"""Fixtures for the face pipeline tests: the fake antelopev2 pack, random IR-SE50 weights, an encoder."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from devtools.face_models import write_insightface_root
from tests.fixtures.shared_files import shared_arcface, shared_file


@pytest.fixture(scope="session")
def insightface_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("insightface")
    write_insightface_root(root)
    return root


@pytest.fixture(scope="session")
def arcface_file(tmp_path_factory) -> Path:
    return shared_arcface(tmp_path_factory, tmp_path_factory.mktemp("arcface") / "recognition_arcface_ir_se50.pth", seed=1)


@pytest.fixture(scope="session")
def encoder(insightface_root, arcface_file):
    from infusenet.face.encoder import load_face_encoder

    return load_face_encoder(insightface_root, arcface_file, providers="auto")


def load_facexlib_arcface_arch():
    """facexlib's IR-SE50 module file, loaded on its own (it imports only torch), or None when facexlib is
    not installed. Importing the facexlib package itself would pull in numba and a CUDA-only init path."""
    spec = importlib.util.find_spec("facexlib")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "recognition" / "arcface_arch.py"
    module_spec = importlib.util.spec_from_file_location("facexlib_arcface_arch_for_tests", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def facexlib_backbone(arcface_file):
    """facexlib's ``Backbone(50, 0.6, 'ir_se')`` with the same weights, in eval mode (the reference's ArcFace)."""
    import torch

    arch = load_facexlib_arcface_arch()
    if arch is None:
        pytest.fail("facexlib is not installed: scripts/setup.sh installs it (tests/requirements-nodeps.txt)")
    net = arch.Backbone(num_layers=50, drop_ratio=0.6, mode="ir_se")
    net.load_state_dict(torch.load(arcface_file, map_location="cpu", weights_only=True), strict=True)
    return net.eval()


@pytest.fixture(scope="session")
def people_encoder(insightface_root, tmp_path_factory):
    """A face encoder whose ArcFace tells the generated people of ``people.py`` apart."""
    from infusenet.face.analysis import load_detector
    from infusenet.face.encoder import load_face_encoder
    from tests.infusenet.face.people import write_calibrated_arcface

    path = shared_file(tmp_path_factory, tmp_path_factory.mktemp("arcface_people") / "recognition_arcface_ir_se50.pth",
                       "arcface-ir-se50-calibrated.pth",
                       lambda target: write_calibrated_arcface(target, load_detector(insightface_root)))
    return load_face_encoder(insightface_root, path, providers="auto")
