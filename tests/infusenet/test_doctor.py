"""The model doctor without a server (the route is tested in tests/test_model_doctor.py): its name, header, pickle
and fix-line checks; one catalogue behind the doctor, the shipped workflows and the README table; and the doctor
judging each file by the loaders' own checks, so that the two never disagree about a file."""
from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from devtools import face_models
from devtools import flux_pair as fp
from devtools import infusenet_files as files
from devtools.comfy_env import PACK_ROOT
from infusenet import catalogue, doctor
from infusenet.doctor import checks
from tests.host_features import newest_host_only

FILE_CHECKS = newest_host_only("the doctor's name, header, pickle and fix-line checks: files and torch, no ComfyUI call")
CATALOGUE = newest_host_only("reads the catalogue, the shipped workflow files and the README")


@FILE_CHECKS
@pytest.mark.parametrize("name", ["../x", "a/../../x", "/etc/passwd", "C:/w", "a\\..\\b", "a%2f..", "a//b", "./a",
                                  "~/x", "", "a\x00b", "x" * 600])
def test_unsafe_names_are_refused(name):
    with pytest.raises(doctor.UnsafePath):
        doctor.safe_relative(name)


@FILE_CHECKS
def test_safe_names_pass():
    assert doctor.safe_relative("infiniteyou/aes_stage2/image_proj_model.bin") == "infiniteyou/aes_stage2/image_proj_model.bin"


@FILE_CHECKS
def test_safetensors_header_complete_and_truncated(tmp_path):
    path = tmp_path / "x.safetensors"
    save_file({"a": torch.zeros(64, 64, dtype=torch.bfloat16)}, str(path))
    header, err = doctor.read_safetensors_header(path)
    assert err == "" and header["a"]["dtype"] == "BF16"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    header, err = doctor.read_safetensors_header(path)
    assert header is None and "truncated" in err
    path.write_bytes(b"<html>Sign in to download</html>")
    assert "web page" in doctor.read_safetensors_header(path)[1]


@FILE_CHECKS
def test_precision_is_the_dtype_holding_most_weights(tmp_path):
    path = tmp_path / "fp8.safetensors"
    sd = {f"b{i}": torch.zeros(4, dtype=torch.bfloat16) for i in range(10)}
    sd["w"] = torch.zeros(64, 64).to(torch.float8_e4m3fn)
    save_file(sd, str(path))
    header, _ = doctor.read_safetensors_header(path)
    assert checks.precision(header) == "fp8_e4m3fn"


def test_pickle_with_code_is_refused_and_tensors_pass(tmp_path):  # the report names the file by ComfyUI's folders
    import os

    class Boom:
        def __reduce__(self):
            return (os.system, ("echo never",))

    bad = tmp_path / "image_proj_model.bin"
    torch.save({"image_proj": {"latents": torch.zeros(1, 8, 4)}, "x": Boom()}, str(bad))
    check = doctor.check_projection(bad)
    assert check.status == doctor.STATUS_REFUSED and "system" in check.detail
    good = files.write_projection_bin(str(tmp_path / "good.bin"),
                                      files.random_resampler_state_dict(files.ResamplerSpec(num_queries=16)))
    check = doctor.check_projection(Path(good))
    assert check.status == doctor.STATUS_OK and check.info["tokens"] == 16, check


@FILE_CHECKS
def test_a_gguf_file_is_checked_by_its_header(tmp_path):
    good = tmp_path / "flux1-dev-Q4_0.gguf"
    good.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 780, 5) + bytes(64))
    check = checks.check_file(good, "gguf")
    assert check.status == doctor.STATUS_OK and check.info == {"version": 3, "tensors": 780}
    bad = tmp_path / "page.gguf"
    bad.write_bytes(b"<!doctype html><html>Sign in</html>")
    assert checks.check_file(bad, "gguf").status == doctor.STATUS_BROKEN


@FILE_CHECKS
def test_every_spec_has_an_official_link_and_a_shell_line():
    for spec in catalogue.SPECS:
        fix = doctor.fix_for(spec)
        if spec.trained_by_you:  # a FLUX.2 InfuseNet: no one publishes one, the fix says how to get it
            assert fix["url"] == fix["shell"] == "" and "train" in fix["what"] and "README" in fix["note"]
            continue
        if spec.is_folder:  # the official diffusers folder: its page lists config, index and shards
            assert fix["url"] == spec.url and "every file" in fix["what"] and fix["shell"] == ""
            continue
        assert fix["url"].startswith("https://") and fix["shell"] and fix["folder"].endswith("/")
        if spec.archive:
            assert "unzip -o -j" in fix["shell"] and "insightface/models/antelopev2" in fix["shell"]
        else:
            assert fix["shell"].endswith(spec.url) and f"{spec.folders[0]}/{spec.name}" in fix["shell"]
        if spec.gated:
            assert "HF_TOKEN" in fix["shell"]


@FILE_CHECKS
def test_the_check_memory_is_bounded_and_forgets_the_least_recently_asked_for(tmp_path, monkeypatch):
    from collections import OrderedDict

    monkeypatch.setattr(checks, "CHECKS_KEPT", 3)
    monkeypatch.setattr(checks, "_CACHE", OrderedDict())
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"vae_{i}.safetensors")
        save_file({"w": torch.zeros(4, i + 1)}, str(paths[-1]))
    first = [doctor.check_file(p, "vae") for p in paths[:3]]
    assert all(check.status == doctor.STATUS_OK for check in first)
    assert doctor.check_file(paths[0], "vae") is first[0]  # remembered, and now the most recent
    later = [doctor.check_file(p, "vae") for p in paths[3:]]  # two more: the two least recent go
    assert len(checks._CACHE) == 3
    assert doctor.check_file(paths[0], "vae") is first[0]
    assert doctor.check_file(paths[4], "vae") is later[1]
    assert doctor.check_file(paths[1], "vae") is not first[1]  # forgotten: checked again
    for count in range(2, 12):  # one file rewritten again and again keeps one place, with its latest check
        save_file({f"w{j}": torch.zeros(4) for j in range(count)}, str(paths[0]))
        assert doctor.check_file(paths[0], "vae").info["tensors"] == count
    assert len(checks._CACHE) == 3
    assert sum(key[0] == str(paths[0]) for key in checks._CACHE) == 1


# ---------------------------------------------------------------- one catalogue
LOADER_WIDGETS = {"UNETLoader": ("unet_name", "diffusion_models"), "UnetLoaderGGUF": ("unet_name", "diffusion_models"),
                  "VAELoader": ("vae_name", "vae"), "CLIPLoader": ("clip_name", "text_encoders"),
                  "DualCLIPLoader": (None, "text_encoders"), "InfU_InfuseNetLoader": (None, "infiniteyou")}
"""The loader nodes of the shipped workflows and the folder each reads."""


def workflow_files() -> dict[str, dict]:
    return {p.name[:2]: json.loads(p.read_text()) for p in sorted((PACK_ROOT / "workflows").glob("[0-9][0-9]_*.json"))}


def named_models(workflow: dict) -> set[tuple[str, str]]:
    """(folder, name) of every model file a workflow's loader nodes name, and of its ``properties.models``."""
    found = set()
    for node in workflow["nodes"]:
        for model in (node.get("properties") or {}).get("models") or []:
            found.add((model["directory"], model["name"]))
        if node["type"] in LOADER_WIDGETS:
            _, folder = LOADER_WIDGETS[node["type"]]
            for value in node.get("widgets_values") or []:
                if isinstance(value, str) and (value.endswith((".safetensors", ".gguf", ".pth", ".bin"))
                                               or value.endswith("InfuseNetModel")):
                    found.add((folder, value))
    return found


@CATALOGUE
def test_the_doctor_knows_every_file_a_shipped_workflow_names():
    """Every model a workflow names is in the catalogue (so the doctor checks it and says how to get it), in the
    folder the workflow says, and the catalogue says which workflows use it; the self-test (00) runs on
    generated stand-ins that no one downloads."""
    by_place = {(folder, s.name): s for s in catalogue.SPECS for folder in s.folders}
    used: dict[str, set[str]] = {}
    for number, workflow in workflow_files().items():
        if number == "00":
            continue
        for folder, name in named_models(workflow):
            spec = by_place.get((folder, name))
            assert spec is not None, f"workflow {number} names {folder}/{name}, which the catalogue lacks"
            used.setdefault(spec.key, set()).add(number)
    face_loaders = {number for number, workflow in workflow_files().items() if number != "00"
                    and any(n["type"] == "InfU_FaceEncoderLoader" for n in workflow["nodes"])}
    for spec in catalogue.SPECS:
        if spec.key not in used and spec.role == "projection":  # found beside its InfuseNet ("auto")
            folder = spec.name.rsplit("/", 1)[0] + "/"
            used[spec.key] = set().union(*(used.get(s.key, set()) for s in catalogue.SPECS
                                           if s.role == "infusenet" and s.name.startswith(folder)))
        elif spec.role == "detector":  # the Face Encoder Loader's default pack
            used[spec.key] = face_loaders
        assert set(spec.workflows) == used.get(spec.key, set()), (spec.key, sorted(used.get(spec.key, ())))
    for key in ("flux_fill", "flux_kontext", "flux_dev_gguf", "infusenet_aes_folder", "flux2_klein_4b",
                "infusenet_flux2_klein_4b"):
        assert key in catalogue.SPECS_BY_KEY


@CATALOGUE
def test_the_workflows_carry_the_catalogue_links():
    models = catalogue.workflow_models()
    for number, workflow in workflow_files().items():
        for node in workflow["nodes"]:
            for model in (node.get("properties") or {}).get("models") or []:
                assert models[model["name"]] == (model["url"], model["directory"]), (number, model)


@CATALOGUE
def test_the_readme_model_table_is_the_catalogue():
    readme = (PACK_ROOT / "README.md").read_text()
    table = catalogue.readme_table()
    start = readme.find(table.splitlines()[0])
    assert start >= 0, "README: no model table with the catalogue's header"
    end = readme.find("\n\n", start)
    assert readme[start:end] == table, "README's model table differs from infusenet/catalogue.py; replace it with:\n" + table


# ---------------------------------------------------------------- the doctor and the loaders agree
def test_the_doctor_judges_files_by_the_loaders_checks(tmp_path):
    """Files one loader refuses, which the doctor's own older rules passed: the doctor now says broken, with the
    loader's own words (the path as the doctor shows it, never an absolute one)."""
    from infusenet import weights
    from infusenet.face.encoder import load_arcface_state_dict
    from infusenet.face.errors import FaceError

    projection = files.random_resampler_state_dict(files.ResamplerSpec(num_queries=8))
    del projection["layers.0.0.to_q.weight"]
    proj = Path(files.write_projection_bin(str(tmp_path / "image_proj_model.bin"), projection))
    arc = face_models.write_arcface_ir_se50(tmp_path / "recognition_arcface_ir_se50.pth", seed=1)
    state = torch.load(str(arc), weights_only=True)
    state["output_layer.3.weight"] = torch.zeros(512, 100)  # another input size
    torch.save(state, str(arc))
    spec = files.InfuseNetSpec(hidden_size=fp.HIDDEN, head_dim=fp.HEAD_DIM, num_layers=1, num_single_layers=1,
                               axes_dims_rope=fp.AXES)
    sd = files.random_infusenet_state_dict(spec, seed=2)
    sd = {k: v for k, v in sd.items() if not k.startswith("controlnet_x_embedder")}
    net = Path(files.write_single_file(str(tmp_path / "infusenet_x_bf16.safetensors"), sd))

    for path, role, load, error in ((proj, "projection", weights.load_resampler, weights.InfiniteYouError),
                                    (arc, "arcface", load_arcface_state_dict, FaceError),
                                    (net, "infusenet", weights.load_infusenet, weights.InfiniteYouError)):
        with pytest.raises(error) as refused:
            load(path if role == "arcface" else str(path))
        check = checks.check_file(path, role)
        assert check.status == doctor.STATUS_BROKEN, (role, check)
        shown = doctor.shown_path(path)
        assert check.detail == str(refused.value).replace(str(path), shown), (role, check.detail, str(refused.value))
        assert str(tmp_path) not in check.detail


def test_a_whole_infusenet_reads_the_same_in_the_doctor_and_the_loader(tmp_path):
    from infusenet import weights

    spec = files.InfuseNetSpec(hidden_size=fp.HIDDEN, head_dim=fp.HEAD_DIM, num_layers=2, num_single_layers=3,
                               axes_dims_rope=fp.AXES)
    paths = files.write_all(str(tmp_path / "aes_stage2"), spec, files.ResamplerSpec(num_queries=16),
                            state_dict=files.random_infusenet_state_dict(spec, seed=4))
    for form in ("folder", "bf16", "fp8"):
        check = checks.check_file(Path(paths[form]), "infusenet")
        bundle = weights.load_infusenet(paths[form])
        assert check.status == doctor.STATUS_OK, (form, check)
        assert (check.info["double_blocks"], check.info["single_blocks"], check.info["hidden_size"]) == (
            bundle.config.depth, bundle.config.depth_single_blocks, bundle.config.hidden_size), form
        assert check.info["base"] == bundle.base and check.info["variant"] == bundle.variant == "aes_stage2"
    assert re.search(r"fp8_e4m3fn · 2 double \+ 3 single blocks · for a 64-wide base",
                     checks.check_file(Path(paths["fp8"]), "infusenet").detail)
