"""The InfuseNet for FLUX.2 [klein] (infusenet/model_flux2.py) against diffusers' FLUX.2, float32.

Tiny FLUX.2-shaped models with the real key layout and random weights (devtools/flux2_pair.py). The
reference is diffusers' ``Flux2Transformer2DModel`` with the branch residuals added after each block by the
reference mapping (i // ceil(n_base / n_branch)), the branch run with diffusers' FLUX.2 blocks and the same
weights; ours is ComfyUI's FLUX.2 forward given our branch's residuals as its ``control``.
"""
from __future__ import annotations

import pytest
import torch

from devtools import flux2_pair as fp
from infusenet import host, patch
from infusenet.model_flux2 import InfuseNet2, InfuseNet2Config, init_from_base
from infusenet.trainer.blocks import train_blocks
from tests.host_features import needs_host

KLEIN_LACKS = host.flux2_klein_lacks()
needs_klein = needs_host(KLEIN_LACKS is None, f"it cannot load FLUX.2 [klein] (it lacks {KLEIN_LACKS})")

BASE_DOUBLE, BASE_SINGLE = 5, 7      # klein 4B: 5 + 20
BRANCH_DOUBLE, BRANCH_SINGLE = 2, 3  # maps double 0,0,0,1,1 and single 0,0,0,1,1,1,2
B, H, W, N_TXT, N_ID = 2, 6, 5, 6, 4
TOLERANCE = 1e-4


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module", params=[False, True], ids=["klein", "with-guidance-embedder"])
def pair(request):
    return fp.make_flux2_base(BASE_DOUBLE, BASE_SINGLE, seed=0, guidance_embed=request.param)


@pytest.fixture(scope="module")
def inputs():
    gen = torch.Generator().manual_seed(1)
    return dict(
        x=torch.randn(B, fp.LATENT_CHANNELS, H, W, generator=gen),
        control=torch.randn(B, fp.LATENT_CHANNELS, H, W, generator=gen),
        context=torch.randn(B, N_TXT, fp.TEXT_DIM, generator=gen),
        id_tokens=torch.randn(B, N_ID, fp.TEXT_DIM, generator=gen),
        sigma=torch.tensor([0.7, 0.35]),
        guidance=torch.tensor([3.5, 2.0]),
    )


def trained_branch(pair, seed: int = 2) -> InfuseNet2:
    """A branch initialised from the base, with residual projections moved off zero (as after training)."""
    net = init_from_base(pair.diffusion_model, BRANCH_DOUBLE, BRANCH_SINGLE).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.startswith("controlnet_"):
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    return net


def branch_residuals(net: InfuseNet2, pair, inputs, guidance):
    dm = pair.diffusion_model
    img, img_ids = dm.process_img(inputs["x"])
    with torch.no_grad():
        return net(img, img_ids, fp.tokens(inputs["control"]), inputs["id_tokens"], inputs["sigma"], guidance,
                   dm.pe_embedder)


@needs_klein
def test_config_is_read_from_the_flux2_base(pair):
    config = InfuseNet2Config.from_base(pair.diffusion_model)
    assert (config.hidden_size, config.head_dim, config.num_heads) == (fp.HIDDEN, fp.HEAD_DIM, fp.HIDDEN // fp.HEAD_DIM)
    assert (config.depth, config.depth_single_blocks) == (2, 5)  # the default for klein 4B
    assert config.axes_dim == fp.AXES and config.theta == 2000 and config.txt_ids_dims == (3,)
    assert config.in_channels == config.control_in_channels == 128
    assert config.context_in_dim == fp.TEXT_DIM and config.mlp_ratio == 3.0
    assert config.guidance_embed == pair.diffusion_model.params.guidance_embed
    net = InfuseNet2(config, dtype=torch.float32, operations=host.plain_operations)
    names = set(net.state_dict())
    assert {"double_stream_modulation_img.lin.weight", "double_stream_modulation_txt.lin.weight",
            "single_stream_modulation.lin.weight", "controlnet_x_embedder.weight", "controlnet_blocks.1.bias",
            "controlnet_single_blocks.4.weight"} <= names
    assert not any(k.startswith(("vector_in", "final_layer", "pe_embedder")) for k in names)
    assert not any(k.endswith(".bias") for k in names if not k.startswith("controlnet_")), "FLUX.2 layers have no bias"


@needs_klein
def test_a_flux1_base_or_a_too_deep_branch_is_refused():
    flux1 = host.Flux(final_layer=False, operations=host.plain_operations, dtype=torch.float32, **host.flux_params(
        in_channels=16, out_channels=16, vec_in_dim=32, context_in_dim=32, hidden_size=64, mlp_ratio=4.0,
        num_heads=4, depth=1, depth_single_blocks=1, axes_dim=[4, 6, 6], theta=10000, patch_size=2, qkv_bias=True,
        guidance_embed=True))
    with pytest.raises(ValueError, match="expected a FLUX.2 base.*found a Flux with 3 rotary axes"):
        InfuseNet2Config.from_base(flux1)
    base = fp.make_flux2_base(1, 2).diffusion_model
    with pytest.raises(ValueError, match="depth 2 double / 1 single .* base's 1 double / 2 single"):
        InfuseNet2Config.from_base(base, 2, 1)


@needs_klein
def test_init_from_base_copies_the_first_blocks_and_leaves_the_base_unchanged(pair, inputs):
    dm = pair.diffusion_model
    net = init_from_base(dm, BRANCH_DOUBLE, BRANCH_SINGLE)
    for i in range(BRANCH_DOUBLE):
        for k, v in net.double_blocks[i].state_dict().items():
            assert torch.equal(v, dm.double_blocks[i].state_dict()[k]), f"double_blocks.{i}.{k}"
    for j in range(BRANCH_SINGLE):
        for k, v in net.single_blocks[j].state_dict().items():
            assert torch.equal(v, dm.single_blocks[j].state_dict()[k]), f"single_blocks.{j}.{k}"
    assert torch.equal(net.double_stream_modulation_img.lin.weight, dm.double_stream_modulation_img.lin.weight)
    assert torch.equal(net.txt_in.weight, dm.txt_in.weight)
    guidance = inputs["guidance"] if dm.params.guidance_embed else None
    double, single = branch_residuals(net.eval(), pair, inputs, guidance)
    assert len(double) == BRANCH_DOUBLE and len(single) == BRANCH_SINGLE
    assert all(r.shape == (B, H * W, fp.HIDDEN) and not r.any() for r in double + single)
    control = patch.merge_control(None, double, single, BASE_DOUBLE, BASE_SINGLE)
    with torch.no_grad():
        plain = dm(inputs["x"], inputs["sigma"], inputs["context"], guidance=guidance)
        with_branch = dm(inputs["x"], inputs["sigma"], inputs["context"], guidance=guidance, control=control)
    assert torch.equal(plain, with_branch)


@needs_klein
def test_one_model_call_matches_the_diffusers_reference(pair, inputs):
    dm = pair.diffusion_model
    guidance = inputs["guidance"] if dm.params.guidance_embed else None
    net = trained_branch(pair)
    double, single = branch_residuals(net, pair, inputs, guidance)
    ref_double, ref_single = fp.DiffusersBranch(net)(
        fp.tokens(inputs["x"]), fp.tokens(inputs["control"]), inputs["id_tokens"], inputs["sigma"],
        fp.image_ids(H, W), guidance)
    for k, (ours, ref) in enumerate(zip(double + single, ref_double + ref_single)):
        assert rel(ours, ref) < TOLERANCE, f"residual {k}: {rel(ours, ref):.2e}"

    reference = fp.reference_velocity(pair, inputs["x"], inputs["sigma"], inputs["context"], ref_double, ref_single,
                                      guidance)
    without = fp.reference_velocity(pair, inputs["x"], inputs["sigma"], inputs["context"], guidance=guidance)
    control = patch.merge_control(None, double, single, BASE_DOUBLE, BASE_SINGLE)
    with torch.no_grad():
        ours = dm(inputs["x"], inputs["sigma"], inputs["context"], guidance=guidance, control=control)
    assert ours.shape == (B, fp.LATENT_CHANNELS, H, W)
    assert rel(ours, reference) < TOLERANCE, f"relative error {rel(ours, reference):.2e}"
    assert rel(without, reference) > 0.05, "the residuals must change the prediction for the check to mean anything"


@needs_klein
def test_the_shape_is_read_back_from_the_weights(pair):
    net = trained_branch(pair)
    assert InfuseNet2Config.from_state_dict(net.state_dict()) == net.config
    sd = dict(net.state_dict())
    del sd["controlnet_x_embedder.weight"]
    with pytest.raises(ValueError, match="complete FLUX.2 InfuseNet 'x.safetensors': tensor 'controlnet_x_embedder"):
        InfuseNet2Config.from_state_dict(sd, "x.safetensors")
    flux1_like = {"img_in.weight": torch.zeros(64, 64), "vector_in.in_layer.weight": torch.zeros(64, 768)}
    with pytest.raises(ValueError, match="expected FLUX.2 InfuseNet weights .* found 'f1' FLUX.1-shaped weights"):
        InfuseNet2Config.from_state_dict(flux1_like, "f1")


@needs_klein
@pytest.mark.parametrize("checkpointing", [False, True], ids=["stored", "recomputed"])
def test_the_branch_trains_through_comfyui_blocks(inputs, checkpointing):
    """From the ControlNet-style start (zero projections), a loss on the base's output reaches the projections
    and, once they move, the copied blocks, embedders and global modulation (blocks made trainable as the trainer
    does). With gradient checkpointing the gradients equal those of the stored activations (FLUX.2's blocks share
    the global modulation's outputs, passed to every block nested in ``vec``)."""
    from infusenet.trainer.blocks import release_blocks

    pair = fp.make_flux2_base(2, 3, seed=3)  # its own base: train_blocks wraps the blocks' forward
    dm = pair.diffusion_model
    net = init_from_base(dm, 1, 2)
    blocks = [*dm.double_blocks, *dm.single_blocks, *net.double_blocks, *net.single_blocks]
    img, img_ids = dm.process_img(inputs["x"])

    def backward(recompute: bool):
        release_blocks(blocks)
        train_blocks(blocks, gradient_checkpointing=recompute)
        net.zero_grad()
        with host.training_mode():
            double, single = net(img, img_ids, fp.tokens(inputs["control"]), inputs["id_tokens"], inputs["sigma"],
                                 None, dm.pe_embedder)
            control = patch.merge_control(None, double, single, 2, 3)
            x = inputs["x"].clone().requires_grad_(True)  # gives every base block output a history (as the trainer)
            dm(x, inputs["sigma"], inputs["context"], control=control).square().mean().backward()
        return {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}

    def moved(grads):
        return {name: name in grads and bool(grads[name].any()) for name, _ in net.named_parameters()}

    first = moved(backward(checkpointing))
    assert first["controlnet_blocks.0.weight"] and first["controlnet_single_blocks.1.weight"]
    assert not first["controlnet_x_embedder.weight"] and not first["double_blocks.0.img_attn.qkv.weight"]
    with torch.no_grad():
        for proj in [*net.controlnet_blocks, *net.controlnet_single_blocks]:
            proj.weight.normal_(0, 0.05)
    grads = backward(checkpointing)
    assert all(moved(grads).values()), [name for name, m in moved(grads).items() if not m]
    if checkpointing:
        stored = backward(False)
        worst = max(rel(grads[name], stored[name]) for name in stored if stored[name].any())
        assert worst < 1e-6, worst
    release_blocks(blocks)


@needs_klein
def test_tokens_of_the_wrong_width_are_refused(pair, inputs):
    net = trained_branch(pair)
    dm = pair.diffusion_model
    img, img_ids = dm.process_img(inputs["x"])
    with pytest.raises(ValueError, match="expected image and control tokens 128 wide .* found 128 and 64"):
        net(img, img_ids, fp.tokens(inputs["control"])[..., :64], inputs["id_tokens"], inputs["sigma"], None,
            dm.pe_embedder)
    with pytest.raises(ValueError, match=f"expected identity tokens {fp.TEXT_DIM} wide .* found 16"):
        net(img, img_ids, fp.tokens(inputs["control"]), inputs["id_tokens"][..., :16], inputs["sigma"], None,
            dm.pe_embedder)


@needs_host(KLEIN_LACKS is not None, "it loads FLUX.2 [klein], so there is no refusal to check")
def test_a_comfyui_without_flux2_klein_refuses_with_its_version():
    config = InfuseNet2Config(
        hidden_size=64, head_dim=32, depth=1, depth_single_blocks=1, in_channels=128, control_in_channels=128,
        context_in_dim=48, mlp_ratio=3.0, guidance_embed=False, axes_dim=(8, 8, 8, 8), theta=2000, txt_ids_dims=(3,))
    version = host.comfy_version()
    with pytest.raises(host.HostMismatch, match=rf"ComfyUI {version} cannot load FLUX.2 \[klein\].*it lacks"):
        InfuseNet2(config, dtype=torch.float32, operations=host.plain_operations)
