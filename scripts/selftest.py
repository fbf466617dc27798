"""Self-test models for the main job: small random stand-ins under names no real model uses.

When no real InfiniteYou weights are installed, ``scripts/run.sh`` calls this to write them into a folder of
their own (``.host/selftest/models`` unless told otherwise), never into a ComfyUI's models folder, and an
``extra_model_paths.yaml`` beside them that the run hands to ComfyUI; with real weights that file is removed and
ComfyUI never sees the stand-ins. The "00 Self-test" workflow then runs end to end on a CPU in seconds (its photo,
``workflows/photos/infu_selftest_face.png``, reaches ComfyUI's input folder with the other example photos). Its
output is noise: the weights are untrained. Real models are never touched or shadowed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SELFTEST = {
    "unet": "infu-selftest-flux.safetensors",
    "clip": "infu-selftest-clip_l.safetensors",
    "vae": "infu-selftest-vae.safetensors",
    "infusenet": "infu-selftest/InfuseNetModel",
    "detector_pack": "infu-selftest-antelopev2",
    "arcface": "infu-selftest-arcface_ir_se50.pth",
    "photo": "infu_selftest_face.png",
}
EXTRA_PATHS_FILE = "extra_model_paths.yaml"
"""Beside the self-test models: ComfyUI's ``--extra-model-paths-config`` for them."""
SELFTEST_FOLDERS = ("diffusion_models", "text_encoders", "vae", "infiniteyou", "insightface")
PACK_FOLDERS = ("infiniteyou", "insightface")
"""Folders ComfyUI does not know before the pack registers them: the extra paths file names ComfyUI's own
``models/<folder>`` first, so it stays the first place searched and the one messages say files go to."""


def infusenet_candidates(models: Path) -> list[Path]:
    """Single-file InfuseNets and ``InfuseNetModel`` folders in ours and the official pack's folder,
    the self-test set left out."""
    found = []
    for folder in ("infiniteyou", "infinite_you"):
        root = models / folder
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if "infu-selftest" in path.relative_to(root).parts or "InfuseNetModel" in path.parent.parts:
                continue
            if (path.is_dir() and path.name == "InfuseNetModel") or (
                    path.is_file() and path.suffix.lower() in (".safetensors", ".sft")):
                found.append(path)
    return found


def real_weights_present(models: Path) -> bool:
    """Whether a real InfuseNet is installed (ours or the official pack's folder): a file or folder that
    the model doctor reads as a whole InfuseNet. A truncated download, a projection or any other
    safetensors file does not count."""
    from devtools.comfy_env import enable_in_process_comfy

    enable_in_process_comfy()
    from infusenet.doctor import STATUS_OK, check_infusenet

    return any(check_infusenet(path).status == STATUS_OK for path in infusenet_candidates(models))


def write_extra_model_paths(config: Path, selftest_models: Path, comfy_models: Path) -> Path:
    """ComfyUI's extra model paths file adding the self-test folders under ``selftest_models`` after ComfyUI's own
    (``comfy_models``). One absolute path a line; a JSON string is a YAML string, so any path is quoted right."""
    def paths(folder: str) -> str:
        own = [comfy_models.resolve() / folder] if folder in PACK_FOLDERS else []
        return json.dumps("\n".join(str(p) for p in [*own, selftest_models.resolve() / folder]))

    lines = ["# The InfiniteYou self-test models (scripts/selftest.py): random weights, kept out of ComfyUI's models.",
             "infiniteyou_selftest:", *(f"  {folder}: {paths(folder)}" for folder in SELFTEST_FOLDERS)]
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


def write_selftest(models: Path) -> None:
    from devtools.comfy_env import enable_in_process_comfy

    enable_in_process_comfy()
    from devtools import face_models, host_models, infusenet_files

    done = models / "infiniteyou" / "infu-selftest" / ".complete"
    if not done.exists():
        host_models.write_flux(models / "diffusion_models" / SELFTEST["unet"])
        host_models.write_clip_l(models / "text_encoders" / SELFTEST["clip"])
        host_models.write_flux_vae(models / "vae" / SELFTEST["vae"])
        spec = infusenet_files.FLUX_WIDTH_SPEC
        folder = models / "infiniteyou" / "infu-selftest"
        infusenet_files.write_infusenet_folder(str(folder), infusenet_files.random_infusenet_state_dict(spec), spec)
        resampler = infusenet_files.random_resampler_state_dict(infusenet_files.ResamplerSpec(), 1)
        infusenet_files.write_projection_bin(str(folder / "image_proj_model.bin"), resampler)
        face_models.write_antelopev2(models / "insightface" / "models" / SELFTEST["detector_pack"])
        face_models.write_arcface_ir_se50(models / "insightface" / SELFTEST["arcface"])
        done.write_text("ok")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=Path, required=True,
                        help="ComfyUI's models folder: where real InfuseNet weights are looked for (never written)")
    parser.add_argument("--selftest-dir", type=Path, required=True,
                        help=f"the self-test models' own folder: models/ and {EXTRA_PATHS_FILE} go there")
    args = parser.parse_args()
    config = args.selftest_dir / EXTRA_PATHS_FILE
    if real_weights_present(args.models):
        config.unlink(missing_ok=True)
        print("InfiniteYou: real InfuseNet weights found; open the workflows 01-07 in the template browser.")
        return
    models = args.selftest_dir / "models"
    print("InfiniteYou: no real InfuseNet weights in models/infiniteyou or models/infinite_you: "
          f"small self-test models (random weights) in {models}, outside ComfyUI's models folder.")
    write_selftest(models)
    write_extra_model_paths(config, models, args.models)
    print("InfiniteYou: self-test models ready. The '00 self-test' workflow runs in seconds on a CPU; "
          "its output is NOISE from untrained weights, not a result.")


if __name__ == "__main__":
    main()
