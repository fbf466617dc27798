"""Likeness controls through the node classes: an identity carrying the tokens of one InfuseNet applied with
another (re-projected), the presets, and the sim_stage1 / aes_stage2 likeness blend against two chained Applies and
against the diffusers reference with two branches."""
from __future__ import annotations

import importlib

import pytest
import torch

import comfy.sd
import comfy.utils
from devtools import flux_pair as fp
from devtools import host_models
from devtools import infusenet_files as files
from tests.measurements import record
from tests.nodes.conftest import PACKAGE

H, W = 8, 8  # latent -> 4x4 image tokens
SIGMA = 0.7
TOL = 1e-4
PRESET_NAMES = ["custom", "reference (strength 1, start 0)", "less pasted (start 0.1)",
                "less pasted, freer (start 0.1, strength 0.9)"]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def variant_files(tmp, variant: str, seed: int):
    """A diffusers controlnet (bf16-representable weights) in ``<variant>/InfuseNetModel`` with its own
    projection beside it, as the official downloads lay them out."""
    spec = files.InfuseNetSpec(hidden_size=fp.HIDDEN, head_dim=fp.HEAD_DIM, num_layers=1, num_single_layers=2,
                               axes_dims_rope=fp.AXES)
    net = files.make_controlnet(spec, seed)
    sd = {k: v.to(torch.bfloat16) for k, v in net.state_dict().items()}
    net.load_state_dict({k: v.float() for k, v in sd.items()})
    folder = tmp / variant
    path = files.write_infusenet_folder(str(folder), sd, spec)
    projection = files.write_projection_bin(str(folder / "image_proj_model.bin"),
                                            files.random_resampler_state_dict(files.ResamplerSpec(), seed + 100))
    return net, path, projection


@pytest.fixture(scope="module")
def parts(tmp_path_factory, pack_nodes):
    tmp = tmp_path_factory.mktemp("likeness")
    weights = importlib.import_module(f"{PACKAGE}.infusenet.weights")
    identity_mod = importlib.import_module(f"{PACKAGE}.infusenet.face.identity")
    sim_net, sim_path, sim_proj = variant_files(tmp, "sim_stage1", 11)
    aes_net, aes_path, aes_proj = variant_files(tmp, "aes_stage2", 12)
    sim, aes = weights.load_infusenet(sim_path), weights.load_infusenet(aes_path)
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(host_models.write_flux_vae(tmp / "vae.safetensors"))))
    g = torch.Generator().manual_seed(5)
    embedding = torch.nn.functional.normalize(torch.randn(1, 512, generator=g), dim=1)

    def identity(bundle):
        """An identity that brings the tokens of ``bundle``'s projection (made outside the nodes)."""
        ident = identity_mod.FaceIdentity(embedding, embedding[0], [[0, 0, 1, 1]], [[[0, 0]] * 5], [(1, 1)])
        ident.tokens = weights.project_identity(bundle, ident.embedding)
        return ident

    pose = torch.rand(1, H * 8, W * 8, 3, generator=g)
    return dict(base=fp.make_base(2, 4), sim=sim, aes=aes, sim_net=sim_net, aes_net=aes_net, vae=vae,
                sim_proj=sim_proj, aes_proj=aes_proj, weights=weights, embedding=embedding, pose=pose,
                from_sim=identity(sim), from_aes=identity(aes), identity=identity)


def apply(pack_nodes, model, bundle, parts, ident, strength=1.0, start=0.0, end=1.0, preset="custom", **kw):
    out = pack_nodes.ApplyInfiniteYou.execute(model, bundle, ident, parts["vae"], strength, start, end,
                                              "steps (reference)", 1.0, False, "positive (reference)",
                                              control_image=kw.get("control_image", parts["pose"]), preset=preset)
    return out[0], report_of(out)


def blend(pack_nodes, parts, likeness, strength=1.0, start=0.0, end=1.0, preset="custom", sim=None, aes=None,
          ident=None, **kw):
    out = pack_nodes.ApplyLikenessBlend.execute(
        parts["base"].patcher, sim or parts["sim"], aes or parts["aes"], ident or parts["from_aes"], parts["vae"],
        likeness, strength, start, end, preset, control_image=kw.get("control_image", parts["pose"]))
    return out[0], report_of(out)


def report_of(output) -> dict:
    import json

    return json.loads(output.ui["infu_report"][0])


def inputs(seed: int):
    g = torch.Generator().manual_seed(seed)
    return dict(x=torch.randn(1, 16, H, W, generator=g), context=torch.randn(1, 8, fp.TEXT_DIM, generator=g),
                pooled=torch.randn(1, fp.POOLED_DIM, generator=g))


def denoised(model, d) -> tuple[torch.Tensor, torch.Tensor]:
    return fp.comfy_denoised(model, d["x"], SIGMA, fp.conds(d["context"], d["pooled"], 3.5), None, 1.0)


def sampled(model, d, steps: int = 10) -> torch.Tensor:
    return fp.comfy_sample(model, d["x"], steps, fp.conds(d["context"], d["pooled"], 3.5), None, 1.0)[0]


def test_identity_from_another_infusenet_is_reprojected_with_this_one(pack_nodes, parts):
    d = inputs(1)
    patch = importlib.import_module(f"{PACKAGE}.infusenet.patch")
    model = parts["base"].patcher
    # made with aes_stage2, applied with sim_stage1: runs as an identity made with sim_stage1
    assert not torch.equal(parts["from_aes"].tokens, parts["from_sim"].tokens)
    crossed, shown = apply(pack_nodes, model, parts["sim"], parts, parts["from_aes"])
    right, shown_right = apply(pack_nodes, model, parts["sim"], parts, parts["from_sim"])
    assert shown["reprojected"] is True and shown_right["reprojected"] is False and shown["variant"] == "sim_stage1"
    assert torch.equal(denoised(crossed, d)[1], denoised(right, d)[1])
    # the common case is untouched: the same numbers as the patch fed the identity's own tokens
    control = pack_nodes.infusenet.pose_latent(parts["vae"], parts["pose"])
    before = patch.apply_infiniteyou(model, parts["sim"], parts["from_sim"].tokens, control_latent=control)
    assert torch.equal(denoised(right, d)[1], denoised(before, d)[1])
    # and the re-projection is not a no-op: the aes tokens in the sim InfuseNet give other numbers
    wrong = patch.apply_infiniteyou(model, parts["sim"], parts["from_aes"].tokens, control_latent=control)
    assert rel(denoised(wrong, d)[1], denoised(right, d)[1]) > 1e-3


def test_the_preset_table_is_the_one_the_frontend_reads(pack_nodes):
    likeness = importlib.import_module(f"{PACKAGE}.infusenet.likeness")
    assert likeness.PRESET_NAMES == PRESET_NAMES
    assert likeness.PRESETS == {
        "custom": None,
        "reference (strength 1, start 0)": {"strength": 1.0, "start": 0.0, "end": 1.0},
        "less pasted (start 0.1)": {"strength": 1.0, "start": 0.1, "end": 1.0},
        "less pasted, freer (start 0.1, strength 0.9)": {"strength": 0.9, "start": 0.1, "end": 1.0},
    }
    for node in (pack_nodes.ApplyInfiniteYou, pack_nodes.ApplyLikenessBlend):
        (preset,) = [i for i in node.define_schema().inputs if i.id == "preset"]
        spec = preset.as_dict()
        assert spec["options"] == PRESET_NAMES and spec["default"] == "custom"
        assert spec["infu_presets"] == likeness.PRESETS  # what web/infiniteyou.js sets the widgets from
        assert all(len(name) <= 48 for name in spec["options"])


@pytest.mark.parametrize("preset", PRESET_NAMES[1:])
def test_each_preset_runs_exactly_its_values(pack_nodes, parts, preset):
    likeness = importlib.import_module(f"{PACKAGE}.infusenet.likeness")
    values = likeness.PRESETS[preset]
    d = inputs(2)
    model = parts["base"].patcher
    by_preset, shown = apply(pack_nodes, model, parts["sim"], parts, parts["from_sim"], 0.3, 0.5, 0.6, preset=preset)
    by_hand, _ = apply(pack_nodes, model, parts["sim"], parts, parts["from_sim"], values["strength"], values["start"],
                       values["end"])
    assert (shown["strength"], shown["start"], shown["end"], shown["preset"]) == (
        values["strength"], values["start"], values["end"], preset)
    assert torch.equal(sampled(by_preset, d), sampled(by_hand, d))
    widgets, _ = apply(pack_nodes, model, parts["sim"], parts, parts["from_sim"], 0.3, 0.5, 0.6)
    assert rel(sampled(widgets, d), sampled(by_hand, d)) > 1e-3  # the widgets' values were really ignored


def test_custom_runs_the_widgets(pack_nodes, parts):
    d = inputs(3)
    model = parts["base"].patcher
    custom, shown = apply(pack_nodes, model, parts["sim"], parts, parts["from_sim"], 0.7, 0.2, 0.9, preset="custom")
    patch = importlib.import_module(f"{PACKAGE}.infusenet.patch")
    control = pack_nodes.infusenet.pose_latent(parts["vae"], parts["pose"])
    direct = patch.apply_infiniteyou(model, parts["sim"], parts["from_sim"].tokens, control_latent=control,
                                     strength=0.7, start=0.2, end=0.9)
    assert (shown["strength"], shown["start"], shown["end"], shown["preset"]) == (0.7, 0.2, 0.9, "custom")
    assert torch.equal(sampled(custom, d), sampled(direct, d))
    less_pasted = apply(pack_nodes, model, parts["sim"], parts, parts["from_sim"], preset="less pasted (start 0.1)")[0]
    assert rel(sampled(less_pasted, d), sampled(custom, d)) > 1e-3


def test_presets_are_checked_by_name(pack_nodes):
    node = pack_nodes.ApplyInfiniteYou
    ok = node.validate_inputs(1.0, 0.0, 1.0, "steps (reference)", 1.0, "positive (reference)", "less pasted (start 0.1)")
    assert ok is True
    refused = node.validate_inputs(1.0, 0.0, 1.0, "steps (reference)", 1.0, "positive (reference)", "less pasted")
    assert refused.startswith("Apply InfiniteYou: preset 'less pasted' is not one of") and "'custom'" in refused
    # a preset brings its own window: backwards widgets do not matter then; with custom they are refused
    assert node.validate_inputs(1.0, 0.8, 0.2, "steps (reference)", 1.0, "positive (reference)", PRESET_NAMES[2]) is True
    assert "start (0.8) is after end (0.2)" in node.validate_inputs(1.0, 0.8, 0.2, "steps (reference)", 1.0,
                                                                    "positive (reference)", "custom")
    blend = pack_nodes.ApplyLikenessBlend
    assert blend.validate_inputs(0.5, 1.0, 0.0, 1.0, "custom") is True
    assert blend.validate_inputs(1.5, 1.0, 0.0, 1.0, "custom").startswith(
        "Apply InfiniteYou (likeness blend): likeness must be a finite number between 0.0 and 1.0; got 1.5")


@pytest.mark.parametrize("likeness", [0.3, 0.5])
def test_blend_is_two_chained_applies(pack_nodes, parts, likeness):
    d = inputs(4)
    model = parts["base"].patcher
    before = (dict(model.wrappers), dict(model.additional_models))
    blended, shown = blend(pack_nodes, parts, likeness, strength=1.2)
    assert (dict(model.wrappers), dict(model.additional_models)) == before and blended is not model
    first = apply(pack_nodes, model, parts["sim"], parts, parts["from_aes"], 1.2 * likeness)[0]
    chained = apply(pack_nodes, first, parts["aes"], parts, parts["from_aes"], 1.2 * (1 - likeness))[0]
    x_in, got = denoised(blended, d)
    assert torch.equal(got, denoised(chained, d)[1])
    assert [(b["socket"], b["variant"], b["ran"]) for b in shown["branches"]] == [
        ("infusenet_sim", "sim_stage1", True), ("infusenet_aes", "aes_stage2", True)]
    assert [b["strength"] for b in shown["branches"]] == pytest.approx([1.2 * likeness, 1.2 * (1 - likeness)], abs=1e-12)
    assert [b["reprojected"] for b in shown["branches"]] == [True, False] and shown["warnings"] == []
    # the diffusers reference with two controlnets, each fed its own projection of the embedding
    tokens = {k: parts["weights"].load_resampler(parts[f"{k}_proj"])(parts["embedding"].reshape(1, 1, 512)).detach()
              for k in ("sim", "aes")}
    control = parts["vae"].encode(parts["pose"])
    v = fp.reference_velocity(parts["base"], [fp.Branch(parts["sim_net"], tokens["sim"], control, 1.2 * likeness),
                                              fp.Branch(parts["aes_net"], tokens["aes"], control, 1.2 * (1 - likeness))],
                              x_in, SIGMA, d["context"], d["pooled"], 3.5)
    record(f"likeness blend {likeness}: one model call vs diffusers with two controlnets (relative error)",
           rel(got, x_in - SIGMA * v))
    assert rel(got, x_in - SIGMA * v) < TOL
    alone = fp.reference_velocity(parts["base"], [fp.Branch(parts["sim_net"], tokens["sim"], control, 1.2)],
                                  x_in, SIGMA, d["context"], d["pooled"], 3.5)
    assert rel(got, x_in - SIGMA * alone) > 100 * TOL  # the aes branch counts


@pytest.mark.parametrize("likeness,variant", [(1.0, "sim"), (0.0, "aes")])
def test_likeness_at_the_ends_is_one_apply(pack_nodes, parts, likeness, variant):
    d = inputs(5)
    blended, shown = blend(pack_nodes, parts, likeness, strength=0.8)
    single = apply(pack_nodes, parts["base"].patcher, parts[variant], parts, parts["from_aes"], 0.8)[0]
    assert torch.equal(sampled(blended, d, 4), sampled(single, d, 4))
    ran = {b["socket"]: b["ran"] for b in shown["branches"]}
    assert ran == {"infusenet_sim": likeness == 1.0, "infusenet_aes": likeness == 0.0}
    # the skipped InfuseNet is not attached to the model at all
    other = parts["aes" if variant == "sim" else "sim"].patcher
    assert all(m is not other for m in blended.get_additional_models_with_key("infiniteyou"))


def test_blend_preset_and_zero_strength(pack_nodes, parts):
    d = inputs(6)
    by_preset, shown = blend(pack_nodes, parts, 0.5, 0.3, 0.6, 0.7, preset=PRESET_NAMES[3])
    by_hand = blend(pack_nodes, parts, 0.5, 0.9, 0.1, 1.0)[0]
    assert (shown["strength"], shown["start"], shown["end"]) == (0.9, 0.1, 1.0)
    assert torch.equal(sampled(by_preset, d, 10), sampled(by_hand, d, 10))
    off, shown_off = blend(pack_nodes, parts, 0.5, strength=0.0)
    assert off is not parts["base"].patcher and not off.get_additional_models_with_key("infiniteyou")
    assert [b["ran"] for b in shown_off["branches"]] == [False, False]
    assert torch.equal(denoised(off, d)[1], denoised(parts["base"].patcher, d)[1])


def test_blend_warns_about_the_same_file_and_swapped_variants(pack_nodes, parts):
    weights = parts["weights"]
    _, same = blend(pack_nodes, parts, 0.5, aes=parts["sim"])
    assert len(same["warnings"]) == 1 and "same InfuseNet" in same["warnings"][0]
    again = weights.load_infusenet(parts["sim"].files[0].rsplit("/", 1)[0])  # the same file, another loader
    _, same_file = blend(pack_nodes, parts, 0.5, aes=again)
    assert "same InfuseNet" in same_file["warnings"][0]
    _, swapped = blend(pack_nodes, parts, 0.5, sim=parts["aes"], aes=parts["sim"])
    assert len(swapped["warnings"]) == 1 and "swapped" in swapped["warnings"][0]
    assert blend(pack_nodes, parts, 0.5)[1]["warnings"] == []


@pytest.mark.parametrize("with_pose", [True, False])
def test_blend_encodes_the_control_image_once_for_both_branches(pack_nodes, parts, monkeypatch, with_pose):
    """Both branches read one VAE latent (the pose image's, or the black image's without one), encoded once per
    run and the numbers are those of two chained Applies, each encoding its own."""
    d = inputs(7)
    pose = parts["pose"] if with_pose else None
    model = parts["base"].patcher
    first = apply(pack_nodes, model, parts["sim"], parts, parts["from_aes"], 0.6, control_image=pose)[0]
    chained = sampled(apply(pack_nodes, first, parts["aes"], parts, parts["from_aes"], 0.4, control_image=pose)[0], d, 3)
    vae, encode, sizes = parts["vae"], parts["vae"].encode, []

    def counted(pixels, *args, **kwargs):
        sizes.append(tuple(pixels.shape))
        return encode(pixels, *args, **kwargs)

    monkeypatch.setattr(vae, "encode", counted)
    blended = blend(pack_nodes, parts, 0.6, control_image=pose)[0]
    assert torch.equal(sampled(blended, d, 3), chained)
    assert sizes == [(1, H * 8, W * 8, 3)], sizes
    assert torch.equal(sampled(blended, d, 3), chained)  # a second run of the same model: no encode at all
    assert len(sizes) == 1
