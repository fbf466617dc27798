"""The face encoder: antelopev2 detector (ONNX Runtime) + ArcFace IR-SE50 (torch, ComfyUI-managed)."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .analysis import SELFTEST_PREFIX, FaceDetector, load_detector
from .arcface import ArcFaceIRSE50, crops_to_input
from .errors import FaceError
from .paths import ARCFACE_FILE, resolve_arcface_path

log = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class FaceEncoder:
    """What the face nodes share: ``detector`` (SCRFD) and ``arcface`` (a ComfyUI ModelPatcher around
    :class:`ArcFaceIRSE50`, loaded to ComfyUI's device when used, offloaded by model management)."""

    detector: FaceDetector
    arcface: "object"  # a ComfyUI ModelPatcher (see infusenet.host.new_patcher)
    arcface_path: Path
    dtype: torch.dtype
    info: dict = field(default_factory=dict)

    @property
    def providers(self) -> list[str]:
        return self.detector.providers

    @property
    def selftest(self) -> bool:
        """Whether the untrained self-test stand-ins are in use (detector, or ArcFace by its file name)."""
        return bool(getattr(self.detector, "selftest", False)) or self.arcface_path.name.startswith(SELFTEST_PREFIX)

    def selftest_note(self) -> str | None:
        """What every node that used these models must say when they are the self-test stand-ins."""
        if not self.selftest:
            return None
        return ("self-test face models in use: the untrained stand-in detector marks any bright patch, so the "
                "faces, keypoints, masks and scores here are not real faces. Install the antelopev2 pack and "
                "recognition_arcface_ir_se50.pth (see the README) for real results.")

    def embed(self, crops_bgr: np.ndarray) -> torch.Tensor:
        """Aligned uint8 BGR crops ``[N, 112, 112, 3]`` -> L2-normalised embeddings ``[N, 512]`` (float32, CPU)."""
        from .. import host

        crops_bgr = np.asarray(crops_bgr)
        if crops_bgr.ndim != 4 or crops_bgr.shape[1:] != (112, 112, 3):
            raise FaceError(f"ArcFace takes aligned crops [N, 112, 112, 3]; got {list(crops_bgr.shape)}.")
        host.load_models([self.arcface])
        device = self.arcface.load_device
        with torch.inference_mode():
            out = self.arcface.model(crops_to_input(crops_bgr, device, self.dtype))
        out = out.float().cpu()
        return torch.nn.functional.normalize(out, dim=1)


def arcface_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """float32 by default (the reference runs ArcFace in float32, and it is cheap: ~44M parameters,
    one 112x112 crop). ``"fp16"``/``"bf16"`` are honoured only where ComfyUI says the device supports
    them (never on CPU)."""
    from .. import host

    if dtype is None or dtype in ("auto", "fp32", torch.float32):
        return torch.float32
    wanted = _DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
    if wanted in (torch.float16, torch.bfloat16) and host.device_supports(wanted, device):
        return wanted
    log.info("ArcFace: %s not supported on %s; using float32.", dtype, device)
    return torch.float32


def load_arcface_state_dict(path: Path, searched: Sequence[Path] = ()) -> dict[str, torch.Tensor]:
    """Read ``recognition_arcface_ir_se50.pth`` safely (``weights_only``) and check its keys."""
    from .. import host

    if not path.is_file():
        where = ", ".join(str(p) for p in searched) if len(searched) > 1 else str(path)
        raise FaceError(f"ArcFace weights {ARCFACE_FILE} not found (looked at {where}). Put the file (the "
                        f"IR-SE50 ArcFace used by InfiniteYou, facexlib release v0.1.0) at {path}.")
    try:
        state = host.load_torch_file(str(path))
    except host.UnreadableFile as exc:
        raise FaceError(f"ArcFace weights {path} ({path.stat().st_size} bytes) cannot be read as a plain "
                        f"state dict ({exc.reason[:200]}). The file is truncated, corrupt, or not a weights file; "
                        "download it again.") from exc
    except host.HostMismatch as exc:  # ComfyUI's loader changed: the file is not the problem
        raise FaceError(f"ArcFace weights {path} could not be read: {exc}") from exc
    return arcface_state_dict(state, str(path))


def arcface_state_dict(state, source: str) -> dict[str, torch.Tensor]:
    """``state`` checked against :class:`ArcFaceIRSE50` (every tensor, by name and shape; a ``module.`` prefix is
    dropped): the loader's check, which the model doctor runs on the same files (on their shapes only)."""
    if not isinstance(state, dict):
        raise FaceError(f"ArcFace weights {source} hold a {type(state).__name__}, not a state dict.")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    with torch.device("meta"):
        expected = ArcFaceIRSE50().state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        hint = " It looks like the InfiniteYou projection file." if "image_proj" in state or any(
            k.startswith("latents") or k.startswith("proj_in") for k in state) else ""
        raise FaceError(
            f"{source} is not the IR-SE50 ArcFace ({ARCFACE_FILE}, {len(expected)} tensors): "
            f"{len(missing)} missing (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}), "
            f"{len(wrong)} of the wrong shape (e.g. {wrong[:2]}).{hint}"
        )
    return state


def load_face_encoder(path: str | os.PathLike | None = None, arcface_path: str | os.PathLike | None = None,
                      providers: str | Sequence[str] | None = "auto", device: torch.device | None = None,
                      dtype: str | torch.dtype | None = None) -> FaceEncoder:
    """Check and load the face models.

    ``path``: the antelopev2 folder or an insightface root holding ``models/antelopev2`` (None: ComfyUI's
    ``models/insightface``). ``arcface_path``: a file, or a name looked up in ``models/insightface`` and
    ``models/facexlib`` (None: ``recognition_arcface_ir_se50.pth``). ``providers``: ONNX providers for the
    detector (``"auto"`` picks CUDA/ROCm/CoreML/DirectML when present, then CPU). ``device``: where ArcFace
    runs (None: ComfyUI's torch device); ``dtype``: see :func:`arcface_dtype`."""
    from .. import host

    resolved, searched = resolve_arcface_path(arcface_path)
    state = load_arcface_state_dict(resolved, searched)  # cheap checks before opening sessions
    detector = load_detector(path, providers)
    load_device = device if device is not None else host.torch_device()
    offload_device = host.offload_device() if device is None else torch.device("cpu")
    dt = arcface_dtype(load_device, dtype)
    net = ArcFaceIRSE50()
    net.load_state_dict(state, strict=True)
    net.eval().requires_grad_(False).to(dtype=dt)
    patcher = host.new_patcher(net, load_device, offload_device, size=host.module_size(net),
                               reload=(reload_arcface_patcher, (str(resolved), str(load_device), str(dt))))
    log.info("ArcFace IR-SE50 %s: %s on %s; detector providers %s.", resolved, dt, load_device, detector.providers)
    info = {"detector": str(detector.path), "providers": list(detector.providers), "arcface": str(resolved),
            "device": str(load_device), "dtype": str(dt).replace("torch.", "")}
    encoder = FaceEncoder(detector=detector, arcface=patcher, arcface_path=resolved, dtype=dt, info=info)
    if encoder.selftest:
        info["selftest"] = True
        log.warning("InfiniteYou face encoder: %s", encoder.selftest_note())
    return encoder


def reload_arcface_patcher(path: str, device: str, dtype: str, disable_dynamic: bool = False):
    """A fresh ArcFace patcher from its file, for ComfyUI's multi-GPU and dynamic-VRAM clones."""
    from .. import host

    dt = getattr(torch, dtype.replace("torch.", ""))
    net = ArcFaceIRSE50()
    net.load_state_dict(load_arcface_state_dict(Path(path)), strict=True)
    net.eval().requires_grad_(False).to(dtype=dt)
    return host.new_patcher(net, torch.device(device), host.offload_device(), size=host.module_size(net),
                            reload=(reload_arcface_patcher, (path, device, dtype)), dynamic=not disable_dynamic)
