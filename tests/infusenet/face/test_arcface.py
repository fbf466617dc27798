"""ArcFace IR-SE50 in torch: the real file layout, agreement with facexlib's network, loading and devices."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from infusenet.face.arcface import ArcFaceIRSE50, crops_to_input
from infusenet.face.encoder import arcface_dtype, load_arcface_state_dict, load_face_encoder
from infusenet.face.errors import FaceError
from devtools.face_models import arcface_ir_se50_state_dict, ir_se50_layout


def test_module_matches_the_397_key_file_layout():
    layout = ir_se50_layout()
    assert len(layout) == 397
    ours = {k: tuple(v.shape) for k, v in ArcFaceIRSE50().state_dict().items()}
    assert ours == layout
    assert [k for k in layout if k.endswith("shortcut_layer.0.weight")] == [
        "body.3.shortcut_layer.0.weight", "body.7.shortcut_layer.0.weight", "body.21.shortcut_layer.0.weight"]


def test_equals_facexlib_network_on_the_same_weights(arcface_file, facexlib_backbone):
    ours = ArcFaceIRSE50()
    ours.load_state_dict(torch.load(arcface_file, map_location="cpu", weights_only=True), strict=True)
    ours.eval()
    x = torch.rand(3, 3, 112, 112, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        a, b = ours(x), facexlib_backbone(x)
    assert a.shape == (3, 512)
    torch.testing.assert_close(a, b, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(3))
    # the random weights are not degenerate: different inputs give clearly different embeddings
    cos = a @ a.T
    assert cos[0, 1] < 0.99 and cos[0, 2] < 0.99


def test_crops_are_scaled_to_minus_one_one_with_channels_unchanged():
    crops = np.zeros((1, 112, 112, 3), dtype=np.uint8)
    crops[..., 0] = 255  # first channel (blue in a BGR crop)
    crops[..., 1] = 51
    x = crops_to_input(crops, torch.device("cpu"), torch.float32)
    assert x.shape == (1, 3, 112, 112)
    assert torch.allclose(x[0, 0], torch.ones(112, 112))
    assert torch.allclose(x[0, 1], torch.full((112, 112), 2 * 51 / 255 - 1))
    assert torch.allclose(x[0, 2], -torch.ones(112, 112))


def test_dtype_follows_the_device():
    cpu = torch.device("cpu")
    assert arcface_dtype(cpu) is torch.float32
    assert arcface_dtype(cpu, "fp16") is torch.float32
    assert arcface_dtype(cpu, "bf16") is torch.float32


def test_encoder_runs_arcface_through_comfy_model_management(encoder):
    import comfy.model_management as mm
    import comfy.model_patcher

    assert isinstance(encoder.arcface, comfy.model_patcher.ModelPatcher)
    assert encoder.arcface.load_device == mm.get_torch_device()
    assert encoder.dtype is torch.float32
    out = encoder.embed(np.full((2, 112, 112, 3), 128, dtype=np.uint8))
    assert out.shape == (2, 512) and out.dtype == torch.float32
    assert any(m.model is encoder.arcface for m in mm.current_loaded_models)


def test_weights_file_errors(tmp_path, arcface_file, insightface_root):
    missing = tmp_path / "nowhere" / "recognition_arcface_ir_se50.pth"
    with pytest.raises(FaceError, match="not found") as err:
        load_face_encoder(insightface_root, missing)
    assert str(missing) in str(err.value)

    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(arcface_file.read_bytes()[:100_000])
    with pytest.raises(FaceError, match="truncated") as err:
        load_arcface_state_dict(truncated)
    assert str(truncated) in str(err.value)

    projection = tmp_path / "image_proj_model.pth"
    torch.save({"latents": torch.zeros(1, 8, 16), "proj_in.weight": torch.zeros(16, 512)}, projection)
    with pytest.raises(FaceError, match="not the IR-SE50 ArcFace.*projection"):
        load_arcface_state_dict(projection)


def test_data_parallel_prefix_is_accepted(tmp_path):
    state = {"module." + k: v for k, v in arcface_ir_se50_state_dict(seed=2).items()}
    path = tmp_path / "prefixed.pth"
    torch.save(state, path)
    assert len(load_arcface_state_dict(path)) == 397


def test_bare_name_is_looked_up_in_the_insightface_folder(tmp_path, monkeypatch, arcface_file):
    import folder_paths

    from infusenet.face.paths import resolve_arcface_path

    target = tmp_path / "models" / "insightface" / "recognition_arcface_ir_se50.pth"
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "insightface", ([str(target.parent)], set()))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "facexlib", ([str(tmp_path / "facexlib")], set()))
    path, searched = resolve_arcface_path(None)
    assert path == target and not path.exists() and target in searched
    target.parent.mkdir(parents=True)
    target.symlink_to(arcface_file)
    assert resolve_arcface_path("recognition_arcface_ir_se50.pth")[0] == target


def test_arcface_is_reloaded_after_comfy_unloads_it(encoder):
    import comfy.model_management as mm

    crops = np.random.default_rng(0).integers(0, 256, (1, 112, 112, 3), dtype=np.uint8)
    first = encoder.embed(crops)
    mm.unload_all_models()
    assert not any(m.model is encoder.arcface for m in mm.current_loaded_models)
    torch.testing.assert_close(encoder.embed(crops), first)
