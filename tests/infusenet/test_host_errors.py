"""A changed ComfyUI is never reported as a corrupt file, and a corrupt file never as a changed ComfyUI.

The loaders read weights through ``host.load_torch_file`` (ComfyUI's ``comfy.utils.load_torch_file``). Here that
ComfyUI function is replaced by what a later ComfyUI could have: one without the ``safe_load`` parameter (the call
raises TypeError), or none at all (AttributeError). The InfuseNet and ArcFace loaders must then name the internal,
what the start-up contract check found, and the ComfyUI version, and must not advise a new download. Truly cut
files (a safetensors InfuseNet, a torch ArcFace) must still say "truncated or corrupt ... download it again".
"""
from __future__ import annotations

import importlib

import pytest

import comfy.utils
from devtools import flux_pair as fp
from devtools import infusenet_files as files
from devtools.comfy_env import comfyui_version
from infusenet import host, weights
from infusenet.face.encoder import load_arcface_state_dict
from infusenet.face.errors import FaceError
from infusenet.weights import InfiniteYouError
from tests.fixtures.shared_files import shared_arcface
from tests.nodes.conftest import PACKAGE, import_pack

SPEC = files.InfuseNetSpec(hidden_size=fp.HIDDEN, head_dim=fp.HEAD_DIM, num_layers=1, num_single_layers=1,
                           axes_dims_rope=fp.AXES)
DOWNLOAD_ADVICE = ("download it again", "truncated", "corrupt")


@pytest.fixture(scope="module")
def infusenet_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("files")
    return files.write_single_file(str(folder / "infusenet_aes_bf16.safetensors"),
                                   files.random_infusenet_state_dict(SPEC, seed=1))


@pytest.fixture(scope="module")
def arcface_file(tmp_path_factory):
    return shared_arcface(tmp_path_factory, tmp_path_factory.mktemp("arcface") / "recognition_arcface_ir_se50.pth", seed=2)


@pytest.fixture
def fresh_contract(monkeypatch):
    """Each test starts with no remembered contract result (and leaves none behind for other tests)."""
    monkeypatch.setattr(host, "_CHANGED", None, raising=False)


def without_safe_load(monkeypatch):
    """``comfy.utils.load_torch_file`` as a later ComfyUI might have it: the ``safe_load`` parameter is gone."""
    original = comfy.utils.load_torch_file

    def load_torch_file(ckpt, device=None, return_metadata=False):
        return original(ckpt, device=device, return_metadata=return_metadata)

    monkeypatch.setattr(comfy.utils, "load_torch_file", load_torch_file)


def assert_names_the_changed_loader(message: str, contract_found: str | None) -> None:
    assert "comfy.utils.load_torch_file" in message and f"ComfyUI {comfyui_version()}" in message, message
    assert "internal changed" in message, message
    assert not any(word in message.lower() for word in DOWNLOAD_ADVICE), message
    if contract_found is not None:
        assert contract_found in message, message


def test_changed_signature_is_named_not_called_a_corrupt_infusenet(infusenet_file, monkeypatch, fresh_contract):
    without_safe_load(monkeypatch)
    problems = host.check_contract()  # what the pack does when it loads
    found = "comfy.utils.load_torch_file: does not take ['safe_load']"
    assert any(p.startswith(found) for p in problems), problems
    with pytest.raises(InfiniteYouError) as caught:
        weights.load_infusenet(infusenet_file)
    assert_names_the_changed_loader(str(caught.value), found)
    assert "TypeError" in str(caught.value) and "safe_load" in str(caught.value)
    assert isinstance(caught.value.__cause__, host.HostMismatch)


def test_moved_loader_is_named_for_the_arcface_file(arcface_file, monkeypatch, fresh_contract):
    path = arcface_file
    monkeypatch.delattr(comfy.utils, "load_torch_file")
    host.check_contract()
    with pytest.raises(FaceError) as caught:
        load_arcface_state_dict(path)
    assert_names_the_changed_loader(str(caught.value), "comfy.utils.load_torch_file: missing on")
    assert "AttributeError" in str(caught.value)


def test_changed_signature_is_named_for_the_arcface_file_without_a_start_check(arcface_file, monkeypatch,
                                                                             fresh_contract):
    """No start-up check has run (a script): the error still names the internal, and runs the check itself."""
    path = arcface_file
    without_safe_load(monkeypatch)
    with pytest.raises(FaceError) as caught:
        load_arcface_state_dict(path)
    assert_names_the_changed_loader(str(caught.value), "does not take ['safe_load']")


def test_truncated_infusenet_is_corrupt_not_a_changed_comfyui(infusenet_file, tmp_path, fresh_contract):
    data = open(infusenet_file, "rb").read()
    cut = tmp_path / "infusenet_aes_bf16.safetensors"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(InfiniteYouError) as caught:
        weights.load_infusenet(str(cut))
    message = str(caught.value)
    assert "truncated or corrupt" in message and "Download it again" in message, message
    assert "SafetensorError" in message and f"({len(data) * 2 // 3} bytes)" in message, message
    assert "ComfyUI" not in message, message
    assert host.changed_internals() == []  # this ComfyUI is the tested one: nothing changed


def test_truncated_arcface_is_corrupt_not_a_changed_comfyui(arcface_file, tmp_path, fresh_contract):
    path = tmp_path / arcface_file.name
    data = arcface_file.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FaceError, match=r"truncated, corrupt, or not a weights file; download it again") as caught:
        load_arcface_state_dict(path)
    assert "ComfyUI" not in str(caught.value)


def test_the_file_format_errors_are_told_apart_from_the_rest():
    import safetensors

    wrapped = ValueError("The safetensors file is corrupt/incomplete.")
    wrapped.__context__ = safetensors.SafetensorError("incomplete metadata, file not fully covered")
    assert isinstance(host.file_format_error(wrapped), safetensors.SafetensorError)  # ComfyUI re-raises it so
    assert host.file_format_error(OSError(22, "Invalid argument")) is not None
    assert host.file_format_error(RuntimeError("PytorchStreamReader failed reading zip archive")) is not None
    for exc in (TypeError("load_torch_file() got an unexpected keyword argument 'safe_load'"),
                AttributeError("module 'comfy.utils' has no attribute 'load_torch_file'"), ValueError("x"),
                RuntimeError("Expected all tensors to be on the same device")):
        assert host.file_format_error(exc) is None, exc


def test_a_node_names_the_changed_internal(infusenet_file, monkeypatch):
    """Through the node layer: the loader's error, and an AttributeError no loader explains, both carry what the
    start-up check found (the pack imported as ComfyUI imports it)."""
    import_pack()
    pack_host = importlib.import_module(f"{PACKAGE}.infusenet.host")
    pack_weights = importlib.import_module(f"{PACKAGE}.infusenet.weights")
    errors = importlib.import_module(f"{PACKAGE}.nodes.errors")
    monkeypatch.setattr(pack_host, "_CHANGED", None, raising=False)
    with pytest.raises(AttributeError), errors.node_errors("Apply InfiniteYou"):
        raise AttributeError("'Flux' object has no attribute 'pe_embedder'")  # nothing changed: left as it is
    without_safe_load(monkeypatch)
    pack_host.check_contract()
    with pytest.raises(errors.InfiniteYouNodeError) as caught, errors.node_errors("InfiniteYou InfuseNet Loader"):
        pack_weights.load_infusenet(infusenet_file)
    assert str(caught.value).startswith("InfiniteYou InfuseNet Loader: ")
    assert_names_the_changed_loader(str(caught.value), "does not take ['safe_load']")
    with pytest.raises(errors.InfiniteYouNodeError) as caught, errors.node_errors("Apply InfiniteYou"):
        raise AttributeError("'Flux' object has no attribute 'pe_embedder'")
    message = str(caught.value)
    assert message.startswith("Apply InfiniteYou: AttributeError") and "comfy.utils.load_torch_file" in message
    assert f"ComfyUI {comfyui_version()}" in message
