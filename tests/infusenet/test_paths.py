"""Model names from the API never leave the registered model folders (lexical containment, symlinks allowed),
and registering the pack's folders never changes another pack's (or ComfyUI's shared) extension set."""
from __future__ import annotations

import os

import pytest

HOSTILE_NAMES = [
    "../../secret.safetensors",
    "aes_stage2/../../../secret.safetensors",
    "/etc/hostname",
    "/",
    "..",
    "aes_stage2\\..\\..\\secret.safetensors",
    "%2e%2e%2fsecret.safetensors",
    "..%2fsecret.safetensors",
    "C:/Windows/win.ini",
    "c:secret.safetensors",
    "aes_stage2//infusenet.safetensors",
    "",
]


@pytest.fixture
def infu_folders(tmp_path, monkeypatch):
    """models/infiniteyou with a real file, a symlinked variant folder (as tests and users link models),
    and a secret file beside the models folder."""
    import folder_paths

    from infusenet import paths

    models = tmp_path / "models"
    (models / "infiniteyou" / "aes_stage2").mkdir(parents=True)
    (models / "infiniteyou" / "aes_stage2" / "infusenet_aes_bf16.safetensors").write_bytes(b"x")
    elsewhere = tmp_path / "elsewhere" / "sim_stage1"
    elsewhere.mkdir(parents=True)
    (elsewhere / "infusenet_sim_bf16.safetensors").write_bytes(b"x")
    (models / "infiniteyou" / "sim_stage1").symlink_to(elsewhere, target_is_directory=True)
    (tmp_path / "secret.safetensors").write_bytes(b"secret")
    monkeypatch.setattr(folder_paths, "models_dir", str(models))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, paths.FOLDER_NAME, ([], set()))
    paths.register_model_folders()
    return models


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_infusenet_resolver_refuses_names_outside_the_folders(infu_folders, name):
    from infusenet import paths
    from infusenet.names import ModelNameError

    with pytest.raises(ModelNameError):
        paths.resolve_model_path(name)


def test_infusenet_resolver_keeps_symlinked_folders(infu_folders):
    from infusenet import paths

    root = str(infu_folders / "infiniteyou")
    found = paths.resolve_model_path("sim_stage1/infusenet_sim_bf16.safetensors")
    assert found == os.path.join(root, "sim_stage1", "infusenet_sim_bf16.safetensors")  # lexical, not realpath
    assert os.path.isfile(found)
    assert paths.resolve_model_path("aes_stage2/infusenet_aes_bf16.safetensors").startswith(root + os.sep)


@pytest.fixture
def face_folders(tmp_path, monkeypatch):
    import folder_paths

    insight = tmp_path / "models" / "insightface"
    (insight / "models" / "antelopev2").mkdir(parents=True)
    (insight / "models" / "antelopev2" / "scrfd_10g_bnkps.onnx").write_bytes(b"x")
    (insight / "recognition_arcface_ir_se50.pth").write_bytes(b"x")
    (tmp_path / "outside_pack").mkdir()
    (tmp_path / "outside_pack" / "scrfd_10g_bnkps.onnx").write_bytes(b"x")
    (tmp_path / "arcface_elsewhere.pth").write_bytes(b"x")
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "insightface", ([str(insight)], set()))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "facexlib", ([str(tmp_path / "models" / "facexlib")], set()))
    return tmp_path


@pytest.mark.parametrize("name", [*HOSTILE_NAMES, "../../outside_pack", "models/antelopev2"])
def test_detector_pack_resolver_stays_in_the_insightface_folder(face_folders, name):
    from infusenet.face.paths import resolve_detector_pack
    from infusenet.names import ModelNameError

    with pytest.raises(ModelNameError):
        resolve_detector_pack(name if name != "/" else str(face_folders / "outside_pack"))


@pytest.mark.parametrize("name", [*HOSTILE_NAMES, "../../arcface_elsewhere.pth", "models/x.pth"])
def test_arcface_resolver_stays_in_the_face_folders(face_folders, name):
    from infusenet.face.paths import resolve_arcface_name
    from infusenet.names import ModelNameError

    with pytest.raises(ModelNameError):
        resolve_arcface_name(name if name != "/" else str(face_folders / "arcface_elsewhere.pth"))


def test_face_resolvers_find_listed_names(face_folders):
    from infusenet.face.paths import resolve_arcface_name, resolve_detector_pack

    insight = face_folders / "models" / "insightface"
    assert resolve_detector_pack("antelopev2") == insight / "models" / "antelopev2"
    assert resolve_arcface_name("recognition_arcface_ir_se50.pth") == insight / "recognition_arcface_ir_se50.pth"


def test_projection_lookup_stays_in_the_folder(infu_folders, tmp_path):
    """The projection found beside an InfuseNet is inside the model folder, never beside a path outside it."""
    from infusenet import paths
    from infusenet.names import ModelNameError

    (tmp_path / "image_proj_model.bin").write_bytes(b"x")  # beside models/: must never be picked
    (infu_folders / "infiniteyou" / "aes_stage2" / "image_proj_model.bin").write_bytes(b"x")
    found = paths.projection_beside("aes_stage2/infusenet_aes_bf16.safetensors")
    assert found == os.path.join(str(infu_folders / "infiniteyou"), "aes_stage2", "image_proj_model.bin")
    assert paths.projection_beside("sim_stage1/infusenet_sim_bf16.safetensors") is None
    with pytest.raises(ModelNameError):
        paths.projection_beside("../infusenet.safetensors")


@pytest.mark.parametrize("kind", ["list", "shared set"])
def test_registering_face_folders_leaves_other_extension_collections_alone(tmp_path, monkeypatch, kind):
    """Another pack registered "insightface" with a list, or with ComfyUI's shared extension set."""
    import folder_paths

    from infusenet.face.paths import insightface_roots

    shared = folder_paths.supported_pt_extensions
    before = set(shared)
    exts = [".onnx"] if kind == "list" else shared
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "insightface", ([str(tmp_path / "a")], exts))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "facexlib", ([str(tmp_path / "b")], shared))
    try:
        assert insightface_roots() == [tmp_path / "a"]
        assert set(shared) == before, "ComfyUI's shared extension set was changed for every folder"
        for name in ("insightface", "facexlib"):
            registered = folder_paths.folder_names_and_paths[name][1]
            assert {".pth", ".onnx"} <= set(registered) and registered is not shared
    finally:
        shared.clear()
        shared.update(before)


def test_registering_infusenet_folders_leaves_the_shared_extension_set_alone(tmp_path, monkeypatch):
    import folder_paths

    from infusenet import paths

    shared = folder_paths.supported_pt_extensions
    before = set(shared)
    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, paths.FOLDER_NAME, ([], shared))
    try:
        paths.register_model_folders()
        assert set(shared) == before
        assert ".json" in folder_paths.folder_names_and_paths[paths.FOLDER_NAME][1]
    finally:
        shared.clear()
        shared.update(before)


def test_a_model_folder_removed_while_comfyui_runs_lists_nothing(infu_folders, monkeypatch):
    """ComfyUI's listing cache raises FileNotFoundError for a folder it listed before and that is gone now (seen as a
    500 from the loader check and from the loaders' schema when a user empties ``models/``)."""
    import shutil

    import folder_paths

    from infusenet import paths

    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    assert "aes_stage2/infusenet_aes_bf16.safetensors" in paths.list_infusenet_models()
    shutil.rmtree(infu_folders)
    with pytest.raises(FileNotFoundError):
        folder_paths.get_filename_list(paths.FOLDER_NAME)  # the host's own behaviour, which the pack works around
    assert "aes_stage2/infusenet_aes_bf16.safetensors" not in paths.list_infusenet_models()
