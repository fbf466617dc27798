"""Fixtures for the trainer tests: a tiny in-process FLUX, the fake face models, a random CLIP-L and
a 16-channel TAESD, and one prepared cache (with bad samples) shared by the whole test run."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from devtools.face_models import draw_faces, write_insightface_root
from devtools.host_models import write_flux_vae

from tests.fixtures.shared_files import shared_arcface, shared_clip_l
from devtools.tiny_training import tiny_config, tiny_shape  # noqa: F401  (used by the trainer tests)

RES = (64, 64)            # training images -> 8x8 latents -> 16 image tokens
FACE_BOXES = {"ann": (12, 10, 44, 50), "bob": (20, 6, 50, 40), "cy": (8, 16, 36, 60)}


@pytest.fixture(scope="session")
def base():
    from devtools import flux_pair as fp

    return fp.make_base(2, 2, seed=0, text_dim=768)


@pytest.fixture(scope="session")
def face_encoder(tmp_path_factory):
    from infusenet.face.encoder import load_face_encoder

    root = tmp_path_factory.mktemp("insightface")
    write_insightface_root(root)
    arcface = shared_arcface(tmp_path_factory, tmp_path_factory.mktemp("arcface") / "recognition_arcface_ir_se50.pth", seed=1)
    return load_face_encoder(root, arcface, providers="auto")


@pytest.fixture(scope="session")
def clip(tmp_path_factory):
    import comfy.sd

    path = shared_clip_l(tmp_path_factory, tmp_path_factory.mktemp("clip") / "clip_l.safetensors")
    return comfy.sd.load_clip(ckpt_paths=[str(path)], clip_type=comfy.sd.CLIPType.STABLE_DIFFUSION)


@pytest.fixture(scope="session")
def vae(tmp_path_factory):
    import comfy.sd
    import comfy.utils

    path = write_flux_vae(tmp_path_factory.mktemp("vae") / "taef1.safetensors")
    return comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(path)))


def save(image: np.ndarray, path, mode: str | None = None) -> str:
    from PIL import Image

    im = Image.fromarray(np.clip(np.round(image * 255), 0, 255).astype(np.uint8))
    if mode == "I;16":
        im = Image.fromarray((image[..., 0] * 65535).astype(np.uint16))
    elif mode is not None:
        im = im.convert(mode)
    im.save(path)
    return str(path)


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory):
    """Photos and a manifest: 3 good SPSS, 1 SPMS identity with 2 targets, and bad samples."""
    d = tmp_path_factory.mktemp("data")
    (d / "photos").mkdir()
    lines = []
    for i, (name, box) in enumerate(FACE_BOXES.items()):
        save(draw_faces(RES, [box], texture_seed=i), d / "photos" / f"{name}.png")
        lines.append({"id": name, "identity": f"photos/{name}.png", "caption": f"a photo of {name}", "pose": "auto"})
    lines.append({"id": "ann_spms", "identity": "photos/ann.png", "targets": [
        {"image": "photos/bob.png", "caption": "ann at the sea"},
        {"image": "photos/cy.png", "caption": "ann in a garden", "pose": "photos/ann.png"}]})
    # bad or unusual data
    save(draw_faces(RES, [(20, 20, 40, 44)], texture_seed=7), d / "photos" / "cmyk.jpg", "CMYK")
    save(draw_faces(RES, [(14, 14, 40, 50)]), d / "photos" / "deep.png", "I;16")
    save(draw_faces(RES, [(10, 12, 42, 40)]), d / "photos" / "palette.png", "P")
    save(np.zeros((64, 64, 3), np.float32), d / "photos" / "noface.png")
    (d / "photos" / "notimage.png").write_bytes(b"this is not an image")
    lines += [
        {"id": "cmyk", "identity": "photos/cmyk.jpg", "caption": "cmyk"},
        {"id": "deep", "identity": "photos/deep.png", "caption": "16-bit"},
        {"id": "palette", "identity": "photos/palette.png", "caption": "palette"},
        {"id": "missing", "identity": "photos/gone.png", "caption": "missing file"},
        {"id": "noface", "identity": "photos/noface.png", "caption": "no face"},
        {"id": "garbage", "identity": "photos/notimage.png", "caption": "not an image"},
    ]
    with open(d / "manifest.jsonl", "w") as f:
        for rec in lines:
            f.write(json.dumps(rec) + "\n")
        f.write("{broken json\n")
    return d


@pytest.fixture(scope="session")
def prepared(dataset_dir, tmp_path_factory, face_encoder, clip, vae):
    from infusenet.trainer.data import Encoders, prepare_cache

    cache = tmp_path_factory.mktemp("cache")
    report = prepare_cache(dataset_dir / "manifest.jsonl", cache, Encoders(face_encoder, clip, vae), RES)
    return cache, report


@pytest.fixture
def clean_seed():
    torch.manual_seed(0)
