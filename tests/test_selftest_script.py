"""``scripts/selftest.py`` decides between the self-test models and real weights by what the files are,
not by their names: only an InfuseNet the model doctor reads as whole counts as real weights; with real weights
ComfyUI is not pointed at the stand-ins, and nothing is written into ComfyUI's models folder either way."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from devtools.comfy_env import PACK_ROOT
from tests.host_features import newest_host_only



def bf16_infusenet(model_dir: Path) -> Path:
    return model_dir / "infiniteyou" / "aes_stage2" / "infusenet_aes_bf16.safetensors"


@newest_host_only("reads the headers of files in a models folder, as the model doctor's file checks do")
def test_only_a_whole_infusenet_counts_as_real_weights(tmp_path, model_dir):
    from scripts.selftest import real_weights_present

    models = tmp_path / "models"
    folder = models / "infiniteyou" / "downloads"
    folder.mkdir(parents=True)
    assert not real_weights_present(models)
    data = bf16_infusenet(model_dir).read_bytes()
    (folder / "infusenet_aes_bf16.safetensors").write_bytes(data[: len(data) // 3])  # a download cut short
    (folder / "image_proj_model.safetensors").symlink_to(model_dir / "vae" / "ae.safetensors")  # not an InfuseNet
    (folder / "notes.safetensors").write_text("not weights")
    assert not real_weights_present(models)
    (models / "infinite_you").mkdir()
    (models / "infinite_you" / "infu_sim_bf16.safetensors").symlink_to(bf16_infusenet(model_dir))
    assert real_weights_present(models)


def run_selftest(models: Path, selftest: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(PACK_ROOT / "scripts" / "selftest.py"), "--models", str(models),
                           "--selftest-dir", str(selftest)], env=env, capture_output=True, text=True, timeout=600)


def test_real_weights_keep_the_stand_ins_out_of_comfyui(tmp_path, model_dir):
    models, selftest = tmp_path / "models", tmp_path / "selftest"
    (models / "infiniteyou").mkdir(parents=True)
    (models / "infiniteyou" / "infusenet_aes_bf16.safetensors").symlink_to(bf16_infusenet(model_dir))
    (selftest / "models" / "infiniteyou" / "infu-selftest").mkdir(parents=True)  # stand-ins from an earlier run
    (selftest / "extra_model_paths.yaml").write_text("infiniteyou_selftest:\n  vae: vae\n")
    done = run_selftest(models, selftest)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "real InfuseNet weights found" in done.stdout, done.stdout
    assert not (selftest / "extra_model_paths.yaml").exists()  # ComfyUI is no longer pointed at the stand-ins
    assert sorted(p.name for p in models.rglob("*")) == ["infiniteyou", "infusenet_aes_bf16.safetensors"]
