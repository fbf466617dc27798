"""The README's main job (scripts/run.sh) on the ComfyUI under test, used as a user's own ComfyUI, with a
fresh base folder: it checks the set-up (and changes nothing in that ComfyUI or its Python environment),
finds no real weights and says the self-test output is noise, starts ComfyUI on 127.0.0.1 with the workflows
in the template browser, and the self-test workflow runs end to end to a saved image.

The self-test folder (INFU_SELFTEST_DIR) starts with the self-test models in place, linked from the fixture cache
(tests/fixtures/model_set.py), as after a first run: scripts/selftest.py then writes only ComfyUI's extra model
paths file for them. The cache made those files with the same writers and, for FLUX, CLIP-L and the VAE, the same
settings as scripts/selftest.py; writing them again here would cost about 2.5 GB and a minute per host.

Run on a user's own ComfyUI without a base folder of its own, run.sh adds the pack link and nothing else: the
self-test models stay in their own folder (checked with INFU_DRY_RUN, which stops before ComfyUI starts)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools.comfy_env import PACK_ROOT, comfyui_dir
from devtools.server import ComfyServer, free_port
from devtools.workflow_api import to_api


def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under ``root``, less Python's byte-code caches."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def installed_packages() -> set[str]:
    """``name==version`` of every distribution in the running (the host's) Python environment."""
    from importlib.metadata import distributions

    return {f"{d.metadata['Name']}=={d.version}" for d in distributions()}


def link_selftest_models(models: Path, cache: Path) -> None:
    """The self-test models under ``models`` as links to the fixture cache's files of the same names, marked
    complete the way scripts/selftest.py marks the set it wrote (links only: nothing in the cache is written)."""
    from scripts.selftest import SELFTEST

    for folder, name in (("diffusion_models", SELFTEST["unet"]), ("text_encoders", SELFTEST["clip"]),
                         ("vae", SELFTEST["vae"]), ("insightface", SELFTEST["arcface"]),
                         ("insightface/models", SELFTEST["detector_pack"])):
        (models / folder).mkdir(parents=True, exist_ok=True)
        (models / folder / name).symlink_to((cache / folder / name).resolve())
    infusenet = SELFTEST["infusenet"].split("/")[0]
    source = (cache / "infiniteyou" / infusenet).resolve()
    target = models / "infiniteyou" / infusenet
    target.mkdir(parents=True)
    for entry in source.iterdir():
        (target / entry.name).symlink_to(entry)
    (target / ".complete").write_text("ok")


@pytest.fixture(scope="module")
def main_job(tmp_path_factory, server_models):
    """run.sh on the ComfyUI under test as a user's own (COMFYUI_DIR, its venv as VENV), with a base
    folder of its own: the user's ComfyUI tree and Python environment must come out unchanged."""
    base = tmp_path_factory.mktemp("main-job")
    selftest = tmp_path_factory.mktemp("main-job-selftest")
    link_selftest_models(selftest / "models", server_models)
    port = free_port()
    log = open(base / "run.log", "w")
    comfy = comfyui_dir()
    before = (tree_state(comfy), installed_packages())
    env = dict(os.environ, COMFYUI_DIR=str(comfy), VENV=sys.prefix, PORT=str(port), INFU_BASE_DIR=str(base),
               INFU_SELFTEST_DIR=str(selftest), PYTHONUNBUFFERED="1")
    env.pop("INFU_DRY_RUN", None)
    proc = subprocess.Popen(["bash", str(PACK_ROOT / "scripts" / "run.sh")], stdout=log, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)
    server = ComfyServer(base, port=port)
    server.process = proc
    server.log_path = base / "run.log"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"run.sh exited early:\n{server.log()[-6000:]}"
        try:
            server.get_json("/system_stats", timeout=2)
            break
        except Exception:
            time.sleep(1)
    else:
        raise TimeoutError(server.log()[-6000:])
    server.before = before
    yield server
    server.stop()  # SIGTERM to the process group, SIGKILL if it lingers
    shutil.rmtree(selftest / "models", ignore_errors=True)  # links into the fixture cache


def example_photo_copies() -> set[str]:
    """The one change the pack may make to a ComfyUI tree: a missing example photo copied into its input/
    (infusenet/examples.py; here run.sh gives ComfyUI a base folder, so even these land outside the tree)."""
    return {f"input/{p.name}" for p in (PACK_ROOT / "workflows" / "photos").glob("*.jpg")}


def test_main_job_leaves_the_users_comfyui_and_environment_alone(main_job):
    tree, packages = main_job.before
    after = tree_state(comfyui_dir())
    changed = sorted(k for k in set(tree) | set(after) if tree.get(k) != after.get(k)
                     and not (k in example_photo_copies() and k not in tree))
    assert not changed, f"run.sh changed the user's ComfyUI tree: {changed[:20]}"
    assert installed_packages() == packages, "run.sh changed the user's Python environment"
    assert "--cpu" in main_job.log(), "no GPU here: ComfyUI must be started with --cpu"


def test_main_job_says_the_self_test_output_is_noise(main_job):
    text = main_job.log()
    assert "no real InfuseNet weights" in text
    assert "its output is NOISE from untrained weights" in text
    assert "--extra-model-paths-config" in text and not any((main_job.base_dir / "models").rglob("infu-selftest*"))


def test_the_example_photos_are_in_the_input_folder_the_workflows_read(main_job):
    names = set(main_job.object_info()["LoadImage"]["input"]["required"]["image"][0])
    photos = {p.name for p in (PACK_ROOT / "workflows" / "photos").glob("*.jpg")}
    assert len(photos) == 5 and photos <= names, sorted(photos - names)
    for name in photos:
        copied = main_job.base_dir / "input" / name
        assert copied.read_bytes() == (PACK_ROOT / "workflows" / "photos" / name).read_bytes()


def test_workflows_are_in_the_template_browser(main_job):
    templates = main_job.get_json("/api/workflow_templates")
    listed = next(v for k, v in templates.items() if "infiniteyou" in k.lower())
    shipped = sorted(p.stem for p in (PACK_ROOT / "workflows").glob("*.json"))
    assert sorted(listed) == shipped


def test_self_test_workflow_runs_end_to_end(main_job):
    workflow = json.loads((PACK_ROOT / "workflows" / "00_self_test_untrained_noise.json").read_text())
    prompt = to_api(workflow, main_job.object_info())
    started = time.monotonic()
    result = main_job.run(prompt, timeout=600)
    seconds = time.monotonic() - started
    assert result.status == "success", result.error
    saved = [i for i in result.images() if i["type"] == "output"]
    assert saved and saved[0]["filename"].startswith("InfiniteYou_SELFTEST_noise_from_untrained_weights")
    print(f"self-test workflow: {seconds:.1f} s on this CPU (first run, models loaded from disk)")


def users_comfyui(root: Path) -> Path:
    """A user's ComfyUI: the test host's code linked in, and models/, input/ and custom_nodes/ of its own with a
    file in each."""
    comfy = root / "ComfyUI"
    comfy.mkdir()
    own = ("models", "input", "output", "custom_nodes", "user", "temp")
    for entry in comfyui_dir().iterdir():
        if entry.name not in own:
            (comfy / entry.name).symlink_to(entry)
    for folder in ("models/checkpoints", "models/infiniteyou", "input", "custom_nodes/someone_elses_pack"):
        (comfy / folder).mkdir(parents=True)
    (comfy / "models" / "checkpoints" / "my_model.safetensors").write_bytes(b"not read")
    (comfy / "input" / "my_photo.png").write_bytes(b"my photo")
    return comfy


def test_on_the_users_own_comfyui_only_the_pack_link_is_added(tmp_path):
    """COMFYUI_DIR without INFU_BASE_DIR: ComfyUI runs in the user's tree, and the self-test models (no real
    InfuseNet there) are read from their own folder through --extra-model-paths-config."""
    import yaml

    comfy = users_comfyui(tmp_path)
    selftest = tmp_path / "selftest"
    done = selftest / "models" / "infiniteyou" / "infu-selftest" / ".complete"
    done.parent.mkdir(parents=True)
    done.write_text("ok")  # as after a first run: the 1 GB of stand-ins is not written again here
    before = {name: tree_state(comfy / name) for name in ("models", "input")}
    env = {k: v for k, v in os.environ.items() if k not in ("INFU_BASE_DIR", "PORT")}
    env.update(COMFYUI_DIR=str(comfy), VENV=sys.prefix, INFU_SELFTEST_DIR=str(selftest), INFU_DRY_RUN="1")
    run = subprocess.run(["bash", str(PACK_ROOT / "scripts" / "run.sh")], env=env, capture_output=True, text=True,
                         timeout=300)  # a run.sh that started ComfyUI instead would never return
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert {name: tree_state(comfy / name) for name in ("models", "input")} == before
    added = sorted(p.name for p in (comfy / "custom_nodes").iterdir())
    assert added == ["infiniteyou-studio", "someone_elses_pack"]
    assert (comfy / "custom_nodes" / "infiniteyou-studio").resolve() == PACK_ROOT.resolve()
    command = run.stdout.strip().splitlines()[-1]
    config = selftest / "extra_model_paths.yaml"
    assert f"--extra-model-paths-config {config}" in command and "--base-directory" not in command, command
    folders = {k: v.split("\n") for k, v in yaml.safe_load(config.read_text())["infiniteyou_selftest"].items()}
    models = (selftest / "models").resolve()
    assert folders == {
        "diffusion_models": [str(models / "diffusion_models")], "text_encoders": [str(models / "text_encoders")],
        "vae": [str(models / "vae")],
        "infiniteyou": [str(comfy.resolve() / "models" / "infiniteyou"), str(models / "infiniteyou")],
        "insightface": [str(comfy.resolve() / "models" / "insightface"), str(models / "insightface")]}
