"""infusenet.host: the one module that touches ComfyUI internals, checked on the running test host.

FLUX parameters, key names, the diffusers map, the training flag and the patcher class adapt to what this
ComfyUI has. The contract and the boundary are tested in test_host_contract.py, the errors of a changed ComfyUI
against those of a corrupt file in test_host_errors.py.
"""
from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from devtools.comfy_env import comfyui_version
from infusenet import host


def test_version_is_read_from_the_running_comfyui():
    assert host.comfy_version() == comfyui_version()
    assert host.comfy_version() in host.TESTED_VERSIONS, "the suite runs on the tested hosts only"
    assert "tested with this pack" in host.version_note()
    assert "newer than the releases" in host.version_note("0.99.0")
    assert "older than 0.3.75" in host.version_note("0.3.10")


def test_flux_params_fill_in_what_this_comfyui_requires():
    wanted = dict(in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096, hidden_size=64, mlp_ratio=4.0,
                  num_heads=4, depth=1, depth_single_blocks=1, axes_dim=[4, 6, 6], theta=10000, patch_size=2,
                  qkv_bias=True, guidance_embed=True)
    params = host.flux_params(**wanted)
    fields = {f.name for f in dataclasses.fields(host.FluxParams)}
    assert set(params) <= fields and set(wanted) <= set(params)
    if "txt_ids_dims" in fields:  # ComfyUI >= 0.4
        assert params["txt_ids_dims"] == []
    with torch.device("meta"):
        host.Flux(operations=host.plain_operations, **params)


def test_flux_params_name_an_unknown_required_field(monkeypatch):
    """A later ComfyUI whose FluxParams requires a field this pack does not know: the error says so."""
    def has_default(f):
        return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING

    fields = dataclasses.fields(host.FluxParams)
    required = [(f.name, f.type) for f in fields if not has_default(f)] + [("brand_new_dims", list)]
    optional = [(f.name, f.type, dataclasses.field(default=f.default)) for f in fields if has_default(f)]
    monkeypatch.setattr(host, "FluxParams", dataclasses.make_dataclass("FluxParams", required + optional))
    with pytest.raises(host.HostMismatch, match=rf"ComfyUI {re.escape(comfyui_version())}: .*'brand_new_dims'"):
        host.flux_params(in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096, hidden_size=64,
                         mlp_ratio=4.0, num_heads=4, depth=1, depth_single_blocks=1, axes_dim=[4, 6, 6], theta=10000,
                         patch_size=2, qkv_bias=True, guidance_embed=True)


def test_norm_keys_follow_this_comfyui():
    name = host.norm_param_name()
    with torch.device("meta"):
        block = host.DoubleStreamBlock(64, 4, 4.0, qkv_bias=True, operations=host.plain_operations)
    assert f"img_attn.norm.key_norm.{name}" in block.state_dict()
    published = {"double_blocks.0.img_attn.norm.key_norm.scale": 1, "single_blocks.0.norm.query_norm.weight": 2,
                 "double_blocks.0.img_attn.qkv.weight": 3}
    assert host.to_host_keys(published) == {f"double_blocks.0.img_attn.norm.key_norm.{name}": 1,
                                            f"single_blocks.0.norm.query_norm.{name}": 2,
                                            "double_blocks.0.img_attn.qkv.weight": 3}
    assert set(host.to_published_keys(host.to_host_keys(published))) == {
        "double_blocks.0.img_attn.norm.key_norm.scale", "single_blocks.0.norm.query_norm.scale",
        "double_blocks.0.img_attn.qkv.weight"}


def test_diffusers_map_has_one_name_per_tensor_and_covers_the_model():
    import comfy.utils

    depth, single, hidden = 2, 3, 64
    key_map = host.diffusers_key_map(depth, single, hidden)
    slots = []
    for target in key_map.values():
        slots.append(target if isinstance(target, str) else (target[0], tuple(target[1]) if target[1] else None))
    assert len(slots) == len(set(slots)), "two diffusers names for one tensor"
    whole = {t for t in key_map.values() if isinstance(t, str)}
    sliced = {t[0] for t in key_map.values() if not isinstance(t, str) and t[1] is not None}
    assert not whole & sliced, "a tensor exported both whole and in slices"
    full = comfy.utils.flux_to_diffusers({"depth": depth, "depth_single_blocks": single, "hidden_size": hidden})
    print(f"ComfyUI {comfyui_version()}: flux_to_diffusers has {len(full)} names, {len(key_map)} after removing aliases")
    with torch.device("meta"):
        from infusenet.model import InfuseNet, InfuseNetConfig
        net = InfuseNet(InfuseNetConfig(hidden, 16, depth, single, 16, 64, 768, 4096, 4.0, True, True),
                        operations=host.plain_operations)
    model_keys = {k for k in net.state_dict() if not k.startswith("controlnet_")}
    assert model_keys <= whole | sliced, sorted(model_keys - whole - sliced)[:5]


def test_training_mode_sets_and_restores_the_flag():
    import comfy.model_management as mm

    has_flag = hasattr(mm, "in_training")
    with host.training_mode():
        inside = getattr(mm, "in_training", None)
    assert getattr(mm, "in_training", None) == (False if has_flag else None)
    assert inside is (True if has_flag else None)


def test_rotary_attention_backpropagates_in_training_mode():
    """ComfyUI >= 0.8 runs rotary embedding through a kernel without autograd unless in training."""
    import comfy.ldm.flux.layers as layers
    import comfy.ldm.flux.math as flux_math

    pe = layers.EmbedND(dim=16, theta=10000, axes_dim=[4, 6, 6])(torch.randn(1, 6, 3))
    q = torch.randn(1, 4, 6, 16, requires_grad=True)
    k, v = torch.randn(1, 4, 6, 16), torch.randn(1, 4, 6, 16)
    with host.training_mode():
        flux_math.attention(q, k, v, pe).square().sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0


def test_patchers_are_the_class_core_loaders_use_and_can_be_rebuilt():
    import comfy.model_patcher

    rebuilt = []

    def reload(tag, disable_dynamic=False):
        rebuilt.append((tag, disable_dynamic))
        return host.new_patcher(torch.nn.Linear(2, 2), torch.device("cpu"), torch.device("cpu"))

    patcher = host.new_patcher(torch.nn.Linear(2, 2), torch.device("cpu"), torch.device("cpu"), reload=(reload, ("x",)))
    assert type(patcher) is getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)
    if not hasattr(patcher, "cached_patcher_init"):
        return  # ComfyUI 0.3.75: no multi-GPU clones, nothing to register
    assert patcher.cached_patcher_init == (reload, ("x",))
    clone = patcher.deepclone_multigpu(new_load_device=torch.device("cpu"))
    assert rebuilt == [("x", False)] and clone.model is not patcher.model
