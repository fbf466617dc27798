"""Models the InfuseNet cannot serve are refused with a message that names the family: FLUX.2 (a FLUX
class with four rotary axes and global modulation), Chroma (its own class, no pooled-text input), and
non-FLUX models. Tiny models of each family are built on the meta device from ComfyUI's own configs."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import comfy.ldm.flux.model
import comfy.model_patcher
import comfy.supported_models
from infusenet import patch, weights
from infusenet.weights import InfiniteYouError
from devtools import infusenet_files as files
from devtools import flux_pair as fp

FLUX2 = dict(image_model="flux2", axes_dim=[4, 4, 4, 4], num_heads=2, hidden_size=32, mlp_ratio=3.0, theta=2000,
             in_channels=128, out_channels=128, global_modulation=True, vec_in_dim=None, mlp_silu_act=True,
             qkv_bias=False, ops_bias=False, patch_size=1, context_in_dim=32, depth=1, depth_single_blocks=1,
             guidance_embed=True)
CHROMA = dict(image_model="chroma", in_channels=64, out_channels=64, in_dim=64, out_dim=32, hidden_dim=32, n_layers=1,
              axes_dim=[4, 6, 6], num_heads=2, hidden_size=32, mlp_ratio=4.0, theta=10000, patch_size=2,
              qkv_bias=True, context_in_dim=32, depth=1, depth_single_blocks=1)


NEWER_FIELDS = {"flux2": {"txt_ids_dims": [3]}, "chroma": {"txt_ids_dims": [], "vec_in_dim": None}}
"""Parameters newer ComfyUI requires (0.4+), given only where the running one has them."""


def meta_model(config_class, unet_config: dict):
    import comfy.ldm.chroma.model

    params = comfy.ldm.chroma.model.ChromaParams if unet_config["image_model"] == "chroma" else comfy.ldm.flux.model.FluxParams
    fields = {f.name for f in dataclasses.fields(params)}
    unet_config = dict(unet_config, **{k: v for k, v in NEWER_FIELDS[unet_config["image_model"]].items() if k in fields})
    config = config_class(dict(unet_config))
    config.set_inference_dtype(torch.float32, None)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(config.get_model({}, device="meta"), load_device=cpu, offload_device=cpu)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    spec = files.InfuseNetSpec(hidden_size=fp.HIDDEN, head_dim=fp.HEAD_DIM, num_layers=1, num_single_layers=1,
                               axes_dims_rope=fp.AXES)
    folder = str(tmp_path_factory.mktemp("refused"))
    return weights.load_infusenet(files.write_infusenet_folder(folder, files.random_infusenet_state_dict(spec, 1), spec))


@pytest.mark.parametrize("config_class,unet_config,family", [
    (comfy.supported_models.Flux2, FLUX2, "FLUX.2"),
    (comfy.supported_models.Chroma, CHROMA, "Chroma"),
], ids=["FLUX.2", "Chroma"])
def test_other_flux_families_are_refused_by_name(bundle, config_class, unet_config, family):
    model = meta_model(config_class, unet_config)
    with pytest.raises(InfiniteYouError) as e:
        patch.apply_infiniteyou(model, bundle, torch.zeros(1, 8, 4096), torch.zeros(1, 16, 8, 8))
    message = str(e.value)
    assert f"this one is {family} (" in message and "FLUX.1 dev, schnell, Fill, Kontext" in message, message
    print(f"\n{family}: {message}")
