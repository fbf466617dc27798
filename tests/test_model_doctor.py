"""The model doctor over HTTP (``GET /infiniteyou/models``) and the loaders' checks at ``/prompt`` time.

One server whose models folder holds a deliberate mix, made from the small generated models:
present (aes_stage2 bf16 InfuseNet and its projection, ArcFace, CLIP-L, VAE, FLUX dev), missing (the
antelopev2 pack's other files, T5, schnell), corrupt (a truncated fp8 InfuseNet, an SCRFD file cut
short), a projection pickle that carries code (sim_stage1), and a secret file outside the model
folders that no answer may ever contain.
"""
from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from devtools.infusenet_files import FLUX_WIDTH_SINGLE_ONLY_SPEC
from tests.conftest import start_server
from devtools.server import PromptRejected

SECRET = "infu-doctor-secret-6f1c"


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src)


def _truncate(src: Path, dst: Path, fraction: float = 0.4) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])


def build_mixed_models(models: Path, cache: Path) -> None:
    infu = cache / "infiniteyou"
    _link(infu / "aes_stage2" / "infusenet_aes_bf16.safetensors", models / "infiniteyou/aes_stage2/infusenet_aes_bf16.safetensors")
    _link(infu / "aes_stage2" / "image_proj_model.bin", models / "infiniteyou/aes_stage2/image_proj_model.bin")
    _truncate(infu / "aes_stage2" / "infusenet_aes_fp8e4m3fn.safetensors",
              models / "infiniteyou/aes_stage2/infusenet_aes_fp8e4m3fn.safetensors")
    _link(infu / "aes_stage2" / "infusenet_aes_bf16.safetensors", models / "infiniteyou/sim_stage1/infusenet_sim_bf16.safetensors")
    _link(infu / "broken" / "image_proj_with_code.bin", models / "infiniteyou/sim_stage1/image_proj_model.bin")
    _link(cache / "insightface" / "recognition_arcface_ir_se50.pth", models / "insightface/recognition_arcface_ir_se50.pth")
    _truncate(cache / "insightface/models/antelopev2/scrfd_10g_bnkps.onnx",
              models / "insightface/models/antelopev2/scrfd_10g_bnkps.onnx", 0.5)
    _link(cache / "diffusion_models" / "flux1-dev.safetensors", models / "diffusion_models/flux1-dev.safetensors")
    _link(cache / "vae" / "ae.safetensors", models / "vae/ae.safetensors")
    _link(cache / "text_encoders" / "clip_l.safetensors", models / "text_encoders/clip_l.safetensors")


@pytest.fixture(scope="module")
def doctor_server(tmp_path_factory, model_dir):
    base = tmp_path_factory.mktemp("doctor-base")
    build_mixed_models(base / "models", model_dir)
    (base / "secret.txt").write_text(SECRET)
    server = start_server(base)
    yield server
    server.stop()
    # its models (a cut-short fp8 InfuseNet, the T5 a fix line put in place: about 310 MB) go with the module, the
    # log stays: side by side, both hosts reach their last modules at about the same time, when the disk is fullest
    shutil.rmtree(base / "models", ignore_errors=True)


def raw_get(server, path: str) -> tuple[int, str]:
    """GET with the path sent byte for byte (no client-side normalisation of '..' or escapes)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


def entries(report: dict) -> dict:
    return {e["key"]: e for e in report["entries"]}


def test_inventory_present_missing_corrupt_and_refused(doctor_server):
    status, body = raw_get(doctor_server, "/infiniteyou/models")
    assert status == 200, body
    report = json.loads(body)
    e = entries(report)
    bf16 = e["infusenet_aes_bf16"]
    assert bf16["status"] == "ok" and bf16["found"] == "infiniteyou/aes_stage2/infusenet_aes_bf16.safetensors"
    assert bf16["info"]["variant"] == "aes_stage2" and bf16["info"]["precision"] == "bf16"
    spec = FLUX_WIDTH_SINGLE_ONLY_SPEC  # what the fixture set writes under the official names
    assert (bf16["info"]["double_blocks"], bf16["info"]["single_blocks"], bf16["info"]["hidden_size"]) == \
        (spec.num_layers, spec.num_single_layers, spec.hidden_size) and bf16["size"] > 0
    assert e["projection_aes"]["status"] == "ok" and e["projection_aes"]["info"]["tokens"] == 8
    assert e["arcface"]["status"] == "ok"
    fp8 = e["infusenet_aes_fp8"]
    assert fp8["status"] == "broken" and "truncated" in fp8["detail"]
    assert fp8["fix"]["shell"].endswith("aes_stage2/infusenet_aes_fp8e4m3fn.safetensors")
    refused = e["projection_sim"]
    assert refused["status"] == "refused" and "code" in refused["detail"]
    assert refused["fix"]["shell"].startswith("rm infiniteyou/sim_stage1/image_proj_model.bin && ")
    detector = e["antelopev2/scrfd_10g_bnkps.onnx"]
    assert detector["status"] == "broken" and "ONNX" in detector["detail"]
    for key in ("antelopev2/glintr100.onnx", "t5_fp16", "flux_schnell"):
        assert e[key]["status"] == "missing", key
        fix = e[key]["fix"]
        assert fix["url"].startswith("https://") and fix["folder"] and fix["shell"]
    assert "unzip -o -j insightface/models/antelopev2.zip" in e["antelopev2/glintr100.onnx"]["fix"]["shell"]
    assert "HF_TOKEN" in e["flux_dev"]["fix"]["shell"] if e["flux_dev"]["status"] != "ok" else True
    assert report["ready"] is False
    assert set(report["missing_groups"]) == {"detector", "t5"}
    assert "antelopev2.zip" in report["fix_all"] and "t5xxl_fp16.safetensors" in report["fix_all"]


def test_answers_hold_no_absolute_paths(doctor_server):
    _, body = raw_get(doctor_server, "/infiniteyou/models")
    assert str(doctor_server.base_dir) not in body
    assert "/work/" not in body and "/tmp/" not in body
    for entry in json.loads(body)["entries"]:
        for key in ("expected", "found"):
            assert not (entry[key] or "x").startswith("/"), entry


def test_one_file(doctor_server):
    status, body = raw_get(doctor_server, "/infiniteyou/models?file=infiniteyou/aes_stage2/infusenet_aes_bf16.safetensors")
    assert status == 200, body
    assert json.loads(body)["info"]["precision"] == "bf16"
    status, body = raw_get(doctor_server, "/api/infiniteyou/models/infiniteyou/sim_stage1/image_proj_model.bin")
    assert status == 200 and json.loads(body)["status"] == "refused"
    status, body = raw_get(doctor_server, "/infiniteyou/models?file=vae/nothing_here.safetensors")
    assert status == 200 and json.loads(body)["status"] == "missing"


TRAVERSALS = [
    "/infiniteyou/models?file=../secret.txt",
    "/infiniteyou/models?file=infiniteyou/../../secret.txt",
    "/infiniteyou/models?file=/etc/passwd",
    "/infiniteyou/models?file=..%2Fsecret.txt",
    "/infiniteyou/models?file=infiniteyou%2F..%2F..%2Fsecret.txt",
    "/infiniteyou/models?file=%252e%252e%252fsecret.txt",
    "/infiniteyou/models?file=infiniteyou%5C..%5C..%5Csecret.txt",
    "/infiniteyou/models?file=infiniteyou\\..\\..\\secret.txt",
    "/infiniteyou/models?file=C:/Windows/win.ini",
    "/infiniteyou/models?file=%00",
    "/infiniteyou/models?refresh=../../secret.txt",
    "/infiniteyou/models?file=secret.txt",
    "/infiniteyou/models/..%2F..%2Fsecret.txt",
    "/infiniteyou/models/infiniteyou/%2e%2e/%2e%2e/secret.txt",
    "/infiniteyou/models/%2fetc%2fpasswd",
    "/api/infiniteyou/models/infiniteyou%5c..%5c..%5csecret.txt",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_is_refused(doctor_server, path):
    status, body = raw_get(doctor_server, path)
    assert status == 400, (path, status, body[:300])
    assert SECRET not in body and "root:" not in body


def test_dot_dot_in_the_url_path_never_reaches_a_file(doctor_server):
    for path in ("/infiniteyou/models/../../secret.txt", "/infiniteyou/models/infiniteyou/../../../secret.txt"):
        status, body = raw_get(doctor_server, path)
        assert status in (400, 404), (path, status)
        assert SECRET not in body


def test_fix_lines_put_the_files_in_place(doctor_server, tmp_path):
    """The doctor's shell lines, run in the models folder with the download URL pointed at a local copy
    (no network here), leave the files where the doctor then finds them usable: the antelopev2 zip
    (which nests its files one folder deep) and a single file."""
    cache = doctor_server.base_dir / "models"
    source = tmp_path / "antelopev2.zip"
    real = Path(os.readlink(cache / "insightface/recognition_arcface_ir_se50.pth")).parent / "models" / "antelopev2"
    with zipfile.ZipFile(source, "w") as zf:
        for onnx in real.glob("*.onnx"):
            zf.write(onnx, f"antelopev2/{onnx.name}")
    report = json.loads(raw_get(doctor_server, "/infiniteyou/models")[1])
    e = entries(report)
    line = e["antelopev2/scrfd_10g_bnkps.onnx"]["fix"]["shell"].replace(e["antelopev2/scrfd_10g_bnkps.onnx"]["fix"]["url"],
                                                                         source.as_uri())
    t5 = tmp_path / "t5xxl_fp16.safetensors"
    shutil.copyfile(cache / "text_encoders/clip_l.safetensors", t5)
    line_t5 = e["t5_fp16"]["fix"]["shell"].replace(e["t5_fp16"]["fix"]["url"], t5.as_uri())
    for shell in (line, line_t5):
        subprocess.run(["bash", "-c", shell], cwd=cache, check=True, capture_output=True)
    after = entries(json.loads(raw_get(doctor_server, "/infiniteyou/models")[1]))
    assert after["antelopev2/scrfd_10g_bnkps.onnx"]["status"] == "ok"
    assert after["antelopev2/glintr100.onnx"]["status"] == "ok"
    assert after["t5_fp16"]["status"] == "ok"
    # put the corrupt detector back for the other tests
    _truncate(real / "scrfd_10g_bnkps.onnx", cache / "insightface/models/antelopev2/scrfd_10g_bnkps.onnx", 0.5)


def loaders_prompt(infusenet: str, projection: str = "auto (image_proj_model beside the InfuseNet)") -> dict:
    return {
        "4": {"class_type": "InfU_InfuseNetLoader",
              "inputs": {"infusenet_name": infusenet, "projection": projection, "weight_dtype": "default"}},
        "5": {"class_type": "InfU_FaceEncoderLoader",
              "inputs": {"detector_pack": "antelopev2", "arcface": "recognition_arcface_ir_se50.pth", "providers": "auto"}},
        "6": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "10": {"class_type": "InfU_IdentityFromImages",
               "inputs": {"face_encoder": ["5", 0], "infusenet": ["4", 0], "images": ["6", 0],
                          "face_select": "largest", "face_index": 0, "det_size": "auto"}},
        "11": {"class_type": "InfU_IdentitySimilarity",
               "inputs": {"face_encoder": ["5", 0], "identity": ["10", 0], "images": ["6", 0]}},
    }


def test_prompt_reports_every_missing_or_broken_file_at_once(doctor_server):
    with pytest.raises(PromptRejected) as rejected:
        doctor_server.submit(loaders_prompt("sim_stage1/infusenet_sim_bf16.safetensors"))
    errors = rejected.value.node_errors
    assert set(errors) >= {"4", "5"}, errors
    infusenet = " ".join(e["details"] for e in errors["4"]["errors"])
    assert "refused" in infusenet and "rm infiniteyou/sim_stage1/image_proj_model.bin" in infusenet
    face = " ".join(e["details"] for e in errors["5"]["errors"])
    assert "scrfd_10g_bnkps.onnx" in face and "unzip -o -j" in face
    assert all(e["type"] == "custom_validation_failed" for e in errors["5"]["errors"])


def test_prompt_names_a_missing_infusenet_and_its_projection(doctor_server):
    with pytest.raises(PromptRejected) as rejected:
        doctor_server.submit(loaders_prompt("aes_stage2/not_downloaded.safetensors"))
    text = " ".join(e["details"] for e in rejected.value.node_errors["4"]["errors"])
    assert "infiniteyou/aes_stage2/not_downloaded.safetensors: not found" in text
    with pytest.raises(PromptRejected) as rejected:
        doctor_server.submit(loaders_prompt("aes_stage2/infusenet_aes_fp8e4m3fn.safetensors"))
    text = " ".join(e["details"] for e in rejected.value.node_errors["4"]["errors"])
    assert "truncated" in text and "curl -L --fail -o infiniteyou/aes_stage2/infusenet_aes_fp8e4m3fn.safetensors" in text


def test_prompt_passes_the_loaders_with_good_files(comfy_server):
    """With the whole small-model set, the loaders' checks let the prompt through (the missing image face
    then fails at run time, not at validation)."""
    result = comfy_server.run(loaders_prompt("aes_stage2/infusenet_aes_bf16.safetensors"), timeout=300)
    assert result.status == "error" and "face" in json.dumps(result.error).lower()


def test_links_are_followed_only_to_model_files(doctor_server, model_dir):
    """A link inside the model folders is followed to a model file (a loader accepts it); a link to
    anything else is never described, not by its content, its size or its listing."""
    base = doctor_server.base_dir
    infu = base / "models" / "infiniteyou"
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    (outside / "loose.safetensors").symlink_to(model_dir / "infiniteyou" / "aes_stage2" / "infusenet_aes_bf16.safetensors")
    links = {"notes": base / "secret.txt", "weights.safetensors": base / "secret.txt", "elsewhere": outside,
             "root": Path("/")}
    for name, target in links.items():
        (infu / name).symlink_to(target)
    try:
        for name in ("notes", "weights.safetensors", "elsewhere", "root/etc/passwd", "root/etc", "elsewhere/secret.txt"):
            status, body = raw_get(doctor_server, f"/infiniteyou/models?file=infiniteyou/{name}")
            assert status == 200, (name, body[:300])
            answer = json.loads(body)
            assert answer["status"] == "refused" and answer["size"] is None and answer["found"] is None, (name, answer)
            assert answer["info"] == {} and "nothing is reported" in answer["detail"], (name, answer)
            assert SECRET not in body and "root:" not in body and str(len(SECRET)) not in body, body
        status, body = raw_get(doctor_server, "/infiniteyou/models?file=infiniteyou/elsewhere/loose.safetensors")
        answer = json.loads(body)
        assert answer["status"] == "ok" and answer["info"]["precision"] == "bf16" and answer["size"] > 0, answer

        status, body = raw_get(doctor_server, "/infiniteyou/models")
        assert status == 200, body[:300]
        listed = [e["found"] or "" for e in json.loads(body)["entries"]]
        assert not [f for f in listed if any(n in f for n in ("notes", "weights.safetensors", "elsewhere/", "root/"))], listed
        assert SECRET not in body
    finally:
        for name in links:
            (infu / name).unlink()
        shutil.rmtree(outside)
