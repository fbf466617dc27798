"""Identity From Images through its node class: the identity does not depend on the InfuseNet (no InfuseNet
link, so ComfyUI's cache keeps it when the InfuseNet changes), and Apply InfiniteYou projects it once, to the
same numbers as the patch fed this InfuseNet's own tokens."""
from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
import torch

import comfy.sd
import comfy.utils
from devtools import face_models
from devtools import flux_pair as fp
from devtools import host_models
from devtools import infusenet_files as files
from devtools.comfy_env import PACK_ROOT
from tests.fixtures.shared_files import shared_arcface
from tests.nodes.conftest import PACKAGE

H, W = 8, 8  # latent -> 4x4 image tokens
SIGMA = 0.7


@pytest.fixture(scope="module")
def parts(tmp_path_factory, pack_nodes):
    tmp = tmp_path_factory.mktemp("face-nodes")
    weights = importlib.import_module(f"{PACKAGE}.infusenet.weights")
    encoder_mod = importlib.import_module(f"{PACKAGE}.infusenet.face.encoder")
    spec = files.InfuseNetSpec(hidden_size=fp.HIDDEN, head_dim=fp.HEAD_DIM, num_layers=1, num_single_layers=2,
                               axes_dims_rope=fp.AXES)
    folder = tmp / "aes_stage2"
    path = files.write_infusenet_folder(str(folder), files.random_infusenet_state_dict(spec, 3), spec)
    files.write_projection_bin(str(folder / "image_proj_model.bin"),
                               files.random_resampler_state_dict(files.ResamplerSpec(), 4))
    bundle = weights.load_infusenet(path, str(folder / "image_proj_model.bin"))
    arcface = shared_arcface(tmp_path_factory, tmp / "arcface.pth", seed=2)
    encoder = encoder_mod.load_face_encoder(face_models.write_insightface_root(tmp / "insightface"), arcface)
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(host_models.write_flux_vae(tmp / "vae.safetensors"))))
    photo = torch.from_numpy(face_models.draw_faces((256, 256), [(72, 56, 184, 200)], texture_seed=7)).float()[None]
    return dict(base=fp.make_base(2, 4), bundle=bundle, encoder=encoder, vae=vae, photo=photo, weights=weights)


def identity_inputs(pack_nodes) -> dict[str, dict[str, list]]:
    return pack_nodes.IdentityFromImages.INPUT_TYPES()


def test_the_identity_node_needs_no_infusenet(pack_nodes):
    inputs = identity_inputs(pack_nodes)
    assert "infusenet" not in inputs["required"]
    kind, options = inputs["optional"]["infusenet"]  # kept for workflows saved with the link
    assert kind == "INFU_INFUSENET" and options["advanced"] is True and "Not used" in options["tooltip"]


def test_no_shipped_workflow_links_an_infusenet_into_the_identity_node():
    linked = []
    for path in sorted((PACK_ROOT / "workflows").glob("*.json")):
        for node in json.loads(path.read_text())["nodes"]:
            if node["type"] == "InfU_IdentityFromImages":
                linked += [path.name for i in node.get("inputs", []) if i["name"] == "infusenet" and i.get("link")]
    assert linked == []


def test_apply_projects_the_identity_once_to_the_same_numbers(pack_nodes, parts):
    bundle = parts["bundle"]
    projections = []
    hook = bundle.resampler.register_forward_hook(lambda module, args, out: projections.append(out.detach()))
    try:
        identity = pack_nodes.IdentityFromImages.execute(parts["encoder"], parts["photo"], "largest", 0, "auto")[0]
        assert identity.tokens is None and projections == []
        out = pack_nodes.ApplyInfiniteYou.execute(parts["base"].patcher, bundle, identity, parts["vae"], 1.0, 0.0, 1.0,
                                                  "steps (reference)", 1.0, False, "positive (reference)")
    finally:
        hook.remove()
    assert len(projections) == 1
    assert json.loads(out.ui["infu_report"][0])["reprojected"] is False
    patch = importlib.import_module(f"{PACKAGE}.infusenet.patch")
    tokens = parts["weights"].project_identity(bundle, identity.embedding)
    direct = patch.apply_infiniteyou(parts["base"].patcher, bundle, tokens,
                                     control_latent=pack_nodes.infusenet.pose_latent(parts["vae"], None))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, H, W, generator=g)
    cond = fp.conds(torch.randn(1, 8, fp.TEXT_DIM, generator=g), torch.randn(1, fp.POOLED_DIM, generator=g), 3.5)
    through_nodes = fp.comfy_denoised(out[0], x, SIGMA, cond, None, 1.0)[1]
    assert torch.equal(through_nodes, fp.comfy_denoised(direct, x, SIGMA, cond, None, 1.0)[1])
    assert through_nodes.abs().max() > 0


def test_a_prompt_saved_with_the_infusenet_link_still_runs_the_node(pack_nodes, parts):
    """What ComfyUI passes for a workflow saved before: the InfuseNet as a keyword; the identity is the same."""
    plain = pack_nodes.IdentityFromImages.execute(parts["encoder"], parts["photo"], "largest", 0, "auto")[0]
    linked = pack_nodes.IdentityFromImages.execute(parts["encoder"], parts["photo"], "largest", 0, "auto",
                                                   infusenet=parts["bundle"])[0]
    assert torch.equal(plain.embedding, linked.embedding) and linked.tokens is None
    assert np.allclose(plain.boxes, linked.boxes)
