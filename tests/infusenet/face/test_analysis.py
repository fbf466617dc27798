"""Detection on the fake antelopev2 pack: decoding, size fallback, face choice, providers, file checks."""
from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from infusenet.face.align import rgb_to_bgr, to_rgb_uint8
from infusenet.face.analysis import (
    CPU, choose_providers, det_sizes, detect_faces, load_detector, parse_face_select, select_face,
)
from infusenet.face.errors import FaceError
from devtools.face_models import (
    DETECTOR_FILE, MAX_SIDE, RECOGNISER_FILE, draw_faces, expected_keypoints, write_antelopev2,
)


def bgr_of(image: np.ndarray) -> np.ndarray:
    return rgb_to_bgr(to_rgb_uint8(image))


def test_boxes_and_keypoints_decode_exactly(encoder):
    boxes = [(100, 100, 180, 200), (300, 48, 340, 88), (420, 240, 560, 400)]
    faces = encoder.detector.detect(bgr_of(draw_faces((640, 480), boxes)), 640)
    found = sorted((f for f in faces), key=lambda f: f.box[0])
    assert len(found) == 3
    for face, box in zip(found, sorted(boxes)):
        np.testing.assert_allclose(face.box, box, atol=1e-4)
        np.testing.assert_allclose(face.keypoints, expected_keypoints(box), atol=1e-3)
        assert face.score > 0.99 and face.det_size == 640


def test_boxes_are_mapped_back_from_the_detector_scale(encoder):
    # 1280x960 photo at det size 640: the detector sees it at half size; boxes come back in photo pixels.
    boxes = [(200, 200, 360, 400), (800, 100, 880, 180)]
    faces = encoder.detector.detect(bgr_of(draw_faces((1280, 960), boxes)), 640)
    found = sorted(faces, key=lambda f: f.box[0])
    for face, box in zip(found, boxes):
        np.testing.assert_allclose(face.box, box, atol=1e-3)
        np.testing.assert_allclose(face.keypoints, expected_keypoints(box), atol=1e-2)


def test_insightface_face_analysis_routes_the_fake_pack_and_agrees(insightface_root, encoder):
    from insightface.app import FaceAnalysis

    pack = insightface_root / "models" / "antelopev2"
    app = FaceAnalysis(name=str(pack), providers=[CPU])
    assert set(app.models) == {"detection", "recognition"}
    app.prepare(ctx_id=0, det_size=(640, 640))
    bgr = bgr_of(draw_faces((640, 480), [(100, 100, 180, 200), (300, 48, 340, 88)]))
    theirs = sorted(app.get(bgr), key=lambda f: f.bbox[0])
    ours = sorted(encoder.detector.detect(bgr, 640), key=lambda f: f.box[0])
    assert len(theirs) == len(ours) == 2
    for t, o in zip(theirs, ours):
        np.testing.assert_allclose(t.bbox, o.box, atol=1e-5)
        np.testing.assert_allclose(t.kps, o.keypoints, atol=1e-5)


def test_fallback_640_then_320_then_160(encoder):
    assert det_sizes("auto") == (640, 320, 160)
    assert det_sizes(320) == (320,)
    with pytest.raises(FaceError, match="multiple of 32"):
        det_sizes(100)
    # a 300 px face in a 640 photo: too big for the detector at 640, found at 320
    medium = bgr_of(draw_faces((640, 640), [(100, 100, 400, 400)]))
    assert encoder.detector.detect(medium, 640) == []
    faces = detect_faces(encoder.detector, medium, det_sizes("auto"))
    assert [f.det_size for f in faces] == [320]
    np.testing.assert_allclose(faces[0].box, (100, 100, 400, 400), atol=1e-3)
    # 520 px: 260 px at 320 is still above the detector's limit; found only at 160
    assert 520 / 2 >= MAX_SIDE / 1 and 520 / 4 < MAX_SIDE
    big = bgr_of(draw_faces((640, 640), [(60, 60, 580, 580)]))
    faces = detect_faces(encoder.detector, big, det_sizes("auto"))
    assert [f.det_size for f in faces] == [160]
    np.testing.assert_allclose(faces[0].box, (60, 60, 580, 580), atol=1e-3)
    assert detect_faces(encoder.detector, big, det_sizes(640)) == []


def test_face_choice_by_size_and_left_to_right(encoder):
    boxes = [(20, 200, 60, 240), (100, 100, 220, 260), (400, 150, 480, 250)]  # small, large, medium
    faces = encoder.detector.detect(bgr_of(draw_faces((640, 480), boxes)), 640)
    assert len(faces) == 3
    pick = lambda sel: tuple(int(round(v)) for v in select_face(faces, sel).box)  # noqa: E731
    assert pick("largest") == boxes[1]
    assert pick(("size_rank", 0)) == boxes[1]
    assert pick(("size_rank", 1)) == boxes[2]
    assert pick("size_rank:2") == boxes[0]
    assert pick(("left_to_right", 0)) == boxes[0]
    assert pick(("left_to_right", 2)) == boxes[2]
    with pytest.raises(FaceError, match="only 3 face"):
        select_face(faces, ("left_to_right", 3))
    with pytest.raises(FaceError, match="Unknown face choice"):
        parse_face_select("biggest")


def test_auto_providers_prefer_the_accelerator_and_keep_cpu():
    assert choose_providers("auto", ["AzureExecutionProvider", CPU]) == [CPU]
    assert choose_providers("auto", ["TensorrtExecutionProvider", "CUDAExecutionProvider", CPU]) == [
        "CUDAExecutionProvider", CPU]
    assert choose_providers("auto", ["ROCMExecutionProvider", CPU]) == ["ROCMExecutionProvider", CPU]
    assert choose_providers("auto", ["CoreMLExecutionProvider", CPU]) == ["CoreMLExecutionProvider", CPU]
    assert choose_providers("auto", ["DmlExecutionProvider", CPU]) == ["DmlExecutionProvider", CPU]
    assert choose_providers("cpu", ["CUDAExecutionProvider", CPU]) == [CPU]
    assert choose_providers(["cuda"], ["CUDAExecutionProvider", CPU]) == ["CUDAExecutionProvider", CPU]
    with pytest.raises(FaceError, match="onnxruntime-gpu"):
        choose_providers("cuda", ["AzureExecutionProvider", CPU])
    with pytest.raises(FaceError, match="no usable"):
        choose_providers("auto", [])


def test_load_logs_active_providers(insightface_root, caplog):
    with caplog.at_level(logging.INFO, logger="infusenet.face.analysis"):
        detector = load_detector(insightface_root, "auto")
    assert detector.providers == [CPU]
    assert any("CPUExecutionProvider" in r.getMessage() for r in caplog.records)


def test_unavailable_accelerator_falls_back_to_cpu_with_a_warning(insightface_root, monkeypatch, caplog):
    import onnxruntime

    real = onnxruntime.get_available_providers()
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", *real])
    with caplog.at_level(logging.INFO, logger="infusenet.face.analysis"):
        detector = load_detector(insightface_root, "auto")
    assert detector.requested_providers[-1] == CPU
    assert detector.providers == [CPU]
    assert any(r.levelno == logging.WARNING for r in caplog.records)
    bgr = bgr_of(draw_faces((320, 320), [(100, 100, 180, 200)]))
    assert len(detector.detect(bgr, 320)) == 1


# ----------------------------------------------------------------------------------------------
# Model file checks: each names the exact path expected and what was found; none reaches insightface.


@pytest.fixture
def no_insightface_loading(monkeypatch):
    from insightface.model_zoo import model_zoo

    def refuse(*args, **kwargs):
        raise AssertionError("insightface was asked to load a model from a pack that failed its checks")

    monkeypatch.setattr(model_zoo, "get_model", refuse)


def test_missing_folder(tmp_path, no_insightface_loading):
    root = tmp_path / "insightface"
    (root / "models").mkdir(parents=True)
    (root / "models" / "buffalo_l").mkdir()
    with pytest.raises(FaceError) as err:
        load_detector(root)
    text = str(err.value)
    assert str(root / "models" / "antelopev2") in text and "does not exist" in text
    assert str(root / "models" / "antelopev2" / DETECTOR_FILE) in text
    assert "buffalo_l/" in text  # what was found instead


def test_nested_antelopev2_folder(tmp_path, no_insightface_loading):
    write_antelopev2(tmp_path / "models" / "antelopev2" / "antelopev2")
    with pytest.raises(FaceError, match="one folder too deep") as err:
        load_detector(tmp_path)
    assert str(tmp_path / "models" / "antelopev2" / "antelopev2" / DETECTOR_FILE) in str(err.value)
    assert str(tmp_path / "models" / "antelopev2" / DETECTOR_FILE) in str(err.value)


def test_pack_without_the_models_level_and_zip_hints(tmp_path, no_insightface_loading):
    write_antelopev2(tmp_path / "antelopev2")
    (tmp_path / "models").mkdir()
    with pytest.raises(FaceError, match="it belongs in") as err:
        load_detector(tmp_path)
    assert str(tmp_path / "models" / "antelopev2") in str(err.value)
    other = tmp_path / "other"
    (other / "models").mkdir(parents=True)
    (other / "models" / "antelopev2.zip").write_bytes(b"PK")
    with pytest.raises(FaceError, match="unzip it"):
        load_detector(other)


def test_pack_folder_under_another_name(tmp_path):
    pack = write_antelopev2(tmp_path / "models" / "antelopev2_copy")
    assert load_detector(pack).path == pack / DETECTOR_FILE
    from infusenet.face.paths import pack_dir_from

    comfy_root = tmp_path / "ComfyUI" / "models" / "insightface"
    assert pack_dir_from(comfy_root) == comfy_root / "models" / "antelopev2"
    nested = write_antelopev2(tmp_path / "models" / "mine" / "mine")
    with pytest.raises(FaceError, match="one folder too deep") as err:
        load_detector(nested.parent)
    assert str(nested.parent / DETECTOR_FILE) in str(err.value)


def test_missing_detector_file(tmp_path, no_insightface_loading):
    pack = write_antelopev2(tmp_path / "antelopev2")
    (pack / DETECTOR_FILE).unlink()
    with pytest.raises(FaceError) as err:
        load_detector(pack)
    assert str(pack / DETECTOR_FILE) in str(err.value) and "is missing" in str(err.value)
    assert RECOGNISER_FILE in str(err.value)


@pytest.mark.parametrize("damage", ["truncated", "empty", "html", "wrong_model"])
def test_corrupt_detector_file(tmp_path, damage, no_insightface_loading):
    pack = write_antelopev2(tmp_path / "antelopev2")
    path = pack / DETECTOR_FILE
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 3])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "html":
        path.write_bytes(b"<!DOCTYPE html><html><body>Not Found</body></html>")
    else:
        shutil.copy(pack / RECOGNISER_FILE, path)
    with pytest.raises(FaceError) as err:
        load_detector(pack)
    text = str(err.value)
    assert str(path) in text
    expected = {"truncated": "INVALID_PROTOBUF", "empty": "0 bytes", "html": "INVALID_PROTOBUF",
                "wrong_model": "has 1 outputs"}[damage]
    assert expected in text


def test_truncated_file_is_what_onnxruntime_calls_invalid_protobuf(tmp_path):
    import onnxruntime

    pack = write_antelopev2(tmp_path / "antelopev2")
    path = pack / DETECTOR_FILE
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(Exception, match="INVALID_PROTOBUF|Protobuf parsing failed"):
        onnxruntime.InferenceSession(str(path), providers=[CPU])


def test_default_folder_is_comfyui_models_insightface(tmp_path, monkeypatch):
    import folder_paths
    from insightface.model_zoo import model_zoo

    root = tmp_path / "models" / "insightface"
    root.mkdir(parents=True)
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "insightface", ([str(root)], set()))
    with monkeypatch.context() as patch:
        patch.setattr(model_zoo, "get_model", lambda *a, **k: pytest.fail("insightface reached"))
        with pytest.raises(FaceError) as err:  # a FaceError naming the place, never a download attempt
            load_detector(None)
    assert str(root / "models" / "antelopev2" / DETECTOR_FILE) in str(err.value)
    write_antelopev2(root / "models" / "antelopev2")
    assert load_detector(None).path == root / "models" / "antelopev2" / DETECTOR_FILE
