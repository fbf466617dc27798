"""Face detection with insightface's SCRFD from the antelopev2 pack.

The reference builds ``FaceAnalysis('antelopev2')`` and only uses its detector. ``FaceAnalysis``
opens an ONNX Runtime session for every ``.onnx`` file in the pack (about 600 MB with glintr100)
before ``allowed_modules`` discards the unused ones, so this module opens only the detector, through
the same insightface routing (``model_zoo.get_model``) and the same ``SCRFD.detect`` call that
``FaceAnalysis.get`` makes. Files are checked before insightface sees them, so insightface never
reaches its download code.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..onnx_runtime import GPU_PROVIDERS
from .errors import FaceError
from .paths import DETECTOR_FILE, PACK_NAME, pack_dir_from

log = logging.getLogger(__name__)

DET_SIZES: tuple[int, ...] = (640, 320, 160)
DET_THRESHOLD = 0.5
CPU = "CPUExecutionProvider"
# Preferred accelerators, best first (CUDA, ROCm, CoreML, DirectML); CPU always follows as the fallback.
ACCELERATED_PROVIDERS = GPU_PROVIDERS
_SHORT_PROVIDER_NAMES = {
    "cuda": "CUDAExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "directml": "DmlExecutionProvider",
    "dml": "DmlExecutionProvider",
    "cpu": CPU,
}
FaceSelect = str | tuple[str, int]


@dataclass(frozen=True)
class DetectedFace:
    """One detection in image pixels: ``box`` ``[4]`` (x1, y1, x2, y2), ``keypoints`` ``[5, 2]``
    (left eye, right eye, nose, left and right mouth corner), the detector score and det size used."""

    box: np.ndarray
    keypoints: np.ndarray
    score: float
    det_size: int

    @property
    def area(self) -> float:
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))

    @property
    def centre(self) -> tuple[float, float]:
        return float(self.box[0] + self.box[2]) / 2, float(self.box[1] + self.box[3]) / 2


# ---------------------------------------------------------------------------------------------
# Model files


def _listing(folder: Path, limit: int = 12) -> str:
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    except OSError:
        return "(unreadable)"
    if not names:
        return "nothing (the folder is empty)"
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_onnx_file(path: Path, role: str, shown: str | None = None):
    """Raise ``FaceError`` unless ``path`` parses as an ONNX model (catches truncated downloads,
    HTML pages saved as .onnx and empty files, which ONNX Runtime reports as INVALID_PROTOBUF). ``shown``: how
    messages name the file (the model doctor names it relative to the models folder). Returns the parsed model."""
    import onnx

    where = shown or path
    size = path.stat().st_size
    if size == 0:
        raise FaceError(f"The {role} {where} is empty (0 bytes): the download did not complete. "
                        f"Download the {PACK_NAME} pack again and replace the file.")
    with open(path, "rb") as fh:
        head = fh.read(256).lstrip().lower()
    if head.startswith(b"<") or head.startswith(b"{"):
        raise FaceError(f"The {role} {where} is a web page or text ({size} bytes), not an ONNX model "
                        "(INVALID_PROTOBUF). Download the file itself, not the page that links to it.")
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:  # DecodeError and friends: the protobuf cannot be parsed
        raise FaceError(
            f"The {role} {where} is not a valid ONNX model (INVALID_PROTOBUF: {type(exc).__name__}); "
            f"found a {size}-byte file that is truncated or corrupt. Download the {PACK_NAME} pack "
            "again and replace the file."
        ) from exc
    if role == "face detector" and len(model.graph.output) < 5:
        raise FaceError(f"The face detector {where} has {len(model.graph.output)} outputs; the "
                        f"{PACK_NAME} SCRFD detector has 9. Another model was saved under its name.")
    return model


def check_pack(pack_dir: Path) -> Path:
    """Validate an antelopev2 folder; return the detector file path or raise ``FaceError``."""
    detector = pack_dir / DETECTOR_FILE
    if detector.is_file():
        check_onnx_file(detector, "face detector")
        return detector
    nested = next((n for n in (pack_dir / pack_dir.name / DETECTOR_FILE, pack_dir / PACK_NAME / DETECTOR_FILE)
                   if n.is_file()), None)
    if nested is not None:
        raise FaceError(
            f"The {PACK_NAME} files are one folder too deep: found {nested}, expected {detector}. "
            f"Move the files from {nested.parent} up into {pack_dir} (a common result of "
            "unzipping into a folder of the same name)."
        )
    if not pack_dir.is_dir():
        hints = []
        zipped = pack_dir.with_name(PACK_NAME + ".zip")
        if zipped.is_file():
            hints.append(f"found {zipped}: unzip it there")
        skipped_models = pack_dir.parent.parent / PACK_NAME / DETECTOR_FILE
        if pack_dir.parent.name == "models" and skipped_models.is_file():
            hints.append(f"found the pack at {skipped_models.parent}: it belongs in {pack_dir}")
        parent = pack_dir.parent
        found = "; ".join(hints) if hints else (
            f"{parent} contains {_listing(parent)}" if parent.is_dir() else f"{parent} does not exist either")
        raise FaceError(f"The {PACK_NAME} face models folder {pack_dir} does not exist (expected "
                        f"{detector} and the other {PACK_NAME} files). Found: {found}.")
    raise FaceError(f"The face detector {detector} is missing. The folder {pack_dir} contains "
                    f"{_listing(pack_dir)}. Put the {PACK_NAME} files (including {DETECTOR_FILE}) there.")


# ---------------------------------------------------------------------------------------------
# ONNX Runtime providers


def choose_providers(requested: str | Sequence[str] | None = "auto",
                     available: Sequence[str] | None = None) -> list[str]:
    """Providers for the detector session, best first, CPU last.

    ``"auto"`` (or None) takes the first available of CUDA, ROCm, CoreML, DirectML, then CPU. A name
    (``"cuda"``, ``"CUDAExecutionProvider"``...) or list of names asks for those; asking for one this
    onnxruntime lacks raises ``FaceError`` listing what it has."""
    if available is None:
        import onnxruntime

        available = onnxruntime.get_available_providers()
    available = list(available)
    if requested is None or requested == "auto":
        chosen = [p for p in ACCELERATED_PROVIDERS if p in available][:1]
        if CPU in available:
            chosen.append(CPU)
        if not chosen:
            raise FaceError(f"onnxruntime offers no usable execution provider (it lists {available}).")
        return chosen
    names = [requested] if isinstance(requested, str) else list(requested)
    names = [_SHORT_PROVIDER_NAMES.get(n.lower(), n) for n in names]
    missing = [n for n in names if n not in available]
    if missing:
        hint = ""
        if any(n in ("CUDAExecutionProvider", "ROCMExecutionProvider") for n in missing):
            hint = (" The GPU build of onnxruntime (onnxruntime-gpu / onnxruntime-rocm) is missing or was "
                    "replaced by the CPU package 'onnxruntime' (insightface depends on it): run this pack's "
                    "install.py, or reinstall the GPU build after insightface.")
        raise FaceError(f"ONNX provider(s) {missing} requested, but this onnxruntime only has {available}.{hint}")
    if CPU in available and CPU not in names:
        names.append(CPU)
    return names


# ---------------------------------------------------------------------------------------------
# Detector


SELFTEST_GRAPHS = ("fake_scrfd",)
"""Graph names of the self-test stand-in detector (``scripts/selftest.py``, the tests' model set): it
"finds" any bright patch, lamps and foreheads included."""
SELFTEST_PREFIX = "infu-selftest"


def is_selftest_detector(session, path: Path) -> bool:
    """Whether this detector is the self-test stand-in: by the model itself (its graph name), whatever the
    file is called, or by the self-test pack's folder name."""
    try:
        graph = session.get_modelmeta().graph_name
    except Exception:  # an ONNX Runtime without model metadata
        graph = ""
    return graph in SELFTEST_GRAPHS or any(part.startswith(SELFTEST_PREFIX) for part in Path(path).parts[-2:])


class FaceDetector:
    """insightface SCRFD over one ONNX Runtime session; ``providers`` are those actually active;
    ``selftest`` says the detector is the untrained self-test stand-in."""

    def __init__(self, model, path: Path, requested: list[str]) -> None:
        self.model = model
        self.path = path
        self.requested_providers = requested
        self.providers: list[str] = list(model.session.get_providers())
        self.selftest = is_selftest_detector(model.session, path)
        model.prepare(0, det_thresh=DET_THRESHOLD, input_size=(DET_SIZES[0], DET_SIZES[0]))

    def detect(self, image_bgr: np.ndarray, det_size: int) -> list[DetectedFace]:
        """All faces in a uint8 BGR ``[H, W, 3]`` image, detected at ``det_size`` x ``det_size``."""
        boxes, keypoints = self.model.detect(image_bgr, input_size=(det_size, det_size), max_num=0)
        if keypoints is None:
            raise FaceError(f"The face detector {self.path} gives no keypoints; the {PACK_NAME} "
                            f"{DETECTOR_FILE} does. Another model was saved under its name.")
        return [
            DetectedFace(np.asarray(b[:4], dtype=np.float64), np.asarray(k, dtype=np.float64), float(b[4]), det_size)
            for b, k in zip(boxes, keypoints)
        ]


def _session_provider_options(providers: list[str]) -> list[dict]:
    """Put the CUDA/ROCm session on the GPU ComfyUI uses (``device_id``)."""
    options: list[dict] = []
    index = None
    if any(p in ("CUDAExecutionProvider", "ROCMExecutionProvider") for p in providers):
        try:
            from .. import host

            device = host.torch_device()
            index = device.index if getattr(device, "type", "") == "cuda" else None
        except Exception:  # comfy not importable (library use): let onnxruntime pick
            index = None
    for p in providers:
        gpu = p in ("CUDAExecutionProvider", "ROCMExecutionProvider") and index is not None
        options.append({"device_id": str(index)} if gpu else {})
    return options


def load_detector(path: str | Path | None = None, providers: str | Sequence[str] | None = "auto") -> FaceDetector:
    """Check and open the antelopev2 detector.

    ``path``: the antelopev2 folder, or an insightface root holding ``models/antelopev2`` (None: ComfyUI's
    ``models/insightface``)."""
    from insightface.model_zoo import model_zoo

    detector_path = check_pack(pack_dir_from(path))
    chosen = choose_providers(providers)
    try:
        model = model_zoo.get_model(str(detector_path), providers=chosen,
                                    provider_options=_session_provider_options(chosen))
    except Exception as exc:
        text = str(exc)
        if "INVALID_PROTOBUF" in text or "Protobuf parsing failed" in text:
            raise FaceError(f"The face detector {detector_path} is corrupt (INVALID_PROTOBUF). Download the "
                            f"{PACK_NAME} pack again and replace the file.") from exc
        if chosen == [CPU]:
            raise FaceError(f"onnxruntime could not open the face detector {detector_path}: {text}") from exc
        log.warning("Face detector: providers %s failed (%s); falling back to CPU.", chosen, text)
        chosen = [CPU]
        model = model_zoo.get_model(str(detector_path), providers=chosen)
    if model is None or not hasattr(model, "detect"):
        raise FaceError(f"insightface does not route {detector_path} as a face detector; the {PACK_NAME} "
                        f"{DETECTOR_FILE} has 9 outputs.")
    detector = FaceDetector(model, detector_path, chosen)
    if detector.providers[:1] != chosen[:1]:
        log.warning("Face detector %s: asked for ONNX providers %s but %s are active (GPU libraries for "
                    "onnxruntime not found?).", detector_path, chosen, detector.providers)
    else:
        log.info("Face detector %s on ONNX providers %s.", detector_path, detector.providers)
    return detector


# ---------------------------------------------------------------------------------------------
# Detection with fallback and face choice


def det_sizes(det_size: str | int | Sequence[int] = "auto") -> tuple[int, ...]:
    """``"auto"`` -> (640, 320, 160), the reference's fallback order; an int -> that size only."""
    if det_size in ("auto", None):
        return DET_SIZES
    if isinstance(det_size, (int, np.integer)) or (isinstance(det_size, str) and det_size.isdigit()):
        size = int(det_size)
        if size <= 0 or size % 32:
            raise FaceError(f"Detection size must be a positive multiple of 32 (e.g. 640, 320, 160); got {size}.")
        return (size,)
    sizes = tuple(int(s) for s in det_size)
    for s in sizes:
        det_sizes(s)
    return sizes


def detect_faces(detector: FaceDetector, image_bgr: np.ndarray, sizes: Sequence[int],
                 keep: Callable[[DetectedFace], bool] | None = None) -> list[DetectedFace]:
    """Faces at the first size (in order) that finds any (after ``keep``); [] when none does."""
    for size in sizes:
        faces = detector.detect(image_bgr, size)
        if keep is not None:
            faces = [f for f in faces if keep(f)]
        if faces:
            return faces
    return []


def parse_face_select(face_select: FaceSelect) -> tuple[str, int]:
    """Normalise ``"largest"``, ``("size_rank", k)``, ``("left_to_right", k)`` or ``"size_rank:k"``."""
    if isinstance(face_select, str):
        if face_select == "largest":
            return "size_rank", 0
        if ":" in face_select:
            mode, _, index = face_select.partition(":")
            face_select = (mode.strip(), int(index))
        else:
            raise FaceError(f"Unknown face choice {face_select!r}; use 'largest', ('size_rank', k) or "
                            "('left_to_right', k).")
    mode, index = face_select
    if mode not in ("size_rank", "left_to_right") or int(index) < 0:
        raise FaceError(f"Unknown face choice {face_select!r}; use 'largest', ('size_rank', k) or "
                        "('left_to_right', k) with k >= 0.")
    return mode, int(index)


def select_face(faces: Sequence[DetectedFace], face_select: FaceSelect = "largest") -> DetectedFace:
    """The chosen face: by box area, largest first (rank 0 = the reference's choice), or by box
    centre from left to right. Raises ``FaceError`` when there are fewer faces than the index needs."""
    mode, index = parse_face_select(face_select)
    if mode == "size_rank":
        ordered = sorted(faces, key=lambda f: f.area)[::-1]  # ties: the reference's sorted(...)[-1] first
    else:
        ordered = sorted(faces, key=lambda f: f.centre[0])
    if index >= len(ordered):
        raise FaceError(f"Face {index} ({mode.replace('_', ' ')}, counting from 0) was asked for, but only "
                        f"{len(ordered)} face(s) were found.")
    return ordered[index]
