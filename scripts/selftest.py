"""Self-test models for the main job: small random stand-ins under names no real model uses.

When no real InfiniteYou weights are installed, ``scripts/run.sh`` calls this to write them, plus a
synthetic face photo, so that the "00 Self-test" workflow runs end to end on a CPU in seconds.
Its output is noise: the weights are untrained. Real models are never touched or shadowed.
"""
from __future__ import annotations

import argparse
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


def write_photo(inputs: Path) -> None:
    """The self-test workflow's face photo (input/infu_selftest_face.png)."""
    import numpy as np
    from PIL import Image

    from devtools.comfy_env import enable_in_process_comfy

    enable_in_process_comfy()
    from devtools import face_models

    inputs.mkdir(parents=True, exist_ok=True)
    photo = face_models.draw_faces((256, 256), [(72, 56, 184, 200)], texture_seed=7)
    Image.fromarray((photo * 255).astype(np.uint8)).save(inputs / SELFTEST["photo"])


def write_selftest(models: Path, inputs: Path) -> None:
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
    write_photo(inputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--input", type=Path, required=True)
    args = parser.parse_args()
    write_photo(args.input)  # the self-test workflow's photo, whatever else is installed
    if real_weights_present(args.models):
        print("InfiniteYou: real InfuseNet weights found; open the workflows 01-07 in the template browser.")
        return
    print("InfiniteYou: no real InfuseNet weights in models/infiniteyou or models/infinite_you: "
          "writing small self-test models (random weights).")
    write_selftest(args.models, args.input)
    print("InfiniteYou: self-test models ready. The '00 self-test' workflow runs in seconds on a CPU; "
          "its output is NOISE from untrained weights, not a result.")


if __name__ == "__main__":
    main()
