"""Apply InfiniteYou through its node class: the model is a clone, chained applies with disjoint masks
each change only their own region's residuals, and a pose image of the wrong size is refused."""
from __future__ import annotations

import importlib

import pytest
import torch

import comfy.sd
import comfy.utils
from devtools import host_models
from devtools import infusenet_files as files
from devtools import flux_pair as fp
from tests.nodes.conftest import PACKAGE

H, W = 8, 8  # latent -> 4x4 image tokens


@pytest.fixture(scope="module")
def parts(tmp_path_factory, pack_nodes):
    tmp = tmp_path_factory.mktemp("apply")
    weights = importlib.import_module(f"{PACKAGE}.infusenet.weights")
    identity_mod = importlib.import_module(f"{PACKAGE}.infusenet.face.identity")
    spec = files.InfuseNetSpec(hidden_size=fp.HIDDEN, head_dim=fp.HEAD_DIM, num_layers=1, num_single_layers=2,
                               axes_dims_rope=fp.AXES)
    bundle = weights.load_infusenet(files.write_infusenet_folder(str(tmp), files.random_infusenet_state_dict(spec, 1), spec))
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(host_models.write_flux_vae(tmp / "vae.safetensors"))))

    def identity(seed):
        g = torch.Generator().manual_seed(seed)
        e = torch.nn.functional.normalize(torch.randn(1, 512, generator=g), dim=1)
        ident = identity_mod.FaceIdentity(e, e[0], [[0, 0, 1, 1]], [[[0, 0]] * 5], [(1, 1)])
        ident.tokens = torch.randn(1, 8, 4096, generator=g)
        return ident

    return dict(base=fp.make_base(2, 4), bundle=bundle, vae=vae, a=identity(1), b=identity(2))


def apply(pack_nodes, model, parts, ident, mask=None, control_image=None, strength=1.0):
    return pack_nodes.ApplyInfiniteYou.execute(
        model, parts["bundle"], ident, parts["vae"], strength, 0.0, 1.0, "steps (reference)", 1.0, False,
        "positive (reference)", control_image=control_image, mask=mask)[0]


def recorded_control(model) -> dict:
    """Run one guided model call and return the control dict the FLUX forward received."""
    g = torch.Generator().manual_seed(3)
    cond = fp.conds(torch.randn(1, 8, fp.TEXT_DIM, generator=g), torch.randn(1, fp.POOLED_DIM, generator=g), 3.5)
    return fp.recorded_control(model, torch.randn(1, 16, H, W, generator=g), cond)


def test_apply_returns_a_clone_and_leaves_the_input_model_alone(pack_nodes, parts):
    base = parts["base"].patcher
    before = (dict(base.wrappers), dict(base.additional_models))
    patched = apply(pack_nodes, base, parts, parts["a"])
    assert patched is not base
    assert (dict(base.wrappers), dict(base.additional_models)) == before
    assert patched.get_additional_models_with_key("infiniteyou")


def test_disjoint_masks_change_only_their_regions(pack_nodes, parts):
    base = parts["base"].patcher
    left = torch.zeros(1, H * 8, W * 8)
    left[..., : W * 4] = 1.0
    right = 1.0 - left
    only_a = recorded_control(apply(pack_nodes, base, parts, parts["a"], mask=left))
    only_b = recorded_control(apply(pack_nodes, base, parts, parts["b"], mask=right))
    both = recorded_control(apply(pack_nodes, apply(pack_nodes, base, parts, parts["a"], mask=left), parts, parts["b"],
                                  mask=right))
    cols = torch.arange(H // 2 * W // 2) % (W // 2)
    in_left = cols < W // 4
    for kind in ("input", "output"):
        for a, b, ab in zip(only_a[kind], only_b[kind], both[kind]):
            assert a[:, ~in_left].abs().max() == 0 and a[:, in_left].abs().max() > 0
            assert b[:, in_left].abs().max() == 0 and b[:, ~in_left].abs().max() > 0
            torch.testing.assert_close(ab[:, in_left], a[:, in_left], rtol=0, atol=0)
            torch.testing.assert_close(ab[:, ~in_left], b[:, ~in_left], rtol=0, atol=0)


def test_pose_image_of_another_size_is_refused_with_the_sizes(pack_nodes, parts):
    wrong = torch.zeros(1, H * 8 + 16, W * 8, 3)
    patched = apply(pack_nodes, parts["base"].patcher, parts, parts["a"], control_image=wrong)
    with pytest.raises(Exception, match=r"control image is 64x80 but the image being generated is 64x64"):
        recorded_control(patched)
