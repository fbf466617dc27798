"""Apply InfiniteYou together with a stock ComfyUI FLUX ControlNet on the same model: the FLUX forward
receives, block by block, exactly the ControlNet's residuals plus InfiniteYou's."""
from __future__ import annotations

import torch

import comfy.controlnet
import comfy.latent_formats
import comfy.ldm.flux.controlnet
import comfy.ops
from infusenet import host, patch, weights
from devtools import host_models
from devtools import infusenet_files as files
from devtools import flux_pair as fp

H = W = 8


def stock_flux_controlnet(seed: int = 5) -> comfy.controlnet.ControlNet:
    """ComfyUI's own ControlNetFlux (InstantX layout) at the test width, wrapped as ComfyUI wraps it."""
    config = dict(image_model="flux", **host.flux_params(
        in_channels=16, out_channels=16, patch_size=2, vec_in_dim=fp.POOLED_DIM, context_in_dim=fp.TEXT_DIM,
        hidden_size=fp.HIDDEN, mlp_ratio=4.0, num_heads=fp.HIDDEN // fp.HEAD_DIM, depth=2, depth_single_blocks=2,
        axes_dim=list(fp.AXES), theta=10000, qkv_bias=True, guidance_embed=True))
    with torch.device("meta"):
        meta = comfy.ldm.flux.controlnet.ControlNetFlux(latent_input=True, control_latent_channels=16,
                                                        operations=comfy.ops.disable_weight_init, **config)
    sd = host_models.random_state_dict(meta, torch.Generator().manual_seed(seed))
    model = comfy.ldm.flux.controlnet.ControlNetFlux(latent_input=True, control_latent_channels=16,
                                                     operations=comfy.ops.disable_weight_init, **config)
    model.load_state_dict(sd)
    return comfy.controlnet.ControlNet(model, compression_ratio=1, latent_format=comfy.latent_formats.Flux(),
                                      load_device=torch.device("cpu"), manual_cast_dtype=None,
                                      extra_conds=["y", "guidance"])


def recorded_control(model, cond) -> dict:
    return fp.recorded_control(model, torch.randn(1, 16, H, W, generator=torch.Generator().manual_seed(9)), cond)


def test_controlnet_and_infiniteyou_residuals_sum(tmp_path):
    import comfy.sd
    import comfy.utils

    base = fp.make_base(2, 4).patcher
    spec = files.InfuseNetSpec(hidden_size=fp.HIDDEN, head_dim=fp.HEAD_DIM, num_layers=1, num_single_layers=2,
                               axes_dims_rope=fp.AXES)
    bundle = weights.load_infusenet(files.write_infusenet_folder(str(tmp_path), files.random_infusenet_state_dict(spec, 2), spec))
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(host_models.write_flux_vae(tmp_path / "vae.safetensors"))))
    tokens = torch.randn(1, 8, 4096, generator=torch.Generator().manual_seed(4))

    g = torch.Generator().manual_seed(3)
    context, pooled = torch.randn(1, 8, fp.TEXT_DIM, generator=g), torch.randn(1, fp.POOLED_DIM, generator=g)
    hint = torch.rand(1, 3, H * 8, W * 8, generator=g)
    cnet = stock_flux_controlnet().set_cond_hint(hint, 0.8, (0.0, 1.0), vae=vae)
    plain = fp.conds(context, pooled, 3.5)
    with_cnet = [[context, {"pooled_output": pooled, "guidance": 3.5, "control": cnet, "control_apply_to_uncond": False}]]

    infu = patch.apply_infiniteyou(base, bundle, tokens, strength=1.0, vae=vae)
    only_cnet = recorded_control(base, with_cnet)
    only_infu = recorded_control(infu, plain)
    both = recorded_control(infu, with_cnet)

    for kind, n_base in (("input", 2), ("output", 4)):
        for i in range(n_base):
            c, u, b = only_cnet[kind][i], only_infu[kind][i], both[kind][i]
            assert c.abs().max() > 0 and u.abs().max() > 0
            torch.testing.assert_close(b, c + u, rtol=1e-6, atol=1e-6)
