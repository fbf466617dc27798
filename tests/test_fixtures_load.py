"""Every generated model of the test set loads through the loader a user would use: ComfyUI's stock
loaders for FLUX, CLIP and VAE; the pack's for InfuseNet (three forms), projection and face models."""
from __future__ import annotations

import pytest
import torch

from tests.fixtures import model_set as ms
from tests.host_features import newest_host_only


def test_flux_files_load_with_the_stock_loader(model_dir):
    import comfy.sd

    dev = comfy.sd.load_diffusion_model(str(model_dir / "diffusion_models" / ms.FLUX_DEV))
    assert type(dev.model).__name__ == "Flux" and dev.model.diffusion_model.params.guidance_embed
    assert dev.model.diffusion_model.hidden_size == 3072
    del dev  # one 3072-wide FLUX in float32 (about 2 GB) at a time, beside the test servers
    schnell = comfy.sd.load_diffusion_model(str(model_dir / "diffusion_models" / ms.FLUX_SCHNELL))
    assert type(schnell.model).__name__ == "Flux" and not schnell.model.diffusion_model.params.guidance_embed


def test_the_servers_flux_is_narrow_exactly_where_the_host_takes_that_width(model_dir, server_models):
    """The narrow set (``server_models``) only where ComfyUI builds a FLUX.1 of its width from it; elsewhere the stock
    loader refuses that file, and the servers keep the full set. Its InfuseNets are as wide as its FLUX.1."""
    import comfy.sd
    from infusenet.weights import load_infusenet

    narrow = ms.narrow_model_set()
    if ms.host_reads_flux_width():
        assert server_models == narrow and ms.flux_width(server_models) == ms.NARROW_FLUX_WIDTH
        for name, guidance in ((ms.FLUX_DEV, True), (ms.FLUX_SCHNELL, False)):
            flux = comfy.sd.load_diffusion_model(str(narrow / "diffusion_models" / name)).model.diffusion_model
            width = ms.NARROW_FLUX_WIDTH
            assert (flux.hidden_size, flux.num_heads, flux.params.guidance_embed) == (width, width // 128, guidance)
    else:
        assert server_models == model_dir and ms.flux_width(server_models) == 3072
        with pytest.raises(ValueError, match="num_heads 24|positional dim"):  # 24 heads, rope's 128 channels each
            comfy.sd.load_diffusion_model(str(narrow / "diffusion_models" / ms.FLUX_DEV))
    for name in ("infu_flux_v1.0/aes_stage2/InfuseNetModel", "sim_stage1/infusenet_sim_bf16.safetensors"):
        assert load_infusenet(str(narrow / "infiniteyou" / name)).config.hidden_size == ms.NARROW_FLUX_WIDTH


def test_text_encoder_and_vae_load_with_the_stock_loaders(model_dir):
    import comfy.sd
    import comfy.utils

    clip = comfy.sd.load_clip([str(model_dir / "text_encoders" / ms.CLIP_L)], clip_type=comfy.sd.CLIPType.STABLE_DIFFUSION)
    cond, pooled = clip.encode_from_tokens(clip.tokenize("a portrait"), return_pooled=True)
    assert cond.shape == (1, 77, 768) and pooled.shape == (1, 768) and torch.isfinite(cond).all()
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(model_dir / "vae" / ms.FLUX_VAE)))
    assert vae.latent_channels == 16
    assert vae.encode(torch.zeros(1, 64, 64, 3)).shape == (1, 16, 8, 8)


@pytest.mark.parametrize("name", [
    "infu_flux_v1.0/aes_stage2/InfuseNetModel",
    "aes_stage2/infusenet_aes_bf16.safetensors",
    "aes_stage2/infusenet_aes_fp8e4m3fn.safetensors",
])
def test_infusenet_forms_load_with_the_pack_loader(model_dir, name):
    from infusenet.weights import find_projection_file, load_infusenet

    path = model_dir / "infiniteyou" / name
    bundle = load_infusenet(str(path), find_projection_file(str(path)))
    assert bundle.config.hidden_size == 3072 and bundle.num_tokens == 8
    held = {torch.bfloat16: "bf16", torch.float32: "fp32"}.get(bundle.model.img_in.weight.dtype, "fp8_e4m3fn")
    assert bundle.precision == ("fp8_e4m3fn" if "fp8" in name else held if held == "bf16" else f"{held} (bf16 file)")


def test_projection_safetensors_equivalent_loads(model_dir):
    from infusenet.weights import load_resampler

    bin_tokens = load_resampler(str(model_dir / "infiniteyou" / "aes_stage2" / "image_proj_model.bin"))
    st_tokens = load_resampler(str(model_dir / "infiniteyou" / "image_proj_model_aes.safetensors"))
    x = torch.nn.functional.normalize(torch.randn(1, 1, 512), dim=-1)
    torch.testing.assert_close(bin_tokens(x), st_tokens(x))


def test_face_models_load_with_the_pack_loader(model_dir):
    from infusenet.face.encoder import load_face_encoder

    encoder = load_face_encoder(model_dir / "insightface", model_dir / "insightface" / "recognition_arcface_ir_se50.pth")
    assert encoder.providers == ["CPUExecutionProvider"]


@newest_host_only("the test scratch folder's shared files: no ComfyUI involved")
def test_a_shared_generated_file_is_written_once_and_linked_for_each_test(tmp_path_factory, tmp_path):
    from tests.fixtures.shared_files import shared_file

    writes = []

    def write(target):
        writes.append(target)
        target.write_bytes(b"weights " + str(len(writes)).encode())

    key = f"shared-file-test-{tmp_path.name}.bin"
    first = shared_file(tmp_path_factory, tmp_path / "a" / "model.bin", key, write)
    second = shared_file(tmp_path_factory, tmp_path / "b" / "model.bin", key, write)
    assert len(writes) == 1 and first.read_bytes() == second.read_bytes() == b"weights 1"
    assert first.stat().st_ino == second.stat().st_ino and first.stat().st_nlink == 3  # the run's copy + 2 links
    kept = tmp_path / "kept.bin"
    kept.write_bytes(b"kept elsewhere")
    third = shared_file(tmp_path_factory, tmp_path / "c" / "model.bin", key + "-other", write, existing=kept)
    assert len(writes) == 1 and third.stat().st_ino == kept.stat().st_ino
    fourth = shared_file(tmp_path_factory, tmp_path / "d" / "model.bin", key + "-other", write,
                         existing=tmp_path / "missing.bin")  # not there: written once for the run
    assert len(writes) == 2 and fourth.read_bytes() == b"weights 2"



BUILD_UNDER_THE_LOCK = """
import os, sys, time
from pathlib import Path
from devtools.build_lock import cached_folder

root, log = Path(sys.argv[1]), sys.argv[2]

def build(folder):
    with open(log, "a") as out:
        out.write(f"start {os.getpid()}\\n")
    time.sleep(0.5)
    folder.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        out.write(f"end {os.getpid()}\\n")

cached_folder(root, build)  # what a test process does when it needs a cached folder (tests/fixtures/model_set.py)
"""


@newest_host_only("a file lock between processes: no ComfyUI involved")
def test_two_processes_asking_for_a_cached_folder_at_once_build_it_once(tmp_path):
    import subprocess
    import sys

    from devtools.comfy_env import PACK_ROOT

    root, log = tmp_path / "cache" / "set", tmp_path / "log"
    workers = [subprocess.Popen([sys.executable, "-c", BUILD_UNDER_THE_LOCK, str(root), str(log)], cwd=PACK_ROOT)
               for _ in range(3)]
    assert [w.wait(60) for w in workers] == [0, 0, 0]
    lines = log.read_text().splitlines()
    assert len(lines) == 2 and lines[0].startswith("start ") and lines[1] == "end " + lines[0].split()[1], lines
    assert (root / "complete").read_text() == "ok"
