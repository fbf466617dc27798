"""Writes the shipped workflows (workflows/*.json) from the graph descriptions below.

Run: .venv/bin/python scripts/build_workflows.py
It starts a ComfyUI with this pack (no models needed) to read every node's inputs and outputs from
/object_info, so the saved graphs carry exactly the sockets and widget order the frontend expects.
"""
from __future__ import annotations

import json
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infusenet import catalogue  # noqa: E402  (after the repository root is on the path)

MODELS = catalogue.workflow_models()
"""name -> (download link, ComfyUI folder) for ``properties.models``: the pack's one model list (the model doctor
and the README table read it too)."""
TRAINED_BY_YOU = catalogue.trained_by_you()
"""Models no one publishes, which the user trains (the README's recipe): their loaders offer no download."""
OTHER_PACKS = {"UnetLoaderGGUF": "comfyui-gguf"}
"""Node types from other packs the workflows use (their registry id, for the frontend's missing-node help)."""

IDENTITY_PHOTO = "infiniteyou_example_eileen_collins.jpg"
IDENTITY_PHOTO_MIRRORED = "infiniteyou_example_eileen_collins_mirrored.jpg"
IDENTITY_PHOTO_SMALL = "infiniteyou_example_eileen_collins_small.jpg"
SECOND_PERSON_PHOTO = "infiniteyou_example_grace_hopper.jpg"
POSE_PHOTO = "infiniteyou_example_grace_hopper.jpg"
RECRAFT_PHOTO = "infiniteyou_example_grace_hopper.jpg"
TWO_PEOPLE_PHOTO = "infiniteyou_example_two_people.jpg"
"""The example photos (workflows/photos/, copied into ComfyUI's input folder at start by infusenet/examples.py)."""
PROMPT = "A portrait photo of a person smiling in a sunlit garden, natural light, 85mm lens, highly detailed"


@dataclass
class N:
    """One node of a graph: id, type, widget values by name, links by input name: (node id, slot); the
    group it sits in and its column inside that group (nodes of a column stack top to bottom in list order)."""
    id: int
    type: str
    widgets: dict = field(default_factory=dict)
    links: dict = field(default_factory=dict)
    group: str = "Sampling"
    col: int = 0
    title: str | None = None
    models: tuple = ()
    color: str | None = None


@dataclass
class Note:
    """A MarkdownNote in a group: what to change first, and why."""
    id: int
    text: str
    group: str
    col: int = 0
    width: int = 420


def workflow_id(file_name: str) -> str:
    """A workflow id of its own for each file, the same on every rebuild."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"https://github.com/infiniteyou-studio/workflows/{file_name}"))


def note_ui(n: Note) -> dict:
    return {"id": n.id, "type": "MarkdownNote", "pos": [0, 0], "size": [n.width, note_height(n.text, n.width)],
            "flags": {}, "order": 0, "mode": 0, "inputs": [], "outputs": [], "properties": {},
            "widgets_values": [n.text], "color": "#432", "bgcolor": "#653"}


def note_height(text: str, width: int) -> int:
    """Room for the note's text at the frontend's Markdown size (about 7.5 px a character, 21 px a line)."""
    per_line = max(1, int((width - 30) / 7.5))
    lines = sum(1 + len(par) // per_line for par in text.split("\n"))
    return 40 + 21 * lines


def build(nodes: list[N], notes: list[Note], info: dict, file_name: str) -> dict:
    from devtools.workflow_api import _extra_values, _is_widget

    by_id = {n.id: n for n in nodes}
    ids = [n.id for n in nodes] + [x.id for x in notes]
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
                if isinstance(slot, str):  # an output by name
                    slot = info[by_id[src].type]["output_name"].index(slot)
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
            "id": n.id, "type": n.type, "pos": [0, 0], "size": list(node_size(n.type, n.title)), "flags": {},
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
    note_nodes = [note_ui(x) for x in notes]
    all_nodes = ui_nodes + note_nodes
    placement = {n.id: (n.group, n.col) for n in nodes} | {x.id: (x.group, x.col) for x in notes}
    groups = lay_out(all_nodes, links, placement)
    return {
        "id": workflow_id(file_name), "revision": 0,
        "last_node_id": max(x["id"] for x in all_nodes), "last_link_id": link_id,
        "nodes": all_nodes, "links": links, "groups": groups, "config": {},
        "extra": {"ds": dict(OPEN_AT)}, "version": 0.4,
    }


OPEN_AT = {"scale": 0.8, "offset": [110, 185]}
"""The view a workflow opens at (``extra.ds``; the frontends restore it). At 0.8 the canvas draws text (LiteGraph
drops it below ``MinFontSizeForLOD`` / 14, 0.57 by default) and the Models group (at 0, 0) sits at 88, 148 px:
right of the sidebar (57-59 px wide) and below the frontends' bars over the canvas (1.32: title, tabs and the
breadcrumb, to 130 px; 1.58: tabs and the floating workflow bar, to 86 px). Checked on every frontend by
tests/browser/test_workflows_in_frontend.py."""

NODE_SIZES = {
    "CFGGuider": (270, 110), "CLIPLoader": (270, 120), "CLIPTextEncode": (400, 200),
    "ConditioningZeroOut": (230, 40), "DualCLIPLoader": (270, 150), "EmptyFlux2LatentImage": (270, 120),
    "EmptySD3LatentImage": (270, 120), "Flux2Scheduler": (270, 120), "FluxGuidance": (270, 70),
    "ImageCompositeMasked": (280, 160),
    "ImageScale": (270, 150), "InfU_ApplyInfiniteYou": (300, 390), "InfU_ApplyLikenessBlend": (320, 300),
    "InfU_FaceEncoderLoader": (320, 150), "InfU_FaceMask": (270, 220), "InfU_FaceRegions": (270, 330),
    "InfU_IdentityFromImages": (320, 230), "InfU_IdentitySimilarity": (290, 150), "InfU_InfuseNetLoader": (290, 150),
    "InfU_PoseImage": (270, 240), "InpaintModelConditioning": (270, 150), "KSampler": (270, 270),
    "KSamplerSelect": (270, 70), "LoadImage": (290, 110), "MaskComposite": (270, 140), "PreviewAny": (230, 130),
    "PreviewImage": (230, 40), "RandomNoise": (270, 90), "ReferenceLatent": (230, 60),
    "SamplerCustomAdvanced": (230, 120), "SaveImage": (270, 70), "SetLatentNoiseMask": (230, 60),
    "SolidMask": (270, 120),
    "UNETLoader": (270, 90), "UnetLoaderGGUF": (270, 90), "VAEDecode": (230, 60), "VAEEncode": (230, 60),
    "VAELoader": (270, 70),
}
"""Width and height (title bar excluded) of each node type, the largest the frontends give it, measured in the
browser (``python -m tests.browser.measure_sizes``; Nodes 2.0 draws most nodes taller than the canvas). A saved
``size`` is at least this; tests/browser/test_workflows_in_frontend.py checks the result in each frontend."""

SHOWN_ON_LOAD = {"LoadImage": 300}
"""Room for what the frontend adds to a node as soon as the workflow opens: Load Image grows to show its photo."""
SHOWN_BELOW = {"InfU_InfuseNetLoader": 180, "InfU_PoseImage": 290, "InfU_ApplyInfiniteYou": 260,
               "PreviewImage": 260, "SaveImage": 260, "InfU_FaceMask": 260, "InfU_FaceRegions": 400,
               "InfU_ApplyLikenessBlend": 300, "PreviewAny": 160, "InfU_FaceEncoderLoader": 60}
"""What a node shows under itself after a run (the pack's panels from web/infiniteyou.js, image previews):
room kept below these nodes so that nothing overlaps once they have run. The panels' heights follow
web/infiniteyou.js (RENDER); tests/browser/test_frontend.py measures them after the self-test runs. The loaders'
room also holds the missing-file marks shown when a workflow opens without its files (a line per file)."""
IDENTITY_PANEL = (60, 300, 40)
"""Identity From Images' panel: a title, each photo (its picture with the face box, a caption, its facts), an
outlier warning from three photos on."""
SIMILARITY_PANEL = (170, 24)
"""Identity Similarity's panel: a title and bands, one row per image scored (Nodes 2.0 draws it about 90 px
taller than the canvas does)."""


def photos_shown(node: dict, workflow_nodes: dict, links: dict) -> int:
    """How many photos an Identity From Images node's identity holds: its Load Image plus those of add_to."""
    add_to = next((i["link"] for i in node["inputs"] if i["name"] == "add_to" and i["link"] is not None), None)
    return 1 + (photos_shown(workflow_nodes[links[add_to][1]], workflow_nodes, links) if add_to else 0)


def shown_below(node: dict, workflow: dict) -> int:
    """The room a node's panel or preview takes under it after a run, in this workflow."""
    nodes = {n["id"]: n for n in workflow["nodes"]}
    links = {link[0]: link for link in workflow["links"]}
    if node["type"] == "InfU_IdentityFromImages":
        head, per_photo, outliers = IDENTITY_PANEL
        photos = photos_shown(node, nodes, links)
        return head + per_photo * photos + (outliers if photos >= 3 else 0)
    if node["type"] == "InfU_IdentitySimilarity":
        batch = max([n["widgets_values"][2] for n in nodes.values() if n["type"] == "EmptySD3LatentImage"] or [1])
        return SIMILARITY_PANEL[0] + SIMILARITY_PANEL[1] * batch
    return SHOWN_BELOW.get(node["type"], 0)
TITLE_HEIGHT = 30
"""LiteGraph's title bar, drawn above a node's ``pos``."""
GROUP_HEADER = 50
"""A group's title band: the first node's title bar starts below it."""
PAD, GAP, COLUMN_GAP, GROUP_GAP = 20, 30, 40, 60
GROUP_COLUMNS = (("Models",), ("Identity", "Pose", "Regions", "Recraft"), ("Prompt",), ("Sampling",), ("Output",))
"""Groups read left to right; the groups of one column stack top to bottom."""
GROUP_COLORS = {"Models": "#3f789e", "Identity": "#8a5a9e", "Pose": "#5a8a9e", "Regions": "#5a8a9e",
                "Recraft": "#5a8a9e", "Prompt": "#4e8a4e", "Sampling": "#8a7a3e", "Output": "#6e6e6e"}


def node_size(node_type: str, title: str | None) -> tuple[int, int]:
    width, height = NODE_SIZES.get(node_type, (320, 200))
    if title:
        width = max(width, 40 + int(8 * len(title)))
    return width, height


def box_height(ui: dict, workflow: dict) -> int:
    """The height a node takes in its column: title bar, body, what is shown below it on load and after a run."""
    return TITLE_HEIGHT + ui["size"][1] + SHOWN_ON_LOAD.get(ui["type"], 0) + shown_below(ui, workflow)


def lay_out(nodes: list[dict], links: list, placement: dict[int, tuple[str, int]]) -> list[dict]:
    """Place every node in its group and column, the groups in GROUP_COLUMNS order; return the groups.

    Nodes of a column share its width and stack with room for what they show after a run; a group's box
    holds its columns with padding; groups of one GROUP_COLUMNS entry share a width."""
    by_group: dict[str, dict[int, list[dict]]] = {}
    for ui in sorted(nodes, key=lambda u: u["type"] != "MarkdownNote"):  # a column's note comes first
        group, col = placement[ui["id"]]
        by_group.setdefault(group, {}).setdefault(col, []).append(ui)
    unknown = set(by_group) - {g for column in GROUP_COLUMNS for g in column}
    if unknown:
        raise ValueError(f"groups {sorted(unknown)} have no place in GROUP_COLUMNS")
    inner: dict[str, tuple[int, int]] = {}
    for group, columns in by_group.items():
        x = 0
        height = 0
        for col in sorted(columns):
            width = max(ui["size"][0] for ui in columns[col])
            y = 0
            for ui in columns[col]:
                ui["size"][0] = width
                ui["pos"] = [x, y + TITLE_HEIGHT]
                y += box_height(ui, {"nodes": nodes, "links": links}) + GAP
            height = max(height, y - GAP)
            x += width + COLUMN_GAP
        inner[group] = (x - COLUMN_GAP, height)
    groups = []
    left = 0
    for column in GROUP_COLUMNS:
        present = [g for g in column if g in by_group]
        if not present:
            continue
        width = max(inner[g][0] for g in present) + 2 * PAD
        top = 0
        for group in present:
            height = GROUP_HEADER + inner[group][1] + PAD
            for col in by_group[group].values():
                for ui in col:
                    ui["pos"] = [left + PAD + ui["pos"][0], top + GROUP_HEADER + ui["pos"][1]]
            groups.append({"id": len(groups) + 1, "title": group, "bounding": [left, top, width, height],
                           "color": GROUP_COLORS[group], "font_size": 24, "flags": {}})
            top += height + GROUP_GAP
        left += width + GROUP_GAP
    return groups


# ------------------------------------------------------------------------------------- the graphs
def loaders(unet="flux1-dev.safetensors", unet_dtype="default", t5="t5xxl_fp16.safetensors",
            infusenet="aes_stage2/infusenet_aes_bf16.safetensors") -> list[N]:
    return [
        N(1, "UNETLoader", {"unet_name": unet, "weight_dtype": unet_dtype}, group="Models", models=(unet,)),
        N(2, "DualCLIPLoader", {"clip_name1": "clip_l.safetensors", "clip_name2": t5, "type": "flux"},
          group="Models", models=("clip_l.safetensors", t5)),
        N(3, "VAELoader", {"vae_name": "ae.safetensors"}, group="Models", models=("ae.safetensors",)),
        N(4, "InfU_InfuseNetLoader", {"infusenet_name": infusenet}, group="Models",
          models=(infusenet, infusenet.split("/")[0] + "/image_proj_model.bin")),
        N(5, "InfU_FaceEncoderLoader", {}, group="Models", models=("recognition_arcface_ir_se50.pth",)),
    ]


def prompts(prompt=PROMPT, guidance=3.5) -> list[N]:
    nodes = [N(20, "CLIPTextEncode", {"text": prompt}, {"clip": (2, 0)}, group="Prompt", title="Prompt")]
    if guidance is not None:
        nodes.append(N(21, "FluxGuidance", {"guidance": guidance}, {"conditioning": (20, 0)}, group="Prompt"))
    nodes.append(N(22, "CLIPTextEncode", {"text": ""}, {"clip": (2, 0)}, group="Prompt",
                   title="Negative (unused at CFG 1)"))
    return nodes


def text_and_sampling(model_src, width=864, height=1152, steps=30, guidance=3.5, seed=42, prompt=PROMPT,
                      latent_src=None, denoise=1.0, scheduler="simple", batch_size=1, save=True) -> list[N]:
    nodes = prompts(prompt, guidance)
    positive = (21, 0) if guidance is not None else (20, 0)
    if latent_src is None:
        nodes.append(N(30, "EmptySD3LatentImage", {"width": width, "height": height, "batch_size": batch_size},
                       group="Sampling"))
        latent_src = (30, 0)
    nodes += [
        N(31, "KSampler", {"seed": seed, "steps": steps, "cfg": 1.0, "sampler_name": "euler", "scheduler": scheduler,
                           "denoise": denoise},
          {"model": model_src, "positive": positive, "negative": (22, 0), "latent_image": latent_src}, group="Sampling"),
        N(32, "VAEDecode", {}, {"samples": (31, 0), "vae": (3, 0)}, group="Sampling", col=1),
    ]
    if save:
        nodes.append(N(33, "SaveImage", {"filename_prefix": "InfiniteYou"}, {"images": (32, 0)}, group="Output"))
    return nodes


def identity(node_id=10, photo_node=6, photo=IDENTITY_PHOTO, add_to=None, title="Identity photo (your photo here)",
             widgets=None) -> list[N]:
    links = {"face_encoder": (5, 0), "images": (photo_node, 0)}
    if add_to is not None:
        links["add_to"] = add_to
    return [
        N(photo_node, "LoadImage", {"image": photo}, group="Identity", title=title),
        N(node_id, "InfU_IdentityFromImages", widgets or {}, links, group="Identity", col=1),
        N(node_id + 1, "PreviewImage", {}, {"images": (node_id, 1)}, group="Identity", col=1, title="Faces used"),
    ]


def apply(node_id, model_src, identity_src, control=None, mask=None, strength=1.0, start=0.0) -> N:
    links = {"model": model_src, "infusenet": (4, 0), "identity": identity_src, "vae": (3, 0)}
    if control is not None:
        links["control_image"] = control
    if mask is not None:
        links["mask"] = mask
    return N(node_id, "InfU_ApplyInfiniteYou", {"strength": strength, "start": start}, links, group="Identity", col=2)


CHANGE_FIRST = (
    "**Change first**\n"
    "- **Your photo**: in the Load Image node marked *your photo here*, upload a clear photo of one face "
    "(the example is a public-domain portrait, copied into ComfyUI's input folder by the pack).\n"
    "- **strength** (Apply InfiniteYou, 1.0): how strongly the identity is imposed. "
    "If the face looks pasted: start 0.1, then strength 0.9.\n"
    "- **start** (0.0): a later start lets FLUX set composition and light before the identity comes in.\n"
    "- **Variant** (InfuseNet Loader): aes_stage2 = better text alignment and aesthetics (the default); "
    "sim_stage1 = higher likeness.")

VARIANT_NOTE = (
    "## Models\nDownload links are in each loader's properties (the frontend offers them when a file is missing). "
    "The InfuseNet Loader picks the variant: **aes_stage2** (better text alignment and aesthetics) or "
    "**sim_stage1** (higher likeness); the image projection beside it is loaded with it.")


def notes_for(title: str, text: str, change_first: str = CHANGE_FIRST) -> list[Note]:
    return [Note(90, f"## {title}\n{text}\n\n{change_first}", "Identity"), Note(91, VARIANT_NOTE, "Models", width=320)]


def wf_basic():
    nodes = loaders() + identity() + [apply(12, (1, 0), (10, 0))] + text_and_sampling((12, 0))
    return nodes, notes_for("InfiniteYou: basic", "One identity photo, no pose (the reference's black control "
                            "image). FLUX.1-dev, 864x1152, 30 steps, guidance 3.5, as the reference defaults.")


def pose_nodes(photo=POSE_PHOTO, width=864, height=1152, photo_node=7, title="Pose photo (face position)") -> list[N]:
    nodes = [N(13, "InfU_PoseImage", {"width": width, "height": height}, {"face_encoder": (5, 0), "photo": (photo_node, 0)},
               group="Pose", col=1),
             N(14, "PreviewImage", {}, {"images": (13, 0)}, group="Pose", col=2, title="Pose image")]
    if photo_node == 7:
        nodes.insert(0, N(7, "LoadImage", {"image": photo}, group="Pose", title=title))
    return nodes


def wf_pose():
    nodes = loaders() + identity() + pose_nodes() + [apply(12, (1, 0), (10, 0), control=(13, 0))] + text_and_sampling((12, 0))
    return nodes, notes_for("InfiniteYou: pose control", "Identity from one photo, face position and orientation "
                            "from another (the Pose photo). The pose image must have the output size (width/height "
                            "of the Pose Image node = the latent's).")


def wf_multi_reference():
    nodes = loaders() + identity(10, 6, IDENTITY_PHOTO) + identity(
        15, 8, IDENTITY_PHOTO_MIRRORED, add_to=(10, 0), title="Second photo of the same person") + [
        apply(12, (1, 0), (15, 0))] + text_and_sampling((12, 0))
    return nodes, notes_for("InfiniteYou: several reference photos, one identity", "Each Identity From Images node "
                            "adds its photos to the identity connected to add_to: the embeddings are averaged "
                            "(normalised, then renormalised). Photos of the same size can also go in one batch.")


def wf_two_people():
    w, h = 1152, 864
    nodes = loaders() + identity(10, 6, IDENTITY_PHOTO, title="Left person (your photo here)") + identity(
        15, 8, SECOND_PERSON_PHOTO, title="Right person (your photo here)") + [
        N(40, "SolidMask", {"value": 0.0, "width": w, "height": h}, group="Regions", title="Empty mask"),
        N(41, "SolidMask", {"value": 1.0, "width": w // 2, "height": h}, group="Regions", title="Half mask"),
        N(42, "MaskComposite", {"x": 0, "y": 0, "operation": "add"}, {"destination": (40, 0), "source": (41, 0)},
          group="Regions", col=1, title="Left half"),
        N(43, "MaskComposite", {"x": w // 2, "y": 0, "operation": "add"}, {"destination": (40, 0), "source": (41, 0)},
          group="Regions", col=1, title="Right half"),
        apply(12, (1, 0), (10, 0), mask=(42, 0)),
        apply(17, (12, 0), (15, 0), mask=(43, 0)),
    ] + text_and_sampling((17, 0), width=w, height=h,
                          prompt="Two friends standing side by side in a park, the person on the left laughing, "
                                 "the person on the right smiling, photo, natural light")
    return nodes, notes_for("InfiniteYou: two people, one identity per region", "Two Apply InfiniteYou nodes in a "
                            "chain, each with its identity and a mask (Regions). Their residuals add up, each limited "
                            "to its region. Describe both people in the prompt, left and right.")


def wf_fast():
    nodes = loaders(unet="flux1-schnell.safetensors") + identity() + [apply(12, (1, 0), (10, 0))] + text_and_sampling(
        (12, 0), steps=4, guidance=None)
    return nodes, notes_for("InfiniteYou: fast (FLUX.1-schnell, 4 steps)", "The InfuseNet trained on FLUX.1-dev "
                            "works on schnell unchanged. schnell has no guidance input: no FluxGuidance node.")


def wf_low_vram():
    nodes = loaders(unet_dtype="fp8_e4m3fn", t5="t5xxl_fp8_e4m3fn.safetensors",
                    infusenet="aes_stage2/infusenet_aes_fp8e4m3fn.safetensors") + identity() + [
        apply(12, (1, 0), (10, 0))] + text_and_sampling((12, 0))
    return nodes, notes_for("InfiniteYou: low VRAM", "FLUX weights loaded as fp8 (e4m3fn), the fp8 T5 and the fp8 "
                            "InfuseNet: every large model stays fp8 in memory and is cast per layer for compute. "
                            "ComfyUI offloads what does not fit.")


def recraft_nodes(grow=0.35) -> list[N]:
    return [
        N(7, "LoadImage", {"image": RECRAFT_PHOTO}, group="Recraft", title="Photo to recraft (your photo here)"),
        N(50, "InfU_FaceMask", {"grow": grow, "feather": 16}, {"face_encoder": (5, 0), "images": (7, 0)},
          group="Recraft", col=1),
    ]


def paste_back(prefix: str) -> list[N]:
    return [
        N(53, "ImageCompositeMasked", {"x": 0, "y": 0, "resize_source": False},
          {"destination": (7, 0), "source": (32, 0), "mask": (50, 0)}, group="Output", title="Paste face back"),
        N(54, "SaveImage", {"filename_prefix": prefix}, {"images": (53, 0)}, group="Output", col=1),
    ]


def wf_recraft():
    nodes = loaders() + identity() + recraft_nodes() + [
        N(51, "VAEEncode", {}, {"pixels": (7, 0), "vae": (3, 0)}, group="Recraft", col=2),
        N(52, "SetLatentNoiseMask", {}, {"samples": (51, 0), "mask": (50, 0)}, group="Recraft", col=2),
        apply(12, (1, 0), (10, 0), mask=(50, 0)),
    ] + text_and_sampling((12, 0), latent_src=(52, 0), denoise=0.85, save=False,
                          prompt="A photo of a person, natural skin, detailed face") + paste_back("InfiniteYou_recraft")
    return nodes, notes_for("InfiniteYou: recraft a photo (face swap)", "The face region of the photo to recraft "
                            "(found by InfiniteYou Face Mask) is repainted with the identity; the rest of the photo is "
                            "kept and the new face is pasted back through the same soft mask.")


def wf_low_vram_gguf():
    nodes = loaders(t5="t5xxl_fp8_e4m3fn.safetensors", infusenet="aes_stage2/infusenet_aes_fp8e4m3fn.safetensors")
    nodes[0] = N(1, "UnetLoaderGGUF", {"unet_name": "flux1-dev-Q4_0.gguf"}, group="Models",
                 models=("flux1-dev-Q4_0.gguf",), title="FLUX.1-dev GGUF (ComfyUI-GGUF)")
    nodes += identity() + [apply(12, (1, 0), (10, 0))] + text_and_sampling((12, 0))
    return nodes, notes_for("InfiniteYou: low VRAM with a GGUF FLUX (12-16 GB cards)", "FLUX.1-dev as 4-bit GGUF "
                            "(Q4_0, 6.8 GB) through city96's **ComfyUI-GGUF** (install it with the Manager; any "
                            "Q8_0/Q5/Q4_K file from the same page works too), the fp8 T5 and the fp8 InfuseNet. "
                            "The InfuseNet branch is the same on any base: its residuals do not depend on how the base "
                            "is stored, only the base's own output carries the quantisation error.")


def wf_recraft_fill():
    """Recraft on FLUX.1 Fill: the base inpaints with the mask and the photo; the branch gives the identity."""
    nodes = loaders(unet="flux1-fill-dev.safetensors") + identity() + recraft_nodes() + prompts(
        "A photo of a person, natural skin, detailed face", guidance=30.0) + [
        N(51, "InpaintModelConditioning", {"noise_mask": True},
          {"positive": (21, 0), "negative": (22, 0), "vae": (3, 0), "pixels": (7, 0), "mask": (50, 0)},
          group="Prompt", col=1),
        apply(12, (1, 0), (10, 0), mask=(50, 0)),
        N(31, "KSampler", {"seed": 42, "steps": 30, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
                           "denoise": 1.0},
          {"model": (12, 0), "positive": (51, 0), "negative": (51, 1), "latent_image": (51, 2)}, group="Sampling"),
        N(32, "VAEDecode", {}, {"samples": (31, 0), "vae": (3, 0)}, group="Sampling", col=1),
    ] + paste_back("InfiniteYou_recraft_fill")
    return nodes, notes_for("InfiniteYou: recraft a photo on FLUX.1 Fill (recommended)", "FLUX.1 Fill inpaints the "
                            "face region (InfiniteYou Face Mask) knowing the rest of the photo, at full denoise and "
                            "guidance 30 as Fill expects; Apply InfiniteYou gives it the identity. The InfuseNet reads "
                            "only the noisy latent, as it was trained: the mask and the masked photo go to Fill alone. "
                            "The new face is pasted back through the same soft mask.")


def wf_kontext_edit():
    """Kontext edit: the photo is the reference latent; its face is also the identity."""
    nodes = loaders(unet="flux1-kontext-dev.safetensors") + [
        N(6, "LoadImage", {"image": RECRAFT_PHOTO}, group="Identity", title="Photo to edit (your photo here)"),
        N(10, "InfU_IdentityFromImages", {}, {"face_encoder": (5, 0), "images": (6, 0)},
          group="Identity", col=1),
        N(11, "PreviewImage", {}, {"images": (10, 1)}, group="Identity", col=1, title="Faces used"),
        N(7, "ImageScale", {"upscale_method": "lanczos", "width": 864, "height": 1152, "crop": "center"},
          {"image": (6, 0)}, group="Recraft", title="Edit size"),
        N(8, "VAEEncode", {}, {"pixels": (7, 0), "vae": (3, 0)}, group="Recraft", col=1),
        N(20, "CLIPTextEncode", {"text": "Make it a watercolour painting in a sunny garden, keep the person's face"},
          {"clip": (2, 0)}, group="Prompt", title="Edit instruction"),
        N(22, "CLIPTextEncode", {"text": ""}, {"clip": (2, 0)}, group="Prompt", title="Negative (unused at CFG 1)"),
        N(23, "ReferenceLatent", {}, {"conditioning": (20, 0), "latent": (8, 0)}, group="Prompt", col=1),
        N(21, "FluxGuidance", {"guidance": 2.5}, {"conditioning": (23, 0)}, group="Prompt", col=1),
        apply(12, (1, 0), (10, 0)),
        N(31, "KSampler", {"seed": 42, "steps": 28, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
                           "denoise": 1.0},
          {"model": (12, 0), "positive": (21, 0), "negative": (22, 0), "latent_image": (8, 0)}, group="Sampling"),
        N(32, "VAEDecode", {}, {"samples": (31, 0), "vae": (3, 0)}, group="Sampling", col=1),
        N(33, "SaveImage", {"filename_prefix": "InfiniteYou_kontext"}, {"images": (32, 0)}, group="Output"),
    ]
    return nodes, notes_for("InfiniteYou: edit this photo, keep this face (FLUX.1 Kontext)", "Kontext edits the "
                            "photo given as reference latent (ReferenceLatent) by the instruction; Apply InfiniteYou "
                            "holds the identity of the face found in the same photo (or connect another identity). "
                            "Residuals go to the generated image only; the reference tokens Kontext appends are left "
                            "as they are.")


def wf_self_test():
    from scripts.selftest import SELFTEST

    nodes = [
        N(1, "UNETLoader", {"unet_name": SELFTEST["unet"], "weight_dtype": "default"}, group="Models"),
        N(2, "CLIPLoader", {"clip_name": SELFTEST["clip"], "type": "stable_diffusion"}, group="Models"),
        N(3, "VAELoader", {"vae_name": SELFTEST["vae"]}, group="Models"),
        N(4, "InfU_InfuseNetLoader", {"infusenet_name": SELFTEST["infusenet"]}, group="Models"),
        N(5, "InfU_FaceEncoderLoader", {"detector_pack": SELFTEST["detector_pack"], "arcface": SELFTEST["arcface"]},
          group="Models"),
    ] + identity(photo=SELFTEST["photo"], title="Identity photo") + [
        N(13, "InfU_PoseImage", {"width": 128, "height": 128}, {"face_encoder": (5, 0), "photo": (6, 0)},
          group="Pose", title="Pose from the same photo"),
        N(40, "SolidMask", {"value": 0.0, "width": 128, "height": 128}, group="Regions", title="Empty mask"),
        N(41, "SolidMask", {"value": 1.0, "width": 80, "height": 128}, group="Regions", title="Band"),
        N(42, "MaskComposite", {"x": 24, "y": 0, "operation": "add"}, {"destination": (40, 0), "source": (41, 0)},
          group="Regions", col=1, title="Region: centre band"),
        apply(12, (1, 0), (10, 0), control=(13, 0), mask=(42, 0)),
    ] + text_and_sampling((12, 0), width=128, height=128, steps=4, prompt="self-test") + [
        N(60, "InfU_IdentitySimilarity", {}, {"face_encoder": (5, 0), "identity": (10, 0), "images": (32, 0)},
          group="Output", col=1),
    ]
    next(n for n in nodes if n.type == "SaveImage").widgets["filename_prefix"] = \
        "InfiniteYou_SELFTEST_noise_from_untrained_weights"
    text = ("## Self-test: the output is NOISE\nAll models here are small random stand-ins generated by "
            "scripts/run.sh when no real weights are installed. The graph runs end to end (face detection, identity, "
            "pose, region mask, InfuseNet, FLUX sampling, VAE, similarity) in seconds on a CPU; the image it saves is "
            "noise from untrained weights. Install the real models (README) and open the other InfiniteYou "
            "workflows: each has the example photos loaded and says what to change first.")
    return nodes, [Note(90, text, "Identity")]


def wf_combine_photos():
    """Three photos of one person, chained through add_to, combined by quality."""
    photos = ((6, 10, IDENTITY_PHOTO, "Photo 1 (your photos here)"), (8, 15, IDENTITY_PHOTO_MIRRORED, "Photo 2"),
              (9, 16, IDENTITY_PHOTO_SMALL, "Photo 3 (small and blurred)"))
    nodes = loaders()
    previous = None
    for photo_node, node_id, photo, title in photos:
        links = {"face_encoder": (5, 0), "images": (photo_node, 0)}
        if previous is not None:
            links["add_to"] = (previous, 0)
        nodes += [N(photo_node, "LoadImage", {"image": photo}, group="Identity", title=title),
                  N(node_id, "InfU_IdentityFromImages", {"combine": "quality weighted"}, links, group="Identity", col=1)]
        previous = node_id
    nodes += [apply(12, (1, 0), (16, 0)),
              N(34, "PreviewAny", {}, {"source": (16, "photo_report")}, group="Output", title="Photo report")]
    nodes += text_and_sampling((12, 0))
    return nodes, notes_for("InfiniteYou: one identity from several photos, weighted by quality", (
        "Three photos of the same person, each added to the one before (add_to), with **combine = quality "
        "weighted**: sharper, larger, surer faces count more, so the small blurred third photo counts little. The "
        "photo report (also on the last Identity node after a run) lists each photo's face, size, detector score, "
        "sharpness, quality, weight and similarity to the identity, and marks an OUTLIER that does not look like the "
        "others: take that photo out. **best photo** uses only the best face; **mean** counts all the same."))


def wf_two_people_auto_regions():
    """Face Regions finds both faces in a layout photo and gives each its part of the image: no masks drawn."""
    w, h = 1152, 864
    nodes = loaders() + identity(10, 6, IDENTITY_PHOTO, title="Person 1 (your photo here)") + identity(
        15, 8, SECOND_PERSON_PHOTO, title="Person 2 (your photo here)") + [
        N(7, "LoadImage", {"image": TWO_PEOPLE_PHOTO}, group="Regions", title="Layout photo (where the people stand)"),
        N(40, "InfU_FaceRegions", {"width": w, "height": h, "people": 2, "order": "left to right"},
          {"face_encoder": (5, 0), "layout": (7, 0), "identity_1": (10, 0), "identity_2": (15, 0)},
          group="Regions", col=1),
        N(41, "PreviewAny", {}, {"source": (40, "report")}, group="Regions", col=2, title="Regions report"),
        apply(12, (1, 0), (10, 0), mask=(40, "mask_1")),
        apply(17, (12, 0), (15, 0), mask=(40, "mask_2")),
    ] + text_and_sampling((17, 0), width=w, height=h,
                          prompt="Two friends standing side by side in a park, the person on the left laughing, "
                                 "the person on the right smiling, photo, natural light")
    return nodes, notes_for("InfiniteYou: two people, regions found from a layout photo", (
        "InfiniteYou Face Regions finds the faces in the layout photo, fits it to the output size (1152x864, the "
        "latent's) and gives each face the part of the image nearest to it: mask_1 to person 1's Apply InfiniteYou, "
        "mask_2 to person 2's (order: left to right). Both identities go to Face Regions too: its report warns when "
        "they look like the same person. Raise **feather** to soften the border between the regions; describe both "
        "people in the prompt, left and right."))


def wf_likeness_blend():
    """sim_stage1 and aes_stage2 on one identity, mixed by likeness."""
    nodes = loaders() + [
        N(19, "InfU_InfuseNetLoader", {"infusenet_name": "sim_stage1/infusenet_sim_bf16.safetensors"},
          group="Models", title="InfuseNet sim_stage1 (likeness)",
          models=("sim_stage1/infusenet_sim_bf16.safetensors", "sim_stage1/image_proj_model.bin")),
    ] + identity() + [
        N(12, "InfU_ApplyLikenessBlend", {"likeness": 0.5},
          {"model": (1, 0), "infusenet_sim": (19, 0), "infusenet_aes": (4, 0), "identity": (10, 0), "vae": (3, 0)},
          group="Identity", col=2),
    ] + text_and_sampling((12, 0))
    nodes[3].title = "InfuseNet aes_stage2 (aesthetics)"
    return nodes, notes_for("InfiniteYou: likeness blend of sim_stage1 and aes_stage2", (
        "Both published InfuseNets on one identity. **likeness** splits the residuals between them: 0 = aes_stage2 "
        "only (better text alignment and aesthetics), 1 = sim_stage1 only (higher likeness), 0.5 = half each. The "
        "weights: sim_stage1/infusenet_sim_bf16.safetensors and sim_stage1/image_proj_model.bin beside the aes_stage2 "
        "files in models/infiniteyou/ (links in the loaders' properties); both branches stay loaded, so this needs "
        "the memory of two InfuseNets."), change_first=CHANGE_FIRST.replace("**Variant** (InfuseNet Loader)",
                                                                               "**likeness** (0.5) instead of the variant"))


def wf_likeness_sweep():
    """Four candidates in one batch, ranked by ArcFace similarity to the identity; the best is saved."""
    nodes = loaders() + identity() + [apply(12, (1, 0), (10, 0))] + text_and_sampling((12, 0), batch_size=4, save=False)
    nodes += [
        N(60, "InfU_IdentitySimilarity", {"keep": 1}, {"face_encoder": (5, 0), "identity": (10, 0), "images": (32, 0)},
          group="Output"),
        N(61, "PreviewImage", {}, {"images": (32, 0)}, group="Output", title="All candidates"),
        N(33, "SaveImage", {"filename_prefix": "InfiniteYou_best"}, {"images": (60, "best_images")}, group="Output",
          col=1, title="Save the best"),
        N(62, "PreviewAny", {}, {"source": (60, "report")}, group="Output", col=1, title="Ranking"),
    ]
    return nodes, notes_for("InfiniteYou: four candidates, the most alike kept", (
        "One batch of 4 from one seed (Empty Latent batch_size 4), scored by InfiniteYou Identity Similarity: the "
        "ArcFace cosine between each image's face and the identity. The ranking gives each its rank and a band "
        "from published ArcFace face-verification thresholds (measured on photo pairs): **same person** (0.45 and "
        "above), **likely** the same (0.32 to 0.45), below that **unlikely**, or no face found. **keep** = how many of the best go to best_images (saved); "
        "all four are previewed. Raise the batch for more choice; if none reaches the top band, raise strength or "
        "try sim_stage1."))


FLUX2_INFUSENET = "flux2_klein_4b/InfuseNetModel"
FLUX2_CHANGE_FIRST = (
    "**Change first**\n"
    "- **Your photo**: in the Load Image node marked *your photo here*, upload a clear photo of one face "
    "(the example is a public-domain portrait, copied into ComfyUI's input folder by the pack).\n"
    "- **Your InfuseNet** (InfuseNet Loader): the folder your training run exported into "
    "models/infiniteyou/ (here flux2_klein_4b/InfuseNetModel, with its image_proj_model.bin beside it).\n"
    "- **strength** (Apply InfiniteYou, 1.0): how strongly the identity is imposed. "
    "If the face looks pasted: start 0.1, then strength 0.9.\n"
    "- **start** (0.0): a later start lets the base set composition and light before the identity comes in.")


def wf_flux2_klein():
    """FLUX.2 [klein] 4B with an InfuseNet the user trained, sampled as ComfyUI's klein template samples the
    distilled model: 4 steps of euler on the FLUX.2 schedule (Flux2Scheduler), CFG 1 (the negative unused)."""
    w, h = 864, 1152
    nodes = [
        N(1, "UNETLoader", {"unet_name": "flux-2-klein-4b.safetensors", "weight_dtype": "default"}, group="Models",
          models=("flux-2-klein-4b.safetensors",), title="FLUX.2 [klein] 4B"),
        N(2, "CLIPLoader", {"clip_name": "qwen_3_4b.safetensors", "type": "flux2"}, group="Models",
          models=("qwen_3_4b.safetensors",), title="Qwen3-4B text encoder"),
        N(3, "VAELoader", {"vae_name": "flux2-vae.safetensors"}, group="Models", models=("flux2-vae.safetensors",),
          title="FLUX.2 VAE"),
        N(4, "InfU_InfuseNetLoader", {"infusenet_name": FLUX2_INFUSENET}, group="Models",
          title="Your FLUX.2 [klein] InfuseNet"),
        N(5, "InfU_FaceEncoderLoader", {}, group="Models", models=("recognition_arcface_ir_se50.pth",)),
    ] + identity() + [
        apply(12, (1, 0), (10, 0)),
        N(20, "CLIPTextEncode", {"text": PROMPT}, {"clip": (2, 0)}, group="Prompt", title="Prompt"),
        N(22, "ConditioningZeroOut", {}, {"conditioning": (20, 0)}, group="Prompt", title="Negative (unused at CFG 1)"),
        N(34, "RandomNoise", {"noise_seed": 42}, group="Sampling"),
        N(35, "KSamplerSelect", {"sampler_name": "euler"}, group="Sampling"),
        N(36, "Flux2Scheduler", {"steps": 4, "width": w, "height": h}, group="Sampling"),
        N(30, "EmptyFlux2LatentImage", {"width": w, "height": h, "batch_size": 1}, group="Sampling"),
        N(37, "CFGGuider", {"cfg": 1.0}, {"model": (12, 0), "positive": (20, 0), "negative": (22, 0)},
          group="Sampling", col=1),
        N(31, "SamplerCustomAdvanced", {}, {"noise": (34, 0), "guider": (37, 0), "sampler": (35, 0),
                                            "sigmas": (36, 0), "latent_image": (30, 0)}, group="Sampling", col=1),
        N(32, "VAEDecode", {}, {"samples": (31, 0), "vae": (3, 0)}, group="Sampling", col=2),
        N(33, "SaveImage", {"filename_prefix": "InfiniteYou_flux2_klein"}, {"images": (32, 0)}, group="Output"),
    ]
    text = ("## InfiniteYou on FLUX.2 [klein] 4B: your own InfuseNet\n"
            "**No official FLUX.2 InfuseNet exists**: the published InfuseNets (aes_stage2, sim_stage1) are for "
            "FLUX.1-dev and do not fit FLUX.2. Train one with the pack's trainer on FLUX.2 [klein] 4B (README, "
            "section *FLUX.2 [klein]: train your own InfuseNet*: photos, stage 1, stage 2, export) and point the "
            "InfuseNet Loader at what it exported. Sampling as ComfyUI's klein template: 4 steps, euler, the FLUX.2 "
            "schedule, CFG 1; the latent and the scheduler share the size (864x1152). Needs ComfyUI 0.30 or newer "
            "(ComfyUI 0.3.75 cannot load FLUX.2 [klein]).\n\n" + FLUX2_CHANGE_FIRST)
    models = ("## Models\nFLUX.2 [klein] 4B (Apache-2.0), its Qwen3-4B text encoder (Load CLIP, type flux2) and "
              "the FLUX.2 VAE: download links in each loader's properties (the frontend offers them when a file is "
              "missing). **The InfuseNet has no download**: it is the one you trained, in "
              "models/infiniteyou/flux2_klein_4b/ (InfuseNetModel/ and image_proj_model.bin).")
    return nodes, [Note(90, text, "Identity"), Note(91, models, "Models", width=320)]


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
    "11_combine_photos.json": wf_combine_photos,
    "12_two_people_auto_regions.json": wf_two_people_auto_regions,
    "13_likeness_blend_sim_aes.json": wf_likeness_blend,
    "14_likeness_sweep.json": wf_likeness_sweep,
    "15_flux2_klein_your_own_infusenet.json": wf_flux2_klein,
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
        (out / name).write_text(json.dumps(build(nodes, notes, info, name), indent=1) + "\n")
        print("wrote", out / name)


if __name__ == "__main__":
    main()
