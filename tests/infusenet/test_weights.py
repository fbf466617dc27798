"""Loaders: diffusers folder, bf16 and fp8 single files, Resampler files, and their error messages."""
from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from infusenet import patch, resampler, weights
from infusenet.weights import InfiniteYouError
from devtools import infusenet_files as files
from devtools import flux_pair as fp
from tests.measurements import record

SPEC = files.InfuseNetSpec(hidden_size=fp.HIDDEN, head_dim=fp.HEAD_DIM, num_layers=2, num_single_layers=3, axes_dims_rope=fp.AXES)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    folder = tmp_path_factory.mktemp("iy")
    sd = files.random_infusenet_state_dict(SPEC, seed=3)
    return files.write_all(str(folder), SPEC, files.ResamplerSpec(num_queries=16), state_dict=sd), sd


def test_every_form_loads_with_config_from_weights(written):
    paths, sd = written
    bundles = {form: weights.load_infusenet(paths[form]) for form in ("folder", "bf16", "fp8")}
    for form, b in bundles.items():
        c = b.config
        assert (c.hidden_size, c.head_dim, c.depth, c.depth_single_blocks) == (64, 16, 2, 3), form
        assert (c.in_channels, c.control_in_channels, c.context_in_dim, c.vec_in_dim, c.guidance_embed) == (16, 64, 4096, 768, True)
        assert b.variant == "aes_stage2"
        assert b.patcher.load_device is not None and b.patcher.offload_device is not None
    assert bundles["folder"].num_tokens == 16  # image_proj_model.bin found beside the folder
    held = {torch.bfloat16: "bf16", torch.float32: "fp32"}[bundles["bf16"].model.img_in.weight.dtype]
    assert bundles["bf16"].precision == ("bf16" if held == "bf16" else f"{held} (bf16 file)")
    assert bundles["fp8"].precision == "fp8_e4m3fn"
    # the folder and the bf16 file hold the same numbers
    a, b = bundles["folder"].model.state_dict(), bundles["bf16"].model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # fp8 stays fp8 in memory; ComfyUI's manual_cast ops compute in a wider dtype
    fp8 = bundles["fp8"].model
    assert fp8.double_blocks[0].img_attn.qkv.weight.dtype == torch.float8_e4m3fn
    assert fp8.controlnet_blocks[0].weight.dtype == torch.float8_e4m3fn
    assert fp8.compute_dtype in (torch.float32, torch.bfloat16, torch.float16)


def test_fp8_parity(tmp_path):
    """fp8 file through the pack vs the diffusers branch with the same fp8-rounded weights: < 1e-4.
    Against the full-precision branch the fp8 rounding alone moves the prediction: < 5e-2."""
    from tests.infusenet.test_patch import SIGMA, inputs, rel

    base = fp.make_base(2, 4)
    spec = files.InfuseNetSpec(hidden_size=fp.HIDDEN, head_dim=fp.HEAD_DIM, num_layers=1, num_single_layers=2, axes_dims_rope=fp.AXES)
    net = files.make_controlnet(spec, 11)
    full = {k: v.clone() for k, v in net.state_dict().items()}
    path = files.write_single_file(str(tmp_path / "infusenet_fp8e4m3fn.safetensors"), full, "fp8")
    bundle = weights.load_infusenet(path)
    d = inputs(8)
    patched = patch.apply_infiniteyou(base.patcher, bundle, d["id_tokens"], d["control"], strength=1.0)
    x_in, got = fp.comfy_denoised(patched, d["x"], SIGMA, fp.conds(d["context"], d["pooled"], 3.5), None, 1.0)
    # what the pack holds: the file's tensors (matrices fp8, vectors bf16) in an all-fp8 module, as ComfyUI
    # holds its own fp8 models
    net.load_state_dict({k: v.to(torch.float8_e4m3fn).float() for k, v in files.to_fp8(full).items()})
    v8 = fp.reference_velocity(base, [fp.Branch(net, d["id_tokens"], d["control"], 1.0)], x_in, SIGMA, d["context"], d["pooled"], 3.5)
    record("parity, fp8 InfuseNet vs fp8-rounded weights in diffusers (relative error)", rel(got, x_in - SIGMA * v8))
    assert rel(got, x_in - SIGMA * v8) < 1e-4
    net.load_state_dict(full)
    vf = fp.reference_velocity(base, [fp.Branch(net, d["id_tokens"], d["control"], 1.0)], x_in, SIGMA, d["context"], d["pooled"], 3.5)
    record("parity, fp8 InfuseNet vs full-precision weights in diffusers (relative error)", rel(got, x_in - SIGMA * vf))
    assert rel(got, x_in - SIGMA * vf) < 5e-2


def _reference_resampler(sd: dict, x: torch.Tensor, heads: int) -> torch.Tensor:
    """The perceiver resampler written independently with scaled_dot_product_attention."""
    def ln(t, p):
        return F.layer_norm(t, t.shape[-1:], sd[p + ".weight"], sd[p + ".bias"])

    lat = sd["latents"].expand(x.shape[0], -1, -1)
    x = F.linear(x, sd["proj_in.weight"], sd["proj_in.bias"])
    i = 0
    while f"layers.{i}.0.to_q.weight" in sd:
        p = f"layers.{i}."
        xn, ln_ = ln(x, p + "0.norm1"), ln(lat, p + "0.norm2")
        q = F.linear(ln_, sd[p + "0.to_q.weight"])
        k, v = F.linear(torch.cat([xn, ln_], 1), sd[p + "0.to_kv.weight"]).chunk(2, -1)
        split = lambda t: t.unflatten(-1, (heads, -1)).transpose(1, 2)
        o = F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).flatten(2)
        lat = lat + F.linear(o, sd[p + "0.to_out.weight"])
        h = F.gelu(F.linear(ln(lat, p + "1.0"), sd[p + "1.1.weight"]))
        lat = lat + F.linear(h, sd[p + "1.3.weight"])
        i += 1
    return F.layer_norm(F.linear(lat, sd["proj_out.weight"], sd["proj_out.bias"]), (sd["norm_out.weight"].shape[0],),
                        sd["norm_out.weight"], sd["norm_out.bias"])


@pytest.mark.parametrize("queries", [8, 16])
def test_resampler_bin_and_safetensors(tmp_path, queries):
    spec = files.ResamplerSpec(dim=128, depth=2, heads=2, num_queries=queries)
    sd = files.random_resampler_state_dict(spec, seed=queries)
    bin_path = files.write_projection_bin(str(tmp_path / "image_proj_model.bin"), sd)
    st_path = files.write_projection_safetensors(str(tmp_path / "image_proj.safetensors"), sd)
    a, b = weights.load_resampler(bin_path), weights.load_resampler(st_path)
    assert a.config == b.config == resampler.ResamplerConfig(128, 2, 2, 64, queries, 512, 4096, 4)
    emb = F.normalize(torch.randn(512), dim=0)
    tokens = weights.project_identity(a, emb)
    assert tokens.shape == (1, queries, 4096)
    assert torch.equal(tokens, weights.project_identity(b, emb))
    ref = _reference_resampler(sd, emb.reshape(1, 1, 512), heads=2)
    assert float((tokens - ref).norm() / ref.norm()) < 1e-5


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "image_proj_model.bin"
    torch.save({"image_proj": {"latents": torch.zeros(1, 8, 64)}, "x": _Evil()}, str(path))
    with pytest.raises(InfiniteYouError, match=r"image_proj_model\.bin.*Refused|Refused.*image_proj_model\.bin"):
        weights.load_resampler(str(path))


def test_truncated_safetensors(written, tmp_path):
    paths, _ = written
    data = open(paths["bf16"], "rb").read()
    cut = tmp_path / "infusenet_aes_bf16.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InfiniteYouError, match="truncated or corrupt") as e:
        weights.load_infusenet(str(cut))
    assert str(cut) in str(e.value)


def test_not_an_infusenet(tmp_path):
    base = fp.make_base(1, 1)
    from safetensors.torch import save_file
    path = tmp_path / "flux_transformer.safetensors"
    save_file({k: v.contiguous() for k, v in base.transformer.state_dict().items()}, str(path))
    with pytest.raises(InfiniteYouError) as e:
        weights.load_infusenet(str(path))
    msg = str(e.value)
    assert str(path) in msg and "controlnet_x_embedder.weight" in msg and "not an InfuseNet" in msg


def test_hidden_size_mismatch_and_non_flux(tmp_path):
    base = fp.make_base(1, 1)
    spec = files.InfuseNetSpec(hidden_size=32, head_dim=16, num_layers=1, num_single_layers=1, axes_dims_rope=fp.AXES)
    path = files.write_single_file(str(tmp_path / "small.safetensors"), files.random_infusenet_state_dict(spec), "bf16")
    bundle = weights.load_infusenet(path)
    tokens = torch.zeros(1, 8, 4096)
    with pytest.raises(InfiniteYouError, match=r"hidden size 32 but the base model has 64") as e:
        patch.apply_infiniteyou(base.patcher, bundle, tokens, torch.zeros(1, 16, 8, 8))
    assert "small.safetensors" in str(e.value)

    import comfy.model_patcher
    import comfy.supported_models
    sd3 = comfy.supported_models.SD3({
        "in_channels": 16, "patch_size": 2, "depth": 1, "adm_in_channels": 32, "num_patches": 64,
        "pos_embed_max_size": 8, "pos_embed_scaling_factor": None,
        "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 32, "out_features": 64}},
    })
    sd3.set_inference_dtype(torch.float32, None)
    other = comfy.model_patcher.ModelPatcher(sd3.get_model({}), torch.device("cpu"), torch.device("cpu"))
    with pytest.raises(InfiniteYouError, match="needs a FLUX.1 model.*SD3"):
        patch.apply_infiniteyou(other, bundle, tokens, torch.zeros(1, 16, 8, 8))


def test_paths_register_both_folders(tmp_path, monkeypatch):
    import folder_paths
    from infusenet import paths

    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, paths.FOLDER_NAME, ([], set()))
    registered = paths.register_model_folders()
    assert registered == [str(tmp_path / "infiniteyou"), str(tmp_path / "infinite_you")]
    sd = files.random_infusenet_state_dict(files.InfuseNetSpec(num_layers=1, num_single_layers=1))
    files.write_infusenet_folder(str(tmp_path / "infiniteyou" / "infu_flux_v1.0" / "sim_stage1"), sd, files.InfuseNetSpec(num_layers=1, num_single_layers=1))
    files.write_single_file(str(tmp_path / "infinite_you" / "aes_stage2" / "infusenet_aes_fp8e4m3fn.safetensors"), sd, "fp8")
    files.write_projection_bin(str(tmp_path / "infinite_you" / "aes_stage2" / "image_proj_model.bin"),
                               files.random_resampler_state_dict(files.ResamplerSpec()))
    folder_paths.filename_list_cache.clear()
    assert paths.list_infusenet_models() == ["aes_stage2/infusenet_aes_fp8e4m3fn.safetensors",
                                             "infu_flux_v1.0/sim_stage1/InfuseNetModel"]
    assert paths.list_projection_models() == ["aes_stage2/image_proj_model.bin"]
    assert os.path.isdir(paths.resolve_model_path("infu_flux_v1.0/sim_stage1/InfuseNetModel"))
    b = weights.load_infusenet(paths.resolve_model_path("aes_stage2/infusenet_aes_fp8e4m3fn.safetensors"))
    assert b.num_tokens == 8 and b.variant == "aes_stage2"


def test_flux_width_spec_is_quick_to_generate():
    import time
    t = time.time()
    sd = files.random_infusenet_state_dict(files.FLUX_WIDTH_SPEC)
    assert time.time() - t < 20
    assert sd["x_embedder.weight"].shape == (3072, 64) and sd["context_embedder.weight"].shape == (3072, 4096)
    assert sd["transformer_blocks.0.attn.norm_k.weight"].shape == (128,)
    assert float(sd["controlnet_blocks.0.weight"].float().abs().mean()) > 0


def test_keys_this_comfyui_names_differently_blame_the_host_not_the_file(tmp_path, monkeypatch):
    """A ComfyUI whose FLUX blocks name a tensor differently from the file: the error names the ComfyUI
    version and the change, says the file is fine, and never asks for a new download."""
    from infusenet import host

    sd = weights.to_comfy_keys(files.random_infusenet_state_dict(files.InfuseNetSpec(), 1))
    other = "scale" if host.norm_param_name() == "weight" else "weight"
    renamed = {k.replace(f"_norm.{host.norm_param_name()}", f"_norm.{other}"): v for k, v in sd.items()}
    assert renamed != sd
    monkeypatch.setattr(host, "to_host_keys", lambda state: state)  # a pack that did not adapt
    with pytest.raises(InfiniteYouError) as err:
        weights.build_infusenet(renamed, "infusenet_aes_bf16.safetensors")
    message = str(err.value)
    assert f"ComfyUI {host.comfy_version()}" in message and "The file is fine" in message
    assert f"_norm.{other}" in message and "download" not in message.lower()
    monkeypatch.undo()
    patcher, config, _ = weights.build_infusenet(renamed, "infusenet_aes_bf16.safetensors")  # adapted: loads
    assert config.depth == files.InfuseNetSpec().num_layers


def test_variant_is_read_from_the_model_names_not_the_folders_above(tmp_path):
    """A home folder called 'sim' (or 'aes') says nothing about the variant."""
    spec = files.InfuseNetSpec(num_layers=1, num_single_layers=1)
    sd = files.random_infusenet_state_dict(spec)
    aes = files.write_single_file(str(tmp_path / "home" / "sim" / "models" / "infiniteyou" / "aes_stage2" /
                                      "infusenet_aes_bf16.safetensors"), sd, "bf16")
    plain = files.write_single_file(str(tmp_path / "simulations" / "sim" / "models" / "infiniteyou" /
                                        "my_infusenet.safetensors"), sd, "bf16")
    assert weights.load_infusenet(aes).variant == "aes_stage2"
    assert weights.load_infusenet(plain).variant == "unknown"
    assert weights.guess_variant("/home/sim/ComfyUI/models/infiniteyou/infu_flux_v1.0/aes_stage2/InfuseNetModel") == "aes_stage2"
    assert weights.guess_variant("/home/aes/models/infiniteyou/infu_flux_v1.0/sim_stage1/InfuseNetModel") == "sim_stage1"
    assert weights.guess_variant("sim_stage1/infusenet_sim_bf16.safetensors") == "sim_stage1"


def test_precision_label_is_what_is_held_in_memory(written):
    paths, _ = written
    fp8 = weights.load_infusenet(paths["bf16"], dtype=torch.float8_e4m3fn)
    assert fp8.model.double_blocks[0].img_attn.qkv.weight.dtype == torch.float8_e4m3fn
    assert fp8.precision.startswith("fp8_e4m3fn"), fp8.precision
    assert "bf16" in fp8.precision  # and it says what the file held
    default = weights.load_infusenet(paths["fp8"])
    assert default.precision == "fp8_e4m3fn"


def test_identity_projection_is_a_comfy_managed_model(written):
    """The projection is loaded and offloaded by ComfyUI's model management, not moved per identity."""
    import comfy.model_management as mm

    paths, _ = written
    bundle = weights.load_infusenet(paths["folder"])
    emb = F.normalize(torch.randn(512, generator=torch.Generator().manual_seed(0)), dim=0)
    tokens = weights.project_identity(bundle, emb)
    assert any(getattr(m.model, "model", None) is bundle.resampler for m in mm.current_loaded_models)
    mm.unload_all_models()
    assert not any(getattr(m.model, "model", None) is bundle.resampler for m in mm.current_loaded_models)
    torch.testing.assert_close(weights.project_identity(bundle, emb), tokens)


# ---------------------------------------------------------------- scaled fp8 (a scale per weight, as ComfyUI's)
FP8_MAX = 448.0  # the largest float8_e4m3fn value


def scaled_fp8(sd: dict, scale_name: str = "scale_weight") -> tuple[dict, dict]:
    """(the file's tensors, the weights they stand for): every weight matrix as fp8 with its own float32 scale
    (``amax / 448``, as ComfyUI's scaled fp8 checkpoints are made) under ``<layer>.<scale_name>``, vectors bf16, and
    the ``scaled_fp8`` marker; and the dequantised float32 weights (``fp8 * scale``)."""
    file, meant = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}, {}
    for key, value in sd.items():
        if value.ndim >= 2 and key.endswith(".weight"):
            scale = (value.float().abs().amax() / FP8_MAX).clamp(min=1e-12)
            q = (value.float() / scale).to(torch.float8_e4m3fn)
            file[key], file[key[:-len("weight")] + scale_name] = q, scale.reshape(())
            meant[key] = q.float() * scale
        else:
            file[key] = value.to(torch.bfloat16)
            meant[key] = file[key].float()
    return file, meant


def _write(path, sd: dict) -> str:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return str(path)


def _denoised(base, bundle, d):
    from tests.infusenet.test_patch import SIGMA

    patched = patch.apply_infiniteyou(base.patcher, bundle, d["id_tokens"], d["control"], strength=1.0)
    return fp.comfy_denoised(patched, d["x"], SIGMA, fp.conds(d["context"], d["pooled"], 3.5), None, 1.0)


SCALED_SPEC = files.InfuseNetSpec(hidden_size=fp.HIDDEN, head_dim=fp.HEAD_DIM, num_layers=1, num_single_layers=2,
                                  axes_dims_rope=fp.AXES)


@pytest.mark.parametrize("scale_name", ["scale_weight", "weight_scale"])
def test_scaled_fp8_in_comfyui_layout_computes_with_its_scales(tmp_path, scale_name):
    """A scaled fp8 InfuseNet in ComfyUI's key layout (what a ComfyUI tool would write) runs through ComfyUI's own
    scaled fp8 operations: the same prediction as the float32 weights it stands for; read with its scales dropped
    (what the pack did before) the prediction is far off or not finite."""
    from tests.infusenet.test_patch import SIGMA, inputs, rel

    base = fp.make_base(2, 4)
    comfy_sd = weights.to_comfy_keys(files.make_controlnet(SCALED_SPEC, 11).state_dict())
    file, meant = scaled_fp8(comfy_sd, scale_name)
    scaled_path = _write(tmp_path / "infusenet_scaled_fp8.safetensors", file)
    scaled = weights.load_infusenet(scaled_path)
    widened = weights.load_infusenet(scaled_path, dtype=torch.float32)  # asked for float32: scales multiplied in
    reference = weights.load_infusenet(_write(tmp_path / "infusenet_dequantised_fp32.safetensors", meant))
    unscaled = weights.load_infusenet(_write(tmp_path / "infusenet_scales_dropped_fp8.safetensors",
                                             {k: v for k, v in file.items() if not k.endswith(scale_name)
                                              and k != "scaled_fp8"}))
    assert scaled.precision == "fp8_e4m3fn scaled" and weights.is_scaled(weights.to_comfy_keys(file))
    d = inputs(8)
    _, off = fp.comfy_denoised(base.patcher, d["x"], SIGMA, fp.conds(d["context"], d["pooled"], 3.5), None, 1.0)
    branch = {name: _denoised(base, bundle, d)[1] - off
              for name, bundle in (("scaled", scaled), ("meant", reference), ("dropped", unscaled), ("widened", widened))}
    error, dropped = rel(branch["scaled"], branch["meant"]), rel(branch["dropped"], branch["meant"])
    record(f"scaled fp8 InfuseNet ({scale_name}) vs the float32 weights it stands for (relative error of the branch's "
           "change to the prediction)", error)
    assert error < 5e-3, error  # 2e-7 where ComfyUI keeps biases wide (0.30), 2e-3 where its scaled ops hold them in
    #                             fp8 too (0.3.75's scaled_fp8_ops, as for its own checkpoints)
    assert math.isnan(dropped) or dropped > 0.5, dropped  # fp8 values 448x too large: overflow, or far off
    assert rel(branch["widened"], branch["meant"]) < 1e-5 and widened.model.img_in.weight.dtype == torch.float32


def test_scaled_fp8_in_diffusers_layout_matches_the_diffusers_branch(tmp_path):
    """Diffusers key names (what a converter run on the published bf16 file writes): q/k/v and the single blocks'
    projections are fused into one ComfyUI layer, which shares the largest of their scales (the other parts are
    rounded to fp8 once more). Against diffusers' FluxControlNetModel holding the dequantised weights."""
    from tests.infusenet.test_patch import SIGMA, inputs, rel

    base = fp.make_base(2, 4)
    net = files.make_controlnet(SCALED_SPEC, 12)
    sd = net.state_dict()
    for key, factor in (("transformer_blocks.0.attn.to_k.weight", 0.25), ("transformer_blocks.0.attn.to_v.weight", 3.0),
                        ("single_transformer_blocks.0.proj_mlp.weight", 0.1)):
        sd[key] = sd[key] * factor  # parts of one fused layer with scales far apart, as trained layers have
    file, meant = scaled_fp8(sd)
    bundle = weights.load_infusenet(_write(tmp_path / "infusenet_scaled_fp8.safetensors", file))
    assert bundle.precision == "fp8_e4m3fn scaled"
    d = inputs(9)
    x_in, got = _denoised(base, bundle, d)
    _, off = fp.comfy_denoised(base.patcher, d["x"], SIGMA, fp.conds(d["context"], d["pooled"], 3.5), None, 1.0)
    net.load_state_dict(meant)
    v = fp.reference_velocity(base, [fp.Branch(net, d["id_tokens"], d["control"], 1.0)], x_in, SIGMA, d["context"],
                              d["pooled"], 3.5)
    v_off = fp.reference_velocity(base, [], x_in, SIGMA, d["context"], d["pooled"], 3.5)
    error = rel(got - off, SIGMA * (v_off - v))
    record("scaled fp8 InfuseNet in diffusers names vs diffusers with the dequantised weights (relative error of the "
           "branch's change to the prediction)", error)
    assert error < 1e-2, error
    from infusenet.doctor import checks  # the model doctor reads it as the loader does, without its weights
    check = checks.check_file(Path(bundle.files[0]), "infusenet")
    assert check.status == "ok" and check.info["precision"] == "fp8_e4m3fn scaled", check


def test_scaled_fp8_is_refused_by_a_comfyui_without_scaled_operations(tmp_path, monkeypatch):
    """A ComfyUI with neither scaled fp8 machinery (a test double: the check answers None): the error names a scaled
    key and the ComfyUI version; it never loads the weights with their scales ignored."""
    from infusenet import host
    from devtools.comfy_env import comfyui_version

    file, _ = scaled_fp8(weights.to_comfy_keys(files.make_controlnet(SCALED_SPEC, 11).state_dict()))
    path = _write(tmp_path / "infusenet_scaled_fp8.safetensors", file)
    monkeypatch.setattr(host, "scaled_fp8_machinery", lambda: None)
    with pytest.raises(InfiniteYouError) as refused:
        weights.load_infusenet(path)
    message = str(refused.value)
    assert "scaled fp8 InfuseNet" in message and ".scale_weight" in message and f"ComfyUI {comfyui_version()}" in message


def test_other_quantisations_are_refused_naming_the_layer(tmp_path):
    import json

    file, _ = scaled_fp8(weights.to_comfy_keys(files.make_controlnet(SCALED_SPEC, 11).state_dict()), "weight_scale")
    file["double_blocks.0.img_attn.qkv.comfy_quant"] = torch.tensor(list(json.dumps({"format": "nvfp4"}).encode()),
                                                                    dtype=torch.uint8)
    with pytest.raises(InfiniteYouError, match=r"quantises double_blocks\.0\.img_attn\.qkv as 'nvfp4'"):
        weights.load_infusenet(_write(tmp_path / "infusenet_nvfp4.safetensors", file))
    block = dict(file)
    del block["double_blocks.0.img_attn.qkv.comfy_quant"]
    block["double_blocks.0.img_attn.qkv.weight_scale"] = torch.ones(4)
    with pytest.raises(InfiniteYouError, match=r"double_blocks\.0\.img_attn\.qkv\.weight_scale with 4 scales"):
        weights.load_infusenet(_write(tmp_path / "infusenet_blocks.safetensors", block))
