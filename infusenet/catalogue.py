"""The model files the pack and its shipped workflows use: where each goes, where it comes from, its licence.

One list, read by the model doctor (what to look for and how to fix it), by ``scripts/build_workflows.py`` (the
download links a workflow carries in ``properties.models``) and by the README's model table (:func:`readme_table`,
which a test compares with the README). Data only: nothing here reads a file or imports ComfyUI.
"""
from __future__ import annotations

from dataclasses import dataclass

HF_INFU = "https://huggingface.co/ByteDance/InfiniteYou/resolve/main/infu_flux_v1.0/"
HF_INFU_PAGE = "https://huggingface.co/ByteDance/InfiniteYou/tree/main/infu_flux_v1.0/"
HF_FLUX_DEV = "https://huggingface.co/black-forest-labs/FLUX.1-dev/resolve/main/"
HF_FLUX_SCHNELL = "https://huggingface.co/black-forest-labs/FLUX.1-schnell/resolve/main/"
HF_FLUX_GGUF = "https://huggingface.co/city96/FLUX.1-dev-gguf/resolve/main/"
HF_FLUX_FILL = "https://huggingface.co/black-forest-labs/FLUX.1-Fill-dev/resolve/main/"
HF_FLUX_KONTEXT = "https://huggingface.co/black-forest-labs/FLUX.1-Kontext-dev/resolve/main/"
HF_TEXT = "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/"
HF_KLEIN = "https://huggingface.co/Comfy-Org/flux2-klein/resolve/main/split_files/"
HF_FLUX2_VAE = "https://huggingface.co/Comfy-Org/flux2-dev/resolve/main/split_files/vae/flux2-vae.safetensors"
"""FLUX.2 [klein] as ComfyUI's own klein templates link it (Comfy-Org's split files)."""
ARCFACE_URL = "https://github.com/xinntao/facexlib/releases/download/v0.1.0/recognition_arcface_ir_se50.pth"
ANTELOPE_URL = "https://github.com/deepinsight/insightface/releases/download/v0.7/antelopev2.zip"
ANTELOPE_DIR = "insightface/models/antelopev2"
TRAIN_YOUR_OWN_ANCHOR = "README.md#flux2-klein-train-your-own-infusenet"
TRAIN_YOUR_OWN = ("no download exists: train one, see README (FLUX.2 [klein]: train your own InfuseNet), and export "
                  "it into infiniteyou/flux2_klein_4b/")
"""What is said of a FLUX.2 InfuseNet: no one publishes one, the user trains it."""

FLUX_DEV_LICENCE = "FLUX.1 [dev] non-commercial"
INFU_LICENCE = "CC BY-NC 4.0"


@dataclass(frozen=True)
class ModelSpec:
    """One file (or ``InfuseNetModel`` folder) the pack can use, as the official download pages lay it out."""

    key: str
    title: str
    role: str        # infusenet | projection | detector | face_onnx | arcface | flux | gguf | vae | text_encoder
    folders: tuple[str, ...]  # ComfyUI folder names searched, in order (the first is where it goes)
    name: str        # path under the folder, "/"-separated
    group: str       # entries of one group are alternatives: one usable file satisfies it
    need: str        # "required" | "optional"
    url: str         # the file itself; for a folder, the page listing its files; "" when no download exists
    page: str = ""
    note: str = ""
    gated: bool = False
    archive: str = ""  # the zip this file comes in (antelopev2)
    licence: str = ""
    workflows: tuple[str, ...] = ()  # the shipped workflows (by number) whose nodes name this file

    @property
    def trained_by_you(self) -> bool:
        """No download exists (url empty): the file comes out of the pack's trainer."""
        return not self.url

    @property
    def is_folder(self) -> bool:
        """A diffusers ``InfuseNetModel`` folder (config, index and shards), not one file."""
        return self.name.endswith("InfuseNetModel")


FLUX1_WORKFLOWS = ("01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12", "13", "14")
"""Every shipped workflow on FLUX.1 (00, the self-test, uses generated stand-ins; 15 is FLUX.2)."""
BF16_WORKFLOWS = tuple(w for w in FLUX1_WORKFLOWS if w not in ("06", "08"))


def _infu(key, title, role, name, group, need="required", note="", workflows=()):
    variant = name.split("/")[0]
    return ModelSpec(key, title, role, ("infiniteyou",), name, group, need, HF_INFU + name, HF_INFU_PAGE + variant,
                     note, licence=INFU_LICENCE, workflows=workflows)


def _antelope(file, title, role, need):
    return ModelSpec("antelopev2/" + file, title, role, ("insightface",), "models/antelopev2/" + file, "detector"
                     if role == "detector" else "antelopev2_other", need, ANTELOPE_URL,
                     "https://github.com/deepinsight/insightface/releases/tag/v0.7",
                     "comes in antelopev2.zip; the .onnx files go directly into insightface/models/antelopev2/",
                     archive=ANTELOPE_URL, licence="non-commercial research",
                     workflows=FLUX1_WORKFLOWS + ("15",) if role == "detector" else ())


def _flux(key, title, name, group, need, url, page, note, workflows, licence=FLUX_DEV_LICENCE, gated=False,
          role="flux"):
    return ModelSpec(key, title, role, ("diffusion_models",), name, group, need, url, page, note, gated,
                     licence=licence, workflows=workflows)


SPECS: tuple[ModelSpec, ...] = (
    _infu("infusenet_aes_bf16", "InfuseNet aes_stage2 (bf16)", "infusenet", "aes_stage2/infusenet_aes_bf16.safetensors",
          "infusenet", note="better text alignment and aesthetics; 24 GB+ GPUs", workflows=BF16_WORKFLOWS),
    _infu("infusenet_aes_fp8", "InfuseNet aes_stage2 (fp8, low VRAM)", "infusenet",
          "aes_stage2/infusenet_aes_fp8e4m3fn.safetensors", "infusenet", note="half the memory of bf16",
          workflows=("06", "08")),
    ModelSpec("infusenet_aes_folder", "InfuseNet aes_stage2 (diffusers folder)", "infusenet", ("infiniteyou",),
              "aes_stage2/InfuseNetModel", "infusenet", "optional", HF_INFU_PAGE + "aes_stage2/InfuseNetModel",
              HF_INFU_PAGE + "aes_stage2", "the same weights as the bf16 file, as the official diffusers folder "
              "(config.json, the index and its shards); either one is enough", licence=INFU_LICENCE),
    _infu("projection_aes", "Identity projection aes_stage2", "projection", "aes_stage2/image_proj_model.bin",
          "projection", note="goes beside the aes_stage2 InfuseNet", workflows=FLUX1_WORKFLOWS),
    _infu("infusenet_sim_bf16", "InfuseNet sim_stage1 (bf16)", "infusenet", "sim_stage1/infusenet_sim_bf16.safetensors",
          "infusenet_sim", "optional", "higher identity similarity", workflows=("13",)),
    _infu("projection_sim", "Identity projection sim_stage1", "projection", "sim_stage1/image_proj_model.bin",
          "projection_sim", "optional", "goes beside the sim_stage1 InfuseNet", workflows=("13",)),
    _antelope("scrfd_10g_bnkps.onnx", "Face detector SCRFD (antelopev2)", "detector", "required"),
    _antelope("glintr100.onnx", "antelopev2 recogniser (not used for the identity)", "face_onnx", "optional"),
    _antelope("1k3d68.onnx", "antelopev2 3D landmarks", "face_onnx", "optional"),
    _antelope("2d106det.onnx", "antelopev2 2D landmarks", "face_onnx", "optional"),
    _antelope("genderage.onnx", "antelopev2 gender/age", "face_onnx", "optional"),
    ModelSpec("arcface", "ArcFace IR-SE50 (identity embedding)", "arcface", ("facexlib", "insightface"),
              "recognition_arcface_ir_se50.pth", "arcface", "required", ARCFACE_URL,
              "https://github.com/xinntao/facexlib/releases/tag/v0.1.0",
              "the projection was trained on this ArcFace, not glintr100",
              licence="facexlib release (Apache-2.0 code; trained on MS1M: research use)",
              workflows=FLUX1_WORKFLOWS + ("15",)),
    _flux("flux_dev", "FLUX.1-dev", "flux1-dev.safetensors", "flux", "required", HF_FLUX_DEV + "flux1-dev.safetensors",
          "https://huggingface.co/black-forest-labs/FLUX.1-dev", "",
          ("01", "02", "03", "04", "06", "07", "11", "12", "13", "14"), gated=True),
    _flux("flux_schnell", "FLUX.1-schnell", "flux1-schnell.safetensors", "flux_schnell", "optional",
          HF_FLUX_SCHNELL + "flux1-schnell.safetensors", "https://huggingface.co/black-forest-labs/FLUX.1-schnell",
          "fast: 4 steps", ("05",), licence="Apache-2.0"),
    _flux("flux_dev_gguf", "FLUX.1-dev GGUF Q4_0 (low VRAM)", "flux1-dev-Q4_0.gguf", "flux_gguf", "optional",
          HF_FLUX_GGUF + "flux1-dev-Q4_0.gguf", "https://huggingface.co/city96/FLUX.1-dev-gguf",
          "low VRAM; needs the ComfyUI-GGUF nodes (https://github.com/city96/ComfyUI-GGUF)", ("08",), role="gguf"),
    _flux("flux_fill", "FLUX.1-Fill-dev", "flux1-fill-dev.safetensors", "flux_fill", "optional",
          HF_FLUX_FILL + "flux1-fill-dev.safetensors", "https://huggingface.co/black-forest-labs/FLUX.1-Fill-dev",
          "recraft a photo's face on Fill", ("09",), gated=True),
    _flux("flux_kontext", "FLUX.1-Kontext-dev", "flux1-kontext-dev.safetensors", "flux_kontext", "optional",
          HF_FLUX_KONTEXT + "flux1-kontext-dev.safetensors",
          "https://huggingface.co/black-forest-labs/FLUX.1-Kontext-dev", "edit a photo, keep the face", ("10",),
          gated=True),
    ModelSpec("vae", "FLUX VAE", "vae", ("vae",), "ae.safetensors", "vae", "required", HF_FLUX_DEV + "ae.safetensors",
              "https://huggingface.co/black-forest-labs/FLUX.1-dev", gated=True, licence=FLUX_DEV_LICENCE,
              workflows=FLUX1_WORKFLOWS),
    ModelSpec("clip_l", "CLIP-L text encoder", "text_encoder", ("text_encoders",), "clip_l.safetensors", "clip_l",
              "required", HF_TEXT + "clip_l.safetensors", "https://huggingface.co/comfyanonymous/flux_text_encoders",
              licence="MIT", workflows=FLUX1_WORKFLOWS),
    ModelSpec("t5_fp16", "T5-XXL text encoder (fp16)", "text_encoder", ("text_encoders",), "t5xxl_fp16.safetensors", "t5",
              "required", HF_TEXT + "t5xxl_fp16.safetensors", "https://huggingface.co/comfyanonymous/flux_text_encoders",
              licence="Apache-2.0", workflows=BF16_WORKFLOWS),
    ModelSpec("t5_fp8", "T5-XXL text encoder (fp8, low VRAM)", "text_encoder", ("text_encoders",),
              "t5xxl_fp8_e4m3fn.safetensors", "t5", "required", HF_TEXT + "t5xxl_fp8_e4m3fn.safetensors",
              "https://huggingface.co/comfyanonymous/flux_text_encoders", "low VRAM",
              licence="Apache-2.0", workflows=("06", "08")),
    _flux("flux2_klein_4b", "FLUX.2 [klein] 4B", "flux-2-klein-4b.safetensors", "flux2_klein", "optional",
          HF_KLEIN + "diffusion_models/flux-2-klein-4b.safetensors", "https://huggingface.co/Comfy-Org/flux2-klein",
          "needs ComfyUI 0.30 or newer", ("15",), licence="Apache-2.0"),
    ModelSpec("qwen3_4b", "Qwen3-4B text encoder (FLUX.2 [klein] 4B)", "text_encoder", ("text_encoders",),
              "qwen_3_4b.safetensors", "flux2_text", "optional", HF_KLEIN + "text_encoders/qwen_3_4b.safetensors",
              "https://huggingface.co/Comfy-Org/flux2-klein", "klein 4B's text encoder (Load CLIP, type flux2)",
              licence="Apache-2.0", workflows=("15",)),
    ModelSpec("flux2_vae", "FLUX.2 VAE", "vae", ("vae",), "flux2-vae.safetensors", "flux2_vae", "optional",
              HF_FLUX2_VAE, "https://huggingface.co/Comfy-Org/flux2-dev", "", licence="Apache-2.0",
              workflows=("15",)),
    ModelSpec("infusenet_flux2_klein_4b", "Your InfuseNet for FLUX.2 [klein] 4B", "infusenet", ("infiniteyou",),
              "flux2_klein_4b/InfuseNetModel", "infusenet_flux2", "optional", "", "", TRAIN_YOUR_OWN, licence="yours",
              workflows=("15",)),
    ModelSpec("projection_flux2_klein_4b", "Identity projection of your FLUX.2 [klein] InfuseNet", "projection",
              ("infiniteyou",), "flux2_klein_4b/image_proj_model.bin", "projection_flux2", "optional", "", "",
              TRAIN_YOUR_OWN, licence="yours", workflows=("15",)),
)
SPECS_BY_KEY = {s.key: s for s in SPECS}

GROUP_TITLES = {
    "infusenet": "InfuseNet (one of bf16 / fp8 / the diffusers folder)", "projection": "Identity projection",
    "detector": "Face detector", "arcface": "ArcFace", "flux": "FLUX.1-dev", "vae": "VAE", "clip_l": "CLIP-L",
    "t5": "T5-XXL (fp16 or fp8)", "infusenet_sim": "sim_stage1 InfuseNet (optional)",
    "projection_sim": "sim_stage1 projection (optional)", "antelopev2_other": "other antelopev2 files (optional)",
    "flux_schnell": "FLUX.1-schnell (optional, workflow 05)", "flux_gguf": "FLUX.1-dev GGUF (optional, workflow 08)",
    "flux_fill": "FLUX.1-Fill-dev (optional, workflow 09)",
    "flux_kontext": "FLUX.1-Kontext-dev (optional, workflow 10)",
    "flux2_klein": "FLUX.2 [klein] 4B (optional, workflow 15)", "flux2_text": "Qwen3-4B (optional, workflow 15)",
    "flux2_vae": "FLUX.2 VAE (optional, workflow 15)",
    "infusenet_flux2": "your FLUX.2 [klein] InfuseNet (optional, trained by you)",
    "projection_flux2": "its identity projection (optional, trained by you)",
    "extra": "other files found",
}


def workflow_models() -> dict[str, tuple[str, str]]:
    """name as a loader shows it -> (download link, ComfyUI folder), for every single file a workflow can offer to
    download (``properties.models``): not the antelopev2 pack (a zip), a folder, or a model the user trains."""
    return {s.name: (s.url, s.folders[0]) for s in SPECS if s.url and not s.archive and not s.is_folder}


def trained_by_you() -> dict[str, str]:
    """name -> where the README says how to make it, for the models no one publishes."""
    return {s.name: TRAIN_YOUR_OWN_ANCHOR for s in SPECS if s.trained_by_you and s.role == "infusenet"}


def _table_row(specs: list[ModelSpec]) -> str:
    first = specs[0]
    if first.archive:
        names = ", ".join(f"`{s.name.rsplit('/', 1)[-1]}`" for s in specs)
        files = f"`antelopev2/` ({names})"
        folder, source = f"`{ANTELOPE_DIR}/`", first.archive
    else:
        files = " and ".join(f"`{s.name}{'/' if s.is_folder else ''}`" for s in specs)
        folder = " or ".join(f"`{f}/`" for f in first.folders)
        source = first.page or first.url
        if first.trained_by_you:
            source = "no download exists: train one (see \"FLUX.2 [klein]: train your own InfuseNet\")"
    used = sorted({w for s in specs for w in s.workflows})
    what = f"workflows {', '.join(used)}" if len(used) > 1 else f"workflow {used[0]}" if used else "an alternative"
    if first.note and not first.archive and not first.trained_by_you:
        what += f": {first.note}"
    return f"| {files} | {folder} | {what} | {source} | {first.licence} |"


def readme_table() -> str:
    """The README's model table: one row per download (the antelopev2 files come in one zip, a trained InfuseNet
    and its projection come together)."""
    rows, seen = [], set()
    for spec in SPECS:
        if spec.key in seen:
            continue
        together = [s for s in SPECS if (spec.archive and s.archive == spec.archive)
                    or (spec.trained_by_you and s.trained_by_you)] or [spec]
        seen.update(s.key for s in together)
        rows.append(_table_row(together))
    header = ("| file | folder under `ComfyUI/models/` | what for | official source | licence |\n"
              "| --- | --- | --- | --- | --- |")
    return header + "\n" + "\n".join(rows)


TEMPLATE_LINES = {
    "00_self_test_untrained_noise": "Self-test: runs on a CPU with no real models (the output is noise)",
    "01_basic": "Basic: one photo, FLUX.1-dev, 864x1152, 30 steps, guidance 3.5",
    "02_pose_control": "Pose control: identity from one photo, face position from another",
    "03_multi_reference_identity": "Several reference photos averaged into one identity",
    "04_two_people_regions": "Two people: one identity per region (masks)",
    "05_fast_schnell": "Fast: FLUX.1-schnell in 4 steps",
    "06_low_vram_fp8": "Low VRAM: fp8 FLUX, fp8 T5, fp8 InfuseNet",
    "07_recraft_face_inpaint": "Recraft a photo: repaint the face with the identity (face swap)",
    "08_low_vram_gguf": "Low VRAM: FLUX.1-dev as GGUF (ComfyUI-GGUF) for 12-16 GB cards",
    "09_recraft_fill": "Recraft on FLUX.1 Fill: face swap on the inpainting model (recommended)",
    "10_kontext_edit_keep_face": "FLUX.1 Kontext: edit this photo, keep this face",
    "11_combine_photos": "Three photos of one person, weighted by quality, with a photo report",
    "12_two_people_auto_regions": "Two people: regions found from a layout photo, no masks to draw",
    "13_likeness_blend_sim_aes": "Likeness blend: sim_stage1 and aes_stage2 together",
    "14_likeness_sweep": "Four candidates ranked by likeness, the best saved",
    "15_flux2_klein_your_own_infusenet": "FLUX.2 [klein] 4B with an InfuseNet you trained (none is published)",
}
"""What each shipped workflow does, in one line: written on its template card's thumbnail (``workflows/<name>.jpg``)
and, through ``GET /infiniteyou/templates``, under the card's title in the frontend's template browser, which
otherwise repeats the file name there (ComfyUI's frontend gives custom-node templates no description of their own)."""
