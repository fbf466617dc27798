"""Writes the shipped workflows (workflows/*.json) from the graph descriptions below.

Run: .venv/bin/python scripts/build_workflows.py
It starts a ComfyUI with this pack (no models needed) to read every node's inputs and outputs from
/object_info, so the saved graphs carry exactly the sockets and widget order the frontend expects.
"""
from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HF_FLUX_DEV = "https://huggingface.co/black-forest-labs/FLUX.1-dev/resolve/main/"
HF_FLUX_SCHNELL = "https://huggingface.co/black-forest-labs/FLUX.1-schnell/resolve/main/"
HF_TEXT = "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/"
HF_INFU = "https://huggingface.co/ByteDance/InfiniteYou/resolve/main/infu_flux_v1.0/"
HF_FLUX_GGUF = "https://huggingface.co/city96/FLUX.1-dev-gguf/resolve/main/"
HF_FLUX_FILL = "https://huggingface.co/black-forest-labs/FLUX.1-Fill-dev/resolve/main/"
HF_FLUX_KONTEXT = "https://huggingface.co/black-forest-labs/FLUX.1-Kontext-dev/resolve/main/"
FACEXLIB_ARCFACE = "https://github.com/xinntao/facexlib/releases/download/v0.1.0/recognition_arcface_ir_se50.pth"

MODELS = {
    "flux1-dev.safetensors": (HF_FLUX_DEV + "flux1-dev.safetensors", "diffusion_models"),
    "flux1-schnell.safetensors": (HF_FLUX_SCHNELL + "flux1-schnell.safetensors", "diffusion_models"),
    "ae.safetensors": (HF_FLUX_DEV + "ae.safetensors", "vae"),
    "clip_l.safetensors": (HF_TEXT + "clip_l.safetensors", "text_encoders"),
    "t5xxl_fp16.safetensors": (HF_TEXT + "t5xxl_fp16.safetensors", "text_encoders"),
    "t5xxl_fp8_e4m3fn.safetensors": (HF_TEXT + "t5xxl_fp8_e4m3fn.safetensors", "text_encoders"),
    "aes_stage2/infusenet_aes_bf16.safetensors": (HF_INFU + "aes_stage2/infusenet_aes_bf16.safetensors", "infiniteyou"),
    "aes_stage2/infusenet_aes_fp8e4m3fn.safetensors": (HF_INFU + "aes_stage2/infusenet_aes_fp8e4m3fn.safetensors", "infiniteyou"),
    "aes_stage2/image_proj_model.bin": (HF_INFU + "aes_stage2/image_proj_model.bin", "infiniteyou"),
    "recognition_arcface_ir_se50.pth": (FACEXLIB_ARCFACE, "facexlib"),
    "flux1-dev-Q4_0.gguf": (HF_FLUX_GGUF + "flux1-dev-Q4_0.gguf", "diffusion_models"),
    "flux1-fill-dev.safetensors": (HF_FLUX_FILL + "flux1-fill-dev.safetensors", "diffusion_models"),
    "flux1-kontext-dev.safetensors": (HF_FLUX_KONTEXT + "flux1-kontext-dev.safetensors", "diffusion_models"),
}
OTHER_PACKS = {"UnetLoaderGGUF": "comfyui-gguf"}
"""Node types from other packs the workflows use (their registry id, for the frontend's missing-node help)."""

IDENTITY_PHOTO = "infiniteyou_identity.png"
IDENTITY_PHOTO_2 = "infiniteyou_identity_2.png"
POSE_PHOTO = "infiniteyou_pose.png"
RECRAFT_PHOTO = "infiniteyou_recraft.png"
PROMPT = "A portrait photo of a person smiling in a sunlit garden, natural light, 85mm lens, highly detailed"


@dataclass
class N:
    """One node of a graph: id, type, widget values by name, links by input name: (node id, slot)."""
    id: int
    type: str
    widgets: dict = field(default_factory=dict)
    links: dict = field(default_factory=dict)
    pos: tuple = (0, 0)
    title: str | None = None
    models: tuple = ()
    color: str | None = None


def note(id: int, text: str, pos) -> dict:
    return {"id": id, "type": "MarkdownNote", "pos": list(pos), "size": [420, 220], "flags": {}, "order": 0,
            "mode": 0, "inputs": [], "outputs": [], "properties": {}, "widgets_values": [text],
            "color": "#432", "bgcolor": "#653"}


def build(nodes: list[N], notes: list[dict], info: dict) -> dict:
    from devtools.workflow_api import _extra_values, _is_widget

    by_id = {n.id: n for n in nodes}
    ids = [n.id for n in nodes] + [x["id"] for x in notes]
    if len(ids) != len(set(ids)):
        raise ValueError(f"node ids repeat: {sorted(i for i in ids if ids.count(i) > 1)}")
    links, out_links = [], {}
    link_id = 0
    ui_nodes = []
    for order, n in enumerate(nodes):
        spec = info[n.type]
        spec_inputs = {**spec["input"].get("required", {}), **spec["input"].get("optional", {})}
        order_names = spec.get("input_order", {})
        names = [*order_names.get("required", []), *order_names.get("optional", [])]
        unknown = set(n.widgets) | set(n.links)
        unknown -= set(names)
        if unknown:
            raise KeyError(f"{n.type} has no inputs {sorted(unknown)}")
        inputs, values = [], []
        for name in names:
            s = spec_inputs[name]
            if _is_widget(s):
                options = s[1] if len(s) > 1 else {}
                if name in n.widgets:
                    value = n.widgets[name]
                elif "default" in options:
                    value = options["default"]
                elif isinstance(s[0], list):
                    value = s[0][0]
                else:
                    value = options.get("options", [None])[0]
                values.append(value)
                extra = _extra_values(s)
                if options.get("control_after_generate"):
                    values.append("fixed")
                    extra -= 1
                if extra:
                    values.append("image")
            if name in n.links:
                link_id += 1
                src, slot = n.links[name]
                kind = info[by_id[src].type]["output"][slot]
                links.append([link_id, src, slot, n.id, len(inputs), kind])
                out_links.setdefault((src, slot), []).append(link_id)
                entry = {"name": name, "type": s[0] if not isinstance(s[0], list) else "COMBO", "link": link_id}
                if _is_widget(s):
                    entry["widget"] = {"name": name}
                inputs.append(entry)
            elif not _is_widget(s):
                inputs.append({"name": name, "type": s[0], "link": None})
        ui = {
            "id": n.id, "type": n.type, "pos": list(n.pos), "size": [320, 120 + 24 * len(values)], "flags": {},
            "order": order, "mode": 0, "inputs": inputs, "outputs": [],
            "properties": {"Node name for S&R": n.type, "cnr_id": "infiniteyou-studio" if n.type.startswith("InfU_")
                           else OTHER_PACKS.get(n.type, "comfy-core")},
            "widgets_values": values,
        }
        if n.title:
            ui["title"] = n.title
        if n.color:
            ui["color"], ui["bgcolor"] = n.color, n.color
        if n.models:
            ui["properties"]["models"] = [
                {"name": m, "url": MODELS[m][0], "directory": MODELS[m][1]} for m in n.models]
        ui_nodes.append(ui)
    for ui in ui_nodes:
        spec = info[ui["type"]]
        for slot, (kind, name) in enumerate(zip(spec["output"], spec["output_name"])):
            ui["outputs"].append({"name": name, "type": kind, "links": out_links.get((ui["id"], slot), []),
                                  "slot_index": slot})
    all_nodes = ui_nodes + notes
    spread_columns(all_nodes)
    return {
        "id": "00000000-0000-4000-8000-000000000000", "revision": 0,
        "last_node_id": max(x["id"] for x in all_nodes), "last_link_id": link_id,
        "nodes": all_nodes, "links": links, "groups": [], "config": {},
        "extra": {"ds": {"scale": 0.6, "offset": [0, 0]}}, "version": 0.4,
    }


# What the pack's web extension shows under a node after a run (and LoadImage's photo preview): room
# kept below these nodes so that nothing overlaps once they have run.
SHOWN_BELOW = {"InfU_InfuseNetLoader": 120, "InfU_IdentityFromImages": 290, "InfU_PoseImage": 290,
               "InfU_ApplyInfiniteYou": 230, "InfU_IdentitySimilarity": 110, "LoadImage": 280, "PreviewImage": 260,
               "SaveImage": 260}
GAP = 30


def node_height(ui: dict) -> int:
    """About what the frontend draws: title, socket rows, widget rows."""
    if ui["type"] == "MarkdownNote":
        return ui["size"][1]
    sockets = max(len([i for i in ui["inputs"] if "widget" not in i]), len(ui["outputs"]))
    return 40 + 22 * sockets + 24 * len(ui.get("widgets_values", []))


def spread_columns(nodes: list[dict]) -> None:
    """Nodes sharing an x position form a column; each is moved down (never up) until it clears the one
    above it, including the room kept for what the extension shows after a run."""
    for ui in nodes:
        if ui["type"] != "MarkdownNote":
            ui["size"] = [320, node_height(ui)]
    columns: dict[int, list[dict]] = {}
    for ui in nodes:
        columns.setdefault(ui["pos"][0], []).append(ui)
    for column in columns.values():
        bottom = None
        for ui in sorted(column, key=lambda n: n["pos"][1]):
            if bottom is not None and ui["pos"][1] < bottom + GAP:
                ui["pos"][1] = bottom + GAP
            bottom = ui["pos"][1] + ui["size"][1] + SHOWN_BELOW.get(ui["type"], 0)


# ------------------------------------------------------------------------------------- the graphs
def loaders(unet="flux1-dev.safetensors", unet_dtype="default", t5="t5xxl_fp16.safetensors",
            infusenet="aes_stage2/infusenet_aes_bf16.safetensors") -> list[N]:
    return [
        N(1, "UNETLoader", {"unet_name": unet, "weight_dtype": unet_dtype}, pos=(0, 0), models=(unet,)),
        N(2, "DualCLIPLoader", {"clip_name1": "clip_l.safetensors", "clip_name2": t5, "type": "flux"},
          pos=(0, 160), models=("clip_l.safetensors", t5)),
        N(3, "VAELoader", {"vae_name": "ae.safetensors"}, pos=(0, 330), models=("ae.safetensors",)),
        N(4, "InfU_InfuseNetLoader", {"infusenet_name": infusenet}, pos=(0, 460),
          models=(infusenet, "aes_stage2/image_proj_model.bin")),
        N(5, "InfU_FaceEncoderLoader", {}, pos=(0, 640), models=("recognition_arcface_ir_se50.pth",)),
    ]


def text_and_sampling(model_src, width=864, height=1152, steps=30, guidance=3.5, seed=42, prompt=PROMPT,
                      latent_src=None, denoise=1.0, scheduler="simple") -> list[N]:
    nodes = [
        N(20, "CLIPTextEncode", {"text": prompt}, {"clip": (2, 0)}, pos=(420, 0), title="Prompt"),
        N(22, "CLIPTextEncode", {"text": ""}, {"clip": (2, 0)}, pos=(420, 260), title="Negative (unused at CFG 1)"),
    ]
    positive = (20, 0)
    if guidance is not None:
        nodes.append(N(21, "FluxGuidance", {"guidance": guidance}, {"conditioning": (20, 0)}, pos=(420, 180)))
        positive = (21, 0)
    if latent_src is None:
        nodes.append(N(30, "EmptySD3LatentImage", {"width": width, "height": height, "batch_size": 1}, pos=(840, 420)))
        latent_src = (30, 0)
    nodes += [
        N(31, "KSampler", {"seed": seed, "steps": steps, "cfg": 1.0, "sampler_name": "euler", "scheduler": scheduler,
                           "denoise": denoise},
          {"model": model_src, "positive": positive, "negative": (22, 0), "latent_image": latent_src}, pos=(1260, 0)),
        N(32, "VAEDecode", {}, {"samples": (31, 0), "vae": (3, 0)}, pos=(1620, 0)),
        N(33, "SaveImage", {"filename_prefix": "InfiniteYou"}, {"images": (32, 0)}, pos=(1620, 120)),
    ]
    return nodes


def identity(node_id=10, photo_node=6, photo=IDENTITY_PHOTO, pos=(420, 460), add_to=None) -> list[N]:
    links = {"face_encoder": (5, 0), "infusenet": (4, 0), "images": (photo_node, 0)}
    if add_to is not None:
        links["add_to"] = add_to
    return [
        N(photo_node, "LoadImage", {"image": photo}, pos=(pos[0] - 420, pos[1] + 320), title="Identity photo"),
        N(node_id, "InfU_IdentityFromImages", {}, links, pos=pos),
        N(node_id + 1, "PreviewImage", {}, {"images": (node_id, 1)}, pos=(pos[0], pos[1] + 300), title="Faces used"),
    ]


def apply(node_id, model_src, identity_src, control=None, mask=None, pos=(840, 0), strength=1.0, start=0.0) -> N:
    links = {"model": model_src, "infusenet": (4, 0), "identity": identity_src, "vae": (3, 0)}
    if control is not None:
        links["control_image"] = control
    if mask is not None:
        links["mask"] = mask
    return N(node_id, "InfU_ApplyInfiniteYou", {"strength": strength, "start": start}, links, pos=pos)


def wf_basic():
    nodes = loaders() + identity() + [apply(12, (1, 0), (10, 0))] + text_and_sampling((12, 0))
    return nodes, [note(90, "## InfiniteYou: basic\nOne identity photo, no pose (the reference's black control image). "
                          "FLUX.1-dev, 864x1152, 30 steps, guidance 3.5, as the reference defaults.\n\n"
                          "If the face looks pasted or too strong, try start 0.1, then strength 0.9.", (1260, 500))]


def wf_pose():
    nodes = loaders() + identity() + [
        N(7, "LoadImage", {"image": POSE_PHOTO}, pos=(0, 1100), title="Pose photo"),
        N(13, "InfU_PoseImage", {"width": 864, "height": 1152}, {"face_encoder": (5, 0), "photo": (7, 0)}, pos=(420, 1100)),
        N(14, "PreviewImage", {}, {"images": (13, 0)}, pos=(840, 1100), title="Pose image"),
        apply(12, (1, 0), (10, 0), control=(13, 0)),
    ] + text_and_sampling((12, 0))
    return nodes, [note(90, "## InfiniteYou: pose control\nIdentity from one photo, face position and orientation "
                          "from another. The pose image must have the output size (width/height of the "
                          "Pose Image node = the latent's).", (1260, 500))]


def wf_multi_reference():
    nodes = loaders() + identity(10, 6, IDENTITY_PHOTO, (420, 460)) + identity(
        15, 8, IDENTITY_PHOTO_2, (420, 1000), add_to=(10, 0)) + [apply(12, (1, 0), (15, 0))] + text_and_sampling((12, 0))
    return nodes, [note(90, "## InfiniteYou: several reference photos, one identity\nEach Identity From Images node "
                          "adds its photos to the identity connected to add_to: the embeddings are averaged "
                          "(normalised, then renormalised). Photos of the same size can also go in one batch.",
                          (1260, 500))]


def wf_two_people():
    w, h = 1152, 864
    nodes = loaders() + identity(10, 6, IDENTITY_PHOTO, (420, 460)) + identity(15, 8, IDENTITY_PHOTO_2, (420, 1000)) + [
        N(40, "SolidMask", {"value": 0.0, "width": w, "height": h}, pos=(840, 700), title="Empty mask"),
        N(41, "SolidMask", {"value": 1.0, "width": w // 2, "height": h}, pos=(840, 840), title="Half mask"),
        N(42, "MaskComposite", {"x": 0, "y": 0, "operation": "add"}, {"destination": (40, 0), "source": (41, 0)},
          pos=(1260, 700), title="Left half"),
        N(43, "MaskComposite", {"x": w // 2, "y": 0, "operation": "add"}, {"destination": (40, 0), "source": (41, 0)},
          pos=(1260, 860), title="Right half"),
        apply(12, (1, 0), (10, 0), mask=(42, 0), pos=(840, 0)),
        apply(17, (12, 0), (15, 0), mask=(43, 0), pos=(840, 360)),
    ] + text_and_sampling((17, 0), width=w, height=h,
                          prompt="Two friends standing side by side in a park, the person on the left laughing, "
                                 "the person on the right smiling, photo, natural light")
    return nodes, [note(90, "## InfiniteYou: two people, one identity per region\nTwo Apply InfiniteYou nodes in a "
                          "chain, each with its identity and a mask. Their residuals add up, each limited to its "
                          "region. Describe both people in the prompt, left and right.", (1680, 500))]


def wf_fast():
    nodes = loaders(unet="flux1-schnell.safetensors") + identity() + [apply(12, (1, 0), (10, 0))] + text_and_sampling(
        (12, 0), steps=4, guidance=None)
    return nodes, [note(90, "## InfiniteYou: fast (FLUX.1-schnell, 4 steps)\nThe InfuseNet trained on FLUX.1-dev "
                          "works on schnell unchanged. schnell has no guidance input: no FluxGuidance node.",
                          (1260, 500))]


def wf_low_vram():
    nodes = loaders(unet_dtype="fp8_e4m3fn", t5="t5xxl_fp8_e4m3fn.safetensors",
                    infusenet="aes_stage2/infusenet_aes_fp8e4m3fn.safetensors") + identity() + [
        apply(12, (1, 0), (10, 0))] + text_and_sampling((12, 0))
    return nodes, [note(90, "## InfiniteYou: low VRAM\nFLUX weights loaded as fp8 (e4m3fn), the fp8 T5 and the fp8 "
                          "InfuseNet: every large model stays fp8 in memory and is cast per layer for compute. "
                          "ComfyUI offloads what does not fit.", (1260, 500))]


def wf_recraft():
    nodes = loaders() + identity() + [
        N(7, "LoadImage", {"image": RECRAFT_PHOTO}, pos=(0, 1100), title="Photo to recraft"),
        N(50, "InfU_FaceMask", {"grow": 0.35, "feather": 16}, {"face_encoder": (5, 0), "images": (7, 0)},
          pos=(420, 1100)),
        N(51, "VAEEncode", {}, {"pixels": (7, 0), "vae": (3, 0)}, pos=(840, 1100)),
        N(52, "SetLatentNoiseMask", {}, {"samples": (51, 0), "mask": (50, 0)}, pos=(840, 1220)),
        apply(12, (1, 0), (10, 0), mask=(50, 0)),
    ] + text_and_sampling((12, 0), latent_src=(52, 0), denoise=0.85,
                          prompt="A photo of a person, natural skin, detailed face") + [
        N(53, "ImageCompositeMasked", {"x": 0, "y": 0, "resize_source": False},
          {"destination": (7, 0), "source": (32, 0), "mask": (50, 0)}, pos=(1620, 400), title="Paste face back"),
        N(54, "SaveImage", {"filename_prefix": "InfiniteYou_recraft"}, {"images": (53, 0)}, pos=(2000, 400)),
    ]
    return nodes, [note(90, "## InfiniteYou: recraft a photo (face swap)\nThe face region of the photo (found by "
                          "InfiniteYou Face Mask) is repainted with the identity; the rest of the photo is kept "
                          "and the new face is pasted back through the same soft mask.", (1260, 700))]


def wf_low_vram_gguf():
    nodes = loaders(t5="t5xxl_fp8_e4m3fn.safetensors", infusenet="aes_stage2/infusenet_aes_fp8e4m3fn.safetensors")
    nodes[0] = N(1, "UnetLoaderGGUF", {"unet_name": "flux1-dev-Q4_0.gguf"}, pos=(0, 0), models=("flux1-dev-Q4_0.gguf",),
                 title="FLUX.1-dev GGUF (ComfyUI-GGUF)")
    nodes += identity() + [apply(12, (1, 0), (10, 0))] + text_and_sampling((12, 0))
    return nodes, [note(90, "## InfiniteYou: low VRAM with a GGUF FLUX (12-16 GB cards)\nFLUX.1-dev as 4-bit GGUF "
                          "(Q4_0, 6.8 GB) through city96's **ComfyUI-GGUF** (install it with the Manager; any "
                          "Q8_0/Q5/Q4_K file from the same page works too), the fp8 T5 and the fp8 InfuseNet. "
                          "The InfuseNet branch is the same on any base: its residuals do not depend on how the base "
                          "is stored, only the base's own output carries the quantisation error.", (1260, 500))]


def wf_recraft_fill():
    """Recraft on FLUX.1 Fill: the base inpaints with the mask and the photo; the branch gives the identity."""
    nodes = loaders(unet="flux1-fill-dev.safetensors") + identity() + [
        N(7, "LoadImage", {"image": RECRAFT_PHOTO}, pos=(0, 1100), title="Photo to recraft"),
        N(50, "InfU_FaceMask", {"grow": 0.35, "feather": 16}, {"face_encoder": (5, 0), "images": (7, 0)},
          pos=(420, 1100)),
        N(20, "CLIPTextEncode", {"text": "A photo of a person, natural skin, detailed face"}, {"clip": (2, 0)},
          pos=(420, 0), title="Prompt"),
        N(21, "FluxGuidance", {"guidance": 30.0}, {"conditioning": (20, 0)}, pos=(420, 180)),
        N(22, "CLIPTextEncode", {"text": ""}, {"clip": (2, 0)}, pos=(420, 260), title="Negative (unused at CFG 1)"),
        N(51, "InpaintModelConditioning", {"noise_mask": True},
          {"positive": (21, 0), "negative": (22, 0), "vae": (3, 0), "pixels": (7, 0), "mask": (50, 0)},
          pos=(840, 1100)),
        apply(12, (1, 0), (10, 0), mask=(50, 0)),
        N(31, "KSampler", {"seed": 42, "steps": 30, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
                           "denoise": 1.0},
          {"model": (12, 0), "positive": (51, 0), "negative": (51, 1), "latent_image": (51, 2)}, pos=(1260, 0)),
        N(32, "VAEDecode", {}, {"samples": (31, 0), "vae": (3, 0)}, pos=(1620, 0)),
        N(53, "ImageCompositeMasked", {"x": 0, "y": 0, "resize_source": False},
          {"destination": (7, 0), "source": (32, 0), "mask": (50, 0)}, pos=(1620, 400), title="Paste face back"),
        N(54, "SaveImage", {"filename_prefix": "InfiniteYou_recraft_fill"}, {"images": (53, 0)}, pos=(2000, 400)),
    ]
    return nodes, [note(90, "## InfiniteYou: recraft a photo on FLUX.1 Fill (recommended)\nFLUX.1 Fill inpaints the "
                          "face region (InfiniteYou Face Mask) knowing the rest of the photo, at full denoise and "
                          "guidance 30 as Fill expects; Apply InfiniteYou gives it the identity. The InfuseNet reads "
                          "only the noisy latent, as it was trained: the mask and the masked photo go to Fill alone. "
                          "The new face is pasted back through the same soft mask.", (1260, 700))]


def wf_kontext_edit():
    """Kontext edit: the photo is the reference latent; its face is also the identity."""
    nodes = loaders(unet="flux1-kontext-dev.safetensors") + [
        N(6, "LoadImage", {"image": RECRAFT_PHOTO}, pos=(0, 1100), title="Photo to edit (and its face)"),
        N(10, "InfU_IdentityFromImages", {}, {"face_encoder": (5, 0), "infusenet": (4, 0), "images": (6, 0)},
          pos=(420, 460)),
        N(11, "PreviewImage", {}, {"images": (10, 1)}, pos=(420, 760), title="Faces used"),
        N(7, "ImageScale", {"upscale_method": "lanczos", "width": 864, "height": 1152, "crop": "center"},
          {"image": (6, 0)}, pos=(420, 1100), title="Edit size"),
        N(8, "VAEEncode", {}, {"pixels": (7, 0), "vae": (3, 0)}, pos=(840, 1100)),
        N(20, "CLIPTextEncode", {"text": "Make it a watercolour painting in a sunny garden, keep the person's face"},
          {"clip": (2, 0)}, pos=(420, 0), title="Edit instruction"),
        N(23, "ReferenceLatent", {}, {"conditioning": (20, 0), "latent": (8, 0)}, pos=(840, 700)),
        N(21, "FluxGuidance", {"guidance": 2.5}, {"conditioning": (23, 0)}, pos=(840, 860)),
        N(22, "CLIPTextEncode", {"text": ""}, {"clip": (2, 0)}, pos=(420, 260), title="Negative (unused at CFG 1)"),
        apply(12, (1, 0), (10, 0)),
        N(31, "KSampler", {"seed": 42, "steps": 28, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
                           "denoise": 1.0},
          {"model": (12, 0), "positive": (21, 0), "negative": (22, 0), "latent_image": (8, 0)}, pos=(1260, 0)),
        N(32, "VAEDecode", {}, {"samples": (31, 0), "vae": (3, 0)}, pos=(1620, 0)),
        N(33, "SaveImage", {"filename_prefix": "InfiniteYou_kontext"}, {"images": (32, 0)}, pos=(1620, 120)),
    ]
    return nodes, [note(90, "## InfiniteYou: edit this photo, keep this face (FLUX.1 Kontext)\nKontext edits the "
                          "photo given as reference latent (ReferenceLatent) by the instruction; Apply InfiniteYou "
                          "holds the identity of the face found in the same photo (or connect another identity). "
                          "Residuals go to the generated image only; the reference tokens Kontext appends are left "
                          "as they are.", (1260, 500))]


def wf_self_test():
    from scripts.selftest import SELFTEST

    nodes = [
        N(1, "UNETLoader", {"unet_name": SELFTEST["unet"], "weight_dtype": "default"}, pos=(0, 0)),
        N(2, "CLIPLoader", {"clip_name": SELFTEST["clip"], "type": "stable_diffusion"}, pos=(0, 160)),
        N(3, "VAELoader", {"vae_name": SELFTEST["vae"]}, pos=(0, 330)),
        N(4, "InfU_InfuseNetLoader", {"infusenet_name": SELFTEST["infusenet"]}, pos=(0, 460)),
        N(5, "InfU_FaceEncoderLoader", {"detector_pack": SELFTEST["detector_pack"], "arcface": SELFTEST["arcface"]},
          pos=(0, 640)),
    ] + identity(photo=SELFTEST["photo"]) + [
        N(13, "InfU_PoseImage", {"width": 128, "height": 128}, {"face_encoder": (5, 0), "photo": (6, 0)},
          pos=(420, 1100), title="Pose from the same photo"),
        N(40, "SolidMask", {"value": 0.0, "width": 128, "height": 128}, pos=(840, 700), title="Empty mask"),
        N(41, "SolidMask", {"value": 1.0, "width": 80, "height": 128}, pos=(840, 840), title="Band"),
        N(42, "MaskComposite", {"x": 24, "y": 0, "operation": "add"}, {"destination": (40, 0), "source": (41, 0)},
          pos=(1260, 760), title="Region: centre band"),
        apply(12, (1, 0), (10, 0), control=(13, 0), mask=(42, 0)),
    ] + text_and_sampling((12, 0), width=128, height=128, steps=4, prompt="self-test") + [
        N(60, "InfU_IdentitySimilarity", {}, {"face_encoder": (5, 0), "identity": (10, 0), "images": (32, 0)},
          pos=(2000, 0)),
    ]
    next(n for n in nodes if n.type == "SaveImage").widgets["filename_prefix"] = \
        "InfiniteYou_SELFTEST_noise_from_untrained_weights"
    return nodes, [note(90, "## Self-test: the output is NOISE\nAll models here are small random stand-ins "
                          "generated by scripts/run.sh when no real weights are installed. The graph runs "
                          "end to end (face detection, identity, pose, region mask, InfuseNet, FLUX sampling, VAE, "
                          "similarity) in seconds on a CPU; the image it saves is noise from untrained weights. "
                          "Install the real models (README) and open the other InfiniteYou workflows.", (1260, 1000))]


TEMPLATE_CARDS = {
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
}
"""The line each template card shows on its thumbnail (workflows/<name>.jpg, made by
tests/browser/make_pictures.py): ComfyUI's frontend titles custom-node templates with the file name."""

WORKFLOWS = {
    "00_self_test_untrained_noise.json": wf_self_test,
    "01_basic.json": wf_basic,
    "02_pose_control.json": wf_pose,
    "03_multi_reference_identity.json": wf_multi_reference,
    "04_two_people_regions.json": wf_two_people,
    "05_fast_schnell.json": wf_fast,
    "06_low_vram_fp8.json": wf_low_vram,
    "07_recraft_face_inpaint.json": wf_recraft,
    "08_low_vram_gguf.json": wf_low_vram_gguf,
    "09_recraft_fill.json": wf_recraft_fill,
    "10_kontext_edit_keep_face.json": wf_kontext_edit,
}


def main() -> None:
    from devtools.server import ComfyServer

    from devtools.comfyui_gguf import install_comfyui_gguf

    with tempfile.TemporaryDirectory() as tmp:
        server = ComfyServer(Path(tmp))
        server.prepare_base()
        install_comfyui_gguf(Path(tmp) / "custom_nodes")  # UnetLoaderGGUF's sockets for the GGUF workflow
        server.start()
        try:
            info = server.object_info()
        finally:
            server.stop()
    if not any(name.startswith("InfU_") for name in info):
        raise SystemExit("The pack's nodes are not in /object_info: it failed to import (see the server log).")
    out = ROOT / "workflows"
    out.mkdir(exist_ok=True)
    for name, make in WORKFLOWS.items():
        nodes, notes = make()
        (out / name).write_text(json.dumps(build(nodes, notes, info), indent=1) + "\n")
        print("wrote", out / name)


if __name__ == "__main__":
    main()
