"""Apply InfiniteYou on a GGUF FLUX (city96's ComfyUI-GGUF, ``UnetLoaderGGUF``) gives the numbers of the
same weights dequantised and loaded through ComfyUI's own loader.

Q8_0 and the 4-bit Q4_0, quantised from the test FLUX.1-dev (3072 wide, what stock detection takes).
The reference path: the GGUF file dequantised with the ``gguf`` package (not ComfyUI-GGUF's own torch
kernels) to float32 and loaded with ``comfy.sd.load_diffusion_model_state_dict``. The residuals the
base receives and the model output are compared; the errors are printed (``-s``).
"""
from __future__ import annotations

import gc

import pytest
import torch

import comfy.sd
import folder_paths
from infusenet import patch, weights
from devtools import bases, comfyui_gguf
from devtools import flux_pair as fp

H = W = 8  # 64x64 pixels -> 16 image tokens
SIGMA = 0.7


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.fixture(scope="module")
def base_files(model_dir):
    return bases.bases_dir(model_dir)


@pytest.fixture(scope="module")
def gguf_pack(tmp_path_factory, base_files):
    folder_paths.add_model_folder_path("diffusion_models", str(base_files / "diffusion_models"))
    return comfyui_gguf.import_comfyui_gguf(comfyui_gguf.install_comfyui_gguf(tmp_path_factory.mktemp("custom_nodes")))


@pytest.fixture(scope="module")
def branch(model_dir):
    bundle = weights.load_infusenet(str(model_dir / "infiniteyou" / "infu_flux_v1.0" / "aes_stage2" / "InfuseNetModel"))
    g = torch.Generator().manual_seed(11)
    return dict(bundle=bundle, tokens=torch.randn(1, 8, 4096, generator=g), control=torch.randn(1, 16, H, W, generator=g),
                x=torch.randn(1, 16, H, W, generator=g),
                cond=fp.conds(torch.randn(1, 8, 768, generator=g), torch.randn(1, 768, generator=g), 3.5))


def measure(model, branch) -> tuple[dict, torch.Tensor]:
    """One guided model call (CFG 1) on the patched model: the ``control`` the FLUX blocks received and the
    denoised output (one call: a GGUF forward dequantises every layer, seconds on a CPU)."""
    patched = patch.apply_infiniteyou(model, branch["bundle"], branch["tokens"], branch["control"], strength=1.0)
    with fp.flux_blocks_inputs(patched) as seen:
        _, denoised = fp.comfy_denoised(patched, branch["x"] * SIGMA, SIGMA, branch["cond"], None, 1.0)
    assert len(seen) == 1
    return seen[0]["control"], denoised


@pytest.mark.parametrize("kind", bases.GGUF_TYPES)
def test_gguf_base_gives_the_numbers_of_its_dequantised_weights(gguf_pack, base_files, branch, kind):
    name = bases.gguf_name(kind)
    loaders = {
        "UnetLoaderGGUF": lambda: gguf_pack.nodes.UnetLoaderGGUF().load_unet(name)[0],
        "dequant float32": lambda: gguf_pack.nodes.UnetLoaderGGUFAdvanced().load_unet(name, "float32", "default", False)[0],
        "reference": lambda: comfy.sd.load_diffusion_model_state_dict(
            comfyui_gguf.dequantised_state_dict(base_files / "diffusion_models" / name), model_options={"dtype": torch.float32}),
    }
    runs = {}
    for label, load in loaders.items():  # one model in memory at a time
        model = load()
        assert (type(model).__name__ == "GGUFModelPatcher") == (label != "reference")
        runs[label] = measure(model, branch)
        del model
        gc.collect()

    on_ref, out_ref = runs["reference"]
    for label in ("UnetLoaderGGUF", "dequant float32"):
        control, out = runs[label]
        errors = []
        # the fixture InfuseNet has single blocks only (tests/fixtures/model_set.py): no double-block residuals
        assert (len(control["input"]), len(on_ref["input"])) == (0, 0) and len(control["output"]) == len(on_ref["output"]) > 0
        for part in ("input", "output"):
            for a, b in zip(control[part], on_ref[part]):
                assert b.abs().max() > 0
                errors.append(rel(a, b))
        print(f"\n{kind} {label}: residual sums rel. error max {max(errors):.2e}; model output rel. error "
              f"{rel(out, out_ref):.2e} (max abs {float((out - out_ref).abs().max()):.2e})")
        # The branch reads nothing of the base's weights: its residuals are the same numbers on any base.
        assert max(errors) == 0.0
        if label == "dequant float32":  # the same weights, dequantised per layer instead of preloaded
            assert rel(out, out_ref) < 1e-5
        else:  # ComfyUI-GGUF's default dequantises through float16 (scale x quant rounded to 11 bits)
            assert rel(out, out_ref) < 2e-3
