"""The model doctor's file checks and fixes, without a server (the route is tested in tests/test_model_doctor.py)."""
from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from infusenet import doctor
from tests.host_features import newest_host_only

pytestmark = newest_host_only("the doctor's name, header, pickle and fix-line checks: files and torch, no ComfyUI call")


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/etc/passwd", "C:/w", "a\\..\\b", "a%2f..", "a//b", "./a",
                                  "~/x", "", "a\x00b", "x" * 600])
def test_unsafe_names_are_refused(name):
    with pytest.raises(doctor.UnsafePath):
        doctor.safe_relative(name)


def test_safe_names_pass():
    assert doctor.safe_relative("infiniteyou/aes_stage2/image_proj_model.bin") == "infiniteyou/aes_stage2/image_proj_model.bin"


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


def test_precision_is_the_dtype_holding_most_weights(tmp_path):
    path = tmp_path / "fp8.safetensors"
    sd = {f"b{i}": torch.zeros(4, dtype=torch.bfloat16) for i in range(10)}
    sd["w"] = torch.zeros(64, 64).to(torch.float8_e4m3fn)
    save_file(sd, str(path))
    header, _ = doctor.read_safetensors_header(path)
    assert doctor._precision(header) == "fp8_e4m3fn"


def test_pickle_with_code_is_refused_and_tensors_pass(tmp_path):
    import os

    class Boom:
        def __reduce__(self):
            return (os.system, ("echo never",))

    bad = tmp_path / "image_proj_model.bin"
    torch.save({"image_proj": {"latents": torch.zeros(1, 8, 4)}, "x": Boom()}, str(bad))
    check = doctor.check_projection(bad)
    assert check.status == doctor.STATUS_REFUSED and "system" in check.detail
    good = tmp_path / "good.bin"
    torch.save({"image_proj": {"latents": torch.zeros(1, 16, 4), "proj_in.weight": torch.zeros(1),
                               "proj_out.weight": torch.zeros(1), "norm_out.weight": torch.zeros(1)}}, str(good))
    check = doctor.check_projection(good)
    assert check.status == doctor.STATUS_OK and check.info["tokens"] == 16


def test_every_spec_has_an_official_link_and_a_shell_line():
    for spec in doctor.SPECS:
        fix = doctor.fix_for(spec)
        if spec.trained_by_you:  # a FLUX.2 InfuseNet: no one publishes one, the fix says how to get it
            assert fix["url"] == fix["shell"] == "" and "train" in fix["what"] and "README" in fix["note"]
            continue
        assert fix["url"].startswith("https://") and fix["shell"] and fix["folder"].endswith("/")
        if spec.archive:
            assert "unzip -o -j" in fix["shell"] and "insightface/models/antelopev2" in fix["shell"]
        else:
            assert fix["shell"].endswith(spec.url) and f"{spec.folders[0]}/{spec.name}" in fix["shell"]
        if spec.gated:
            assert "HF_TOKEN" in fix["shell"]


def test_the_check_memory_is_bounded_and_forgets_the_least_recently_asked_for(tmp_path, monkeypatch):
    from collections import OrderedDict

    monkeypatch.setattr(doctor, "CHECKS_KEPT", 3)
    monkeypatch.setattr(doctor, "_CACHE", OrderedDict())
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"vae_{i}.safetensors")
        save_file({"w": torch.zeros(4, i + 1)}, str(paths[-1]))
    first = [doctor.check_file(p, "vae") for p in paths[:3]]
    assert all(check.status == doctor.STATUS_OK for check in first)
    assert doctor.check_file(paths[0], "vae") is first[0]  # remembered, and now the most recent
    later = [doctor.check_file(p, "vae") for p in paths[3:]]  # two more: the two least recent go
    assert len(doctor._CACHE) == 3
    assert doctor.check_file(paths[0], "vae") is first[0]
    assert doctor.check_file(paths[4], "vae") is later[1]
    assert doctor.check_file(paths[1], "vae") is not first[1]  # forgotten: checked again
    for count in range(2, 12):  # one file rewritten again and again keeps one place, with its latest check
        save_file({f"w{j}": torch.zeros(4) for j in range(count)}, str(paths[0]))
        assert doctor.check_file(paths[0], "vae").info["tensors"] == count
    assert len(doctor._CACHE) == 3
    assert sum(key[0] == str(paths[0]) for key in doctor._CACHE) == 1
