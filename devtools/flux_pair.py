"""Tiny FLUX pairs for parity tests: a diffusers FluxTransformer2DModel and the same weights as a
ComfyUI FLUX ModelPatcher (built in-process with a config of our choice), plus reference helpers
that do what the InfiniteYou reference pipeline does with diffusers classes."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor

import comfy.latent_formats
import comfy.model_detection
import comfy.model_management
import comfy.model_patcher
import comfy.sample
import comfy.samplers
import comfy.supported_models

HIDDEN, HEAD_DIM, AXES = 64, 16, (4, 6, 6)
TEXT_DIM, POOLED_DIM = 32, 768
LATENT_FORMAT = comfy.latent_formats.Flux()


@dataclass
class Base:
    transformer: object              # diffusers FluxTransformer2DModel (float32)
    patcher: comfy.model_patcher.ModelPatcher


def make_base(n_double: int, n_single: int, seed: int = 0, hidden: int = HIDDEN, head_dim: int = HEAD_DIM,
              axes: tuple = AXES, text_dim: int = TEXT_DIM, dtype: torch.dtype = torch.float32) -> Base:
    from diffusers import FluxTransformer2DModel
    HIDDEN, HEAD_DIM, AXES, TEXT_DIM = hidden, head_dim, axes, text_dim  # noqa: N806

    torch.manual_seed(seed)
    tr = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=n_double, num_single_layers=n_single, attention_head_dim=HEAD_DIM,
        num_attention_heads=HIDDEN // HEAD_DIM, joint_attention_dim=TEXT_DIM, pooled_projection_dim=POOLED_DIM,
        guidance_embeds=True, axes_dims_rope=AXES,
    ).eval()
    with torch.no_grad():
        for name, p in tr.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0, 0.02)
    sd = comfy.model_detection.convert_diffusers_mmdit({k: v.clone() for k, v in tr.state_dict().items()}, "")
    from infusenet import host

    unet_config = dict(image_model="flux", **host.flux_params(
        in_channels=16, out_channels=16, patch_size=2, vec_in_dim=POOLED_DIM,
        context_in_dim=TEXT_DIM, hidden_size=HIDDEN, mlp_ratio=4.0, num_heads=HIDDEN // HEAD_DIM, depth=n_double,
        depth_single_blocks=n_single, axes_dim=list(AXES), theta=10000, qkv_bias=True, guidance_embed=True,
    ))
    cfg = comfy.supported_models.Flux(unet_config)
    cfg.set_inference_dtype(dtype, None)
    model = cfg.get_model({})
    missing, unexpected = model.diffusion_model.load_state_dict(sd, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    dev = comfy.model_management.get_torch_device()
    return Base(tr, comfy.model_patcher.ModelPatcher(model, load_device=dev, offload_device=dev))


def pack(x: Tensor) -> Tensor:
    """[B, C, H, W] -> [B, H/2*W/2, C*4] (channel, row-in-patch, col-in-patch order)."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(x: Tensor, h: int, w: int) -> Tensor:
    b, _, c4 = x.shape
    return x.reshape(b, h // 2, w // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c4 // 4, h, w)


def image_ids(h: int, w: int) -> Tensor:
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] = torch.arange(h // 2)[:, None]
    ids[..., 2] = torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3)


@dataclass
class Branch:
    """One InfuseNet use in the reference: diffusers controlnet and what it is fed."""

    net: object
    id_tokens: Tensor         # [1, Q, 4096]
    control_raw: Tensor       # raw VAE latent [1, 16, h, w]
    strength: float
    mask_tokens: Tensor | None = None   # [1, L, 1]
    guidance: float = 1.0


@torch.no_grad()
def reference_velocity(base: Base, branches: list[Branch], x: Tensor, sigma: float, context: Tensor, pooled: Tensor,
                       guidance: float) -> Tensor:
    """The diffusers transformer's velocity [B, 16, h, w] with summed controlnet residuals."""
    b, _, h, w = x.shape
    hs = pack(x)
    ids = image_ids(h, w)
    t = torch.full((b,), sigma)
    double = single = None
    for br in branches:
        ctrl = pack(LATENT_FORMAT.process_in(br.control_raw)).expand(b, -1, -1)
        d, s = br.net(
            hidden_states=hs, controlnet_cond=ctrl, conditioning_scale=br.strength,
            encoder_hidden_states=br.id_tokens.expand(b, -1, -1), pooled_projections=pooled.expand(b, -1),
            timestep=t, img_ids=ids, txt_ids=torch.zeros(br.id_tokens.shape[1], 3),
            guidance=torch.full((b,), br.guidance), return_dict=False,
        )
        if br.mask_tokens is not None:
            d = [r * br.mask_tokens for r in d]
            s = [r * br.mask_tokens for r in s]
        double = list(d) if double is None else [a + c for a, c in zip(double, d)]
        single = list(s) if single is None else [a + c for a, c in zip(single, s)]
    out = base.transformer(
        hidden_states=hs, timestep=t, guidance=torch.full((b,), guidance), pooled_projections=pooled.expand(b, -1),
        encoder_hidden_states=context.expand(b, -1, -1), txt_ids=torch.zeros(context.shape[1], 3), img_ids=ids,
        controlnet_block_samples=double, controlnet_single_block_samples=single, return_dict=False,
    )[0]
    return unpack(out, h, w)


def conds(context: Tensor, pooled: Tensor, guidance: float) -> list:
    return [[context, {"pooled_output": pooled, "guidance": guidance}]]


@torch.no_grad()
def comfy_denoised(patcher, x: Tensor, sigma: float, positive: list, negative: list | None, cfg: float) -> tuple[Tensor, Tensor]:
    """One model evaluation through ComfyUI's sampling path (CFGGuider, calc_cond_batch): (x fed, denoised).

    A one-call sampler records what the guider returns for input ``x`` at ``sigma``.
    """
    seen = {}

    def one_call(model, noise, sigmas, extra_args=None, callback=None, disable=None):
        seen["x"] = noise.clone()
        seen["denoised"] = model(noise, sigmas[0] * noise.new_ones(noise.shape[0]), **(extra_args or {}))
        return noise

    guider = comfy.samplers.CFGGuider(patcher)
    guider.set_conds(positive, negative if negative is not None else [])
    guider.set_cfg(cfg)
    sigmas = torch.tensor([sigma, 0.0])
    # noise scaling of CONST at sigma with an empty latent: x_in = sigma * noise
    guider.sample(x / sigma, torch.zeros_like(x), comfy.samplers.KSAMPLER(one_call), sigmas, disable_pbar=True, seed=0)
    return seen["x"], seen["denoised"]


@torch.no_grad()
def comfy_sample(patcher, noise: Tensor, steps: int, positive: list, negative: list | None, cfg: float) -> tuple[Tensor, Tensor]:
    """A full Euler run with ComfyUI's KSampler machinery. Returns (final latent in model space, sigmas)."""
    ms = patcher.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(ms, "simple", steps).float()
    guider = comfy.samplers.CFGGuider(patcher)
    guider.set_conds(positive, negative if negative is not None else [])
    guider.set_cfg(cfg)
    out = guider.sample(noise, torch.zeros_like(noise), comfy.samplers.sampler_object("euler"), sigmas, disable_pbar=True, seed=0)
    return LATENT_FORMAT.process_in(out), sigmas


def recording_euler(record: list, replay: list | None = None) -> comfy.samplers.KSAMPLER:
    """An Euler sampler that appends (x, denoised) of each step to ``record``. With ``replay`` (another run's
    record), step i is fed replay[i]'s x, so that each step compares one model call on the same input (rounding
    differences do not pile up from step to step)."""
    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None):
        s_in = x.new_ones(x.shape[0])
        for i in range(len(sigmas) - 1):
            if replay is not None:
                x = replay[i][0].clone()
            denoised = model(x, sigmas[i] * s_in, **(extra_args or {}))
            record.append((x.clone(), denoised.clone()))
            x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
        return x
    return comfy.samplers.KSAMPLER(sample)


def recorded_control(patcher, x: Tensor, positive: list, sigma: float = 0.7) -> dict:
    """One guided model call (CFG 1); returns the ``control`` dict the FLUX forward received: what
    ``Flux.forward_orig`` (the blocks) gets, after every DIFFUSION_MODEL wrapper (``patcher`` is not changed)."""
    with flux_blocks_inputs(patcher) as seen:
        comfy_denoised(patcher, x, sigma, positive, None, 1.0)
    return seen[0]["control"]


@contextlib.contextmanager
def flux_blocks_inputs(patcher):
    """Records, per FLUX forward while inside, the ``img`` tokens and the ``control`` dict that
    ``Flux.forward_orig`` receives (positional in every ComfyUI: img first, control eighth)."""
    dm = patcher.model.diffusion_model
    original = dm.forward_orig
    seen = []

    def spy(*args, **kwargs):
        seen.append({"img": args[0], "control": kwargs["control"] if "control" in kwargs else args[7]})
        return original(*args, **kwargs)

    dm.forward_orig = spy
    try:
        yield seen
    finally:
        del dm.forward_orig
