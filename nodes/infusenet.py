"""InfuseNet nodes: load the InfuseNet (+ identity projection), apply InfiniteYou to a FLUX MODEL."""
from __future__ import annotations

import json

import torch
from comfy_api.latest import io, ui

from ..infusenet import doctor, paths, report
from ..infusenet.likeness import CUSTOM, PRESET_NAMES, PRESETS, identity_tokens, preset_values
from ..infusenet.patch import apply_infiniteyou, black_control
from ..infusenet.weights import InfiniteYouError, load_infusenet
from .checks import finite_between, given, link_type_problems, number_problems, one_of, plain_names, require, verdict
from .errors import node_errors
from .types import CATEGORY, IdentityType, InfuseNetType, advanced

AUTO_PROJECTION = "auto (image_proj_model beside the InfuseNet)"
WEIGHT_DTYPES = ["default", "fp8_e4m3fn", "bf16", "fp16", "fp32"]
WINDOWS = ["steps (reference)", "sigma percent"]
APPLY_TO = ["positive (reference)", "positive and negative"]
NODE_APPLY = "Apply InfiniteYou"
NODE_LOADER = "InfiniteYou InfuseNet Loader"
DTYPES = {"default": None, "fp8_e4m3fn": torch.float8_e4m3fn, "bf16": torch.bfloat16, "fp16": torch.float16,
          "fp32": torch.float32}


class InfuseNetLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InfU_InfuseNetLoader",
            display_name="InfiniteYou InfuseNet Loader",
            category=CATEGORY,
            description="Loads an InfuseNet from models/infiniteyou/ or the official pack's models/infinite_you/: "
                        "a diffusers InfuseNetModel folder, or a single bf16 / fp8 safetensors file, with its "
                        "identity projection (image_proj_model.bin). InfuseNets for FLUX.1 and for FLUX.2 [klein] "
                        "load alike. Shows the variant (aes_stage2: better text alignment and aesthetics; "
                        "sim_stage1: higher similarity), precision, depth and the base it was made for.",
            inputs=[
                io.Combo.Input("infusenet_name", options=paths.list_infusenet_models(),
                               tooltip="InfuseNetModel folder or single-file InfuseNet (bf16 or fp8_e4m3fn)."),
                io.Combo.Input("projection", options=[AUTO_PROJECTION, *paths.list_projection_models()],
                               default=AUTO_PROJECTION,
                               tooltip="The identity projection (Resampler) trained with this InfuseNet. auto takes "
                                       "image_proj_model.bin from the InfuseNet's variant folder."),
                io.Combo.Input("weight_dtype", options=WEIGHT_DTYPES, default="default",
                               tooltip="default keeps the file's precision (fp8 files stay fp8 in memory and are "
                                       "cast per layer for compute). fp8_e4m3fn halves the memory of a bf16 file."),
            ],
            outputs=[InfuseNetType.Output("infusenet", display_name="infusenet", tooltip="For Apply InfiniteYou (and the likeness blend).")],
        )

    @staticmethod
    def problems(infusenet_name, projection, weight_dtype):
        names = paths.list_infusenet_models()
        if infusenet_name is not None and not names:
            yield ("no InfuseNet found: put InfuseNetModel/ folders or infusenet_*.safetensors files in "
                   "ComfyUI/models/infiniteyou/ (or models/infinite_you/)")
        yield one_of("infusenet_name", infusenet_name, names, "InfuseNets in models/infiniteyou")
        yield one_of("projection", projection, [AUTO_PROJECTION, *paths.list_projection_models()],
                     "identity projections in models/infiniteyou")
        yield one_of("weight_dtype", weight_dtype, WEIGHT_DTYPES)

    @staticmethod
    def missing(infusenet_name, projection, weight_dtype, linked=()):
        """A choice sent as null (not linked): the allowed values, as for any other unknown choice."""
        yield given("infusenet_name", infusenet_name, paths.list_infusenet_models(), linked)
        yield given("projection", projection, [AUTO_PROJECTION, *paths.list_projection_models()], linked)
        yield given("weight_dtype", weight_dtype, WEIGHT_DTYPES, linked)

    @classmethod
    def validate_inputs(cls, infusenet_name: str, projection: str, weight_dtype: str, input_types=None):
        missing = verdict(NODE_LOADER, [*link_type_problems(cls, input_types),
                                        *cls.missing(infusenet_name, projection, weight_dtype, input_types or {})])
        if missing is not True:
            return missing
        names = verdict(NODE_LOADER, cls.problems(infusenet_name, projection, weight_dtype))
        if infusenet_name is None or not plain_names(infusenet_name, projection):
            return names  # linked names are checked when the node runs; unsafe names are refused outright
        # A plain name that is missing or broken: the doctor says how to get the file in place.
        files = doctor.validation_message(doctor.infusenet_loader_problems(
            infusenet_name, None if projection in (None, AUTO_PROJECTION) else projection), NODE_LOADER)
        return files if files is not True else names

    @classmethod
    def execute(cls, infusenet_name: str, projection: str, weight_dtype: str) -> io.NodeOutput:
        require(NODE_LOADER, cls.missing(infusenet_name, projection, weight_dtype))
        require(NODE_LOADER, cls.problems(infusenet_name, projection, weight_dtype))
        with node_errors(NODE_LOADER):
            path = paths.resolve_model_path(infusenet_name)
            if projection == AUTO_PROJECTION:
                proj = paths.projection_beside(infusenet_name)
                if proj is None:
                    raise InfiniteYouError(
                        f"no identity projection found beside {path}: expected image_proj_model.bin (or "
                        ".safetensors) in the same variant folder; choose one in 'projection'.")
            else:
                proj = paths.resolve_model_path(projection)
            bundle = load_infusenet(path, proj, DTYPES[weight_dtype])
        c = bundle.config
        summary = {"variant": bundle.variant, "precision": bundle.precision, "double_blocks": c.depth,
                   "single_blocks": c.depth_single_blocks, "hidden_size": c.hidden_size, "tokens": bundle.num_tokens,
                   "base": bundle.base}
        text = (f"{bundle.variant} · {bundle.precision} · {c.depth} double + {c.depth_single_blocks} single blocks"
                f" · for {bundle.base_name} · {bundle.num_tokens} identity tokens")
        return io.NodeOutput(bundle, ui={"text": [text], "infu_infusenet": [json.dumps(summary)],
                                         "infu_report": report.payload(report.infusenet_report(bundle))})


class ApplyInfiniteYou(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InfU_ApplyInfiniteYou",
            display_name="Apply InfiniteYou",
            category=CATEGORY,
            description="Returns a copy of the FLUX model that runs the InfuseNet at each sampling step and adds "
                        "its residuals to the FLUX blocks, as the InfiniteYou reference does. The input model is "
                        "not changed. Chain several (each with a mask) for several people in one image. Works on "
                        "FLUX.1 dev/schnell (also GGUF or fp8), Fill and Kontext: the InfuseNet reads only the noisy "
                        "latent (Fill's mask and masked image go to the base alone) and adds to the generated "
                        "image tokens only (never to Kontext's reference tokens). With an InfuseNet made for FLUX.2 "
                        "[klein] (trained with the pack's trainer: README) it works on that klein size. Chroma "
                        "and other families are refused, as is an InfuseNet on the FLUX family it was not made for.",
            inputs=[
                io.Model.Input("model", tooltip="A model of the family the InfuseNet was made for: FLUX.1 (dev, "
                               "schnell, Fill, Kontext; bf16, fp8 or GGUF; with LoRAs...) or FLUX.2 [klein]."),
                InfuseNetType.Input("infusenet", tooltip="From InfiniteYou InfuseNet Loader."),
                IdentityType.Input("identity", tooltip="From InfiniteYou Identity From Images: its embedding is "
                                   "projected into tokens by this InfuseNet's own projection."),
                io.Vae.Input("vae", tooltip="The model's VAE (FLUX.1's, or FLUX.2's for klein): encodes the control "
                             "image (or the black image the reference uses when there is no pose)."),
                io.Float.Input("strength", default=1.0, min=0.0, max=2.0, step=0.01,
                               tooltip="Scale of the residuals (the reference's conditioning scale). 0 leaves the model "
                                       "unchanged. If the face looks pasted, try 0.9 or start 0.1 (see preset)."),
                advanced(io.Float.Input(
                    "start", default=0.0, min=0.0, max=1.0, step=0.01,
                    tooltip="Start of the window: by default a fraction of the sampling steps, as in the reference "
                            "(step i of S runs iff i/S >= start and (i+1)/S <= end).")),
                advanced(io.Float.Input(
                    "end", default=1.0, min=0.0, max=1.0, step=0.01,
                    tooltip="End of the window (fraction of steps, or sigma percent; see window).")),
                advanced(io.Combo.Input(
                    "window", options=WINDOWS, default=WINDOWS[0],
                    tooltip="How start/end are read: fraction of steps (the reference) or ComfyUI's sigma percent "
                            "(like ControlNet nodes). ComfyUI gives the model only the steps of the sampler that runs: "
                            "with a run split over several samplers (KSamplerAdvanced start/end at step, split "
                            "sigmas) steps are those of each sampler, while sigma percent spans the whole run.")),
                advanced(io.Float.Input(
                    "infusenet_guidance", default=1.0, min=0.0, max=100.0, step=0.1,
                    tooltip="Guidance given to the InfuseNet branch. The reference always uses 1.0, whatever the "
                            "model's guidance.")),
                advanced(io.Boolean.Input(
                    "follow_model_guidance", default=False,
                    tooltip="Give the branch the model's own guidance (e.g. 3.5 from FluxGuidance) instead of "
                            "infusenet_guidance, as some other packs do.")),
                advanced(io.Combo.Input(
                    "apply_to", options=APPLY_TO, default=APPLY_TO[0],
                    tooltip="The reference adds residuals to the positive pass only; with CFG > 1 the negative pass "
                            "stays untouched.")),
                io.Image.Input("control_image", optional=True,
                               tooltip="Pose image from InfiniteYou Pose Image, at the output size. Empty: the "
                                       "reference's black image."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Limits this identity to a region of the image (multi-identity). A batch of "
                                      "masks gives each image of the latent batch its own."),
                preset_input(optional=True),
            ],
            outputs=[io.Model.Output("patched_model", display_name="MODEL", tooltip="The patched copy of the model.")],
        )

    @staticmethod
    def problems(strength, start, end, window, infusenet_guidance, apply_to, preset=CUSTOM):
        yield finite_between("strength", strength, 0.0, 2.0)
        yield finite_between("start", start, 0.0, 1.0)
        yield finite_between("end", end, 0.0, 1.0)
        yield finite_between("infusenet_guidance", infusenet_guidance, 0.0, 100.0)
        yield one_of("window", window, WINDOWS)
        yield one_of("apply_to", apply_to, APPLY_TO)
        yield one_of("preset", preset, PRESET_NAMES)
        yield window_problem(preset, start, end)

    @classmethod
    def validate_inputs(cls, strength: float, start: float, end: float, window: str, infusenet_guidance: float,
                        apply_to: str, preset: str = CUSTOM):
        return verdict(NODE_APPLY, cls.problems(strength, start, end, window, infusenet_guidance, apply_to, preset))

    @classmethod
    def execute(cls, model, infusenet, identity, vae, strength, start, end, window, infusenet_guidance,
                follow_model_guidance, apply_to, control_image=None, mask=None, preset=CUSTOM) -> io.NodeOutput:
        require(NODE_APPLY, cls.problems(strength, start, end, window, infusenet_guidance, apply_to, preset))
        require(NODE_APPLY, number_problems(cls, {"strength": strength, "start": start, "end": end,
                                                 "infusenet_guidance": infusenet_guidance}))
        strength, start, end = preset_values(preset, strength, start, end)
        with node_errors(NODE_APPLY):
            patched, reprojected = apply_branch(
                model, infusenet, identity, vae, strength, start, end, window=window,
                guidance=None if follow_model_guidance else infusenet_guidance, apply_to=apply_to,
                mask=mask, control=pose_latent(vae, control_image))
        mask_images = [] if mask is None else ui.PreviewMask(report.mask_thumbnail(mask), cls=cls).as_dict()["images"]
        shown = report.apply_report(identity, strength, start, end, window, mask_images, control_image is not None,
                                    preset=preset or CUSTOM, variant=infusenet.variant, reprojected=reprojected)
        return io.NodeOutput(patched, ui={"infu_report": report.payload(shown)})


def preset_input(optional: bool = False):
    """The preset combo. Its options dict carries the preset table (``infu_presets``) so the web extension sets
    the strength/start/end widgets from the same numbers the server runs."""
    combo = io.Combo.Input("preset", options=PRESET_NAMES, default=CUSTOM, optional=optional,
                           tooltip="custom runs the strength/start/end above. The others set them: reference = "
                                   "strength 1, start 0; less pasted = start 0.1 (the first 10% of the steps, where "
                                   "the layout forms, run on FLUX alone); less pasted, freer = start 0.1 and "
                                   "strength 0.9. Try them when the face looks pasted.")
    combo.extra_dict = {**(combo.extra_dict or {}), "infu_presets": PRESETS}
    return combo


def window_problem(preset, start, end) -> str | None:
    if preset not in (None, CUSTOM):
        return None  # the preset's own window runs
    if start is not None and end is not None and start > end:
        return f"start ({start}) is after end ({end}): the InfuseNet would never run"
    return None


def apply_branch(model, infusenet, identity, vae, strength, start, end, window=WINDOWS[0], guidance=1.0,
                 apply_to=APPLY_TO[0], mask=None, control=None):
    """One Apply InfiniteYou: a patched clone of ``model`` and whether the identity was re-projected with this
    InfuseNet's projection (it came from another InfuseNet). ``control``: the node's ``pose_latent``, which
    branches may share (the control image is then encoded once for all of them)."""
    tokens, reprojected = identity_tokens(infusenet, identity)
    patched = apply_infiniteyou(
        model, infusenet, tokens, control_latent=control, strength=strength, start=start, end=end,
        window="steps" if window == WINDOWS[0] else "sigma", guidance=guidance,
        apply_to="positive" if apply_to == APPLY_TO[0] else "both", mask=mask, vae=vae)
    return patched, reprojected


def pose_latent(vae, image: torch.Tensor | None):
    """A callable for the patch: (h, w) -> the VAE latent of ``image`` (checked against the generated size), or
    of the reference's black image when there is none; encoded once per size, however many patches share it."""
    encoded: dict[tuple[int, int], torch.Tensor] = {}

    def encode(h: int, w: int) -> torch.Tensor:
        if (h, w) not in encoded:
            encoded[(h, w)] = black_control(vae, h, w) if image is None else encode_pose(h, w)
        return encoded[(h, w)]

    def encode_pose(h: int, w: int) -> torch.Tensor:
        height, width = image.shape[1:3]
        ratio = vae.spacial_compression_encode()
        if (h * ratio, w * ratio) != (height, width):
            raise InfiniteYouError(
                f"{NODE_APPLY}: the control image is {width}x{height} but the image being generated is "
                f"{w * ratio}x{h * ratio}. Make the pose image at the output size (InfiniteYou Pose Image's "
                "width and height).")
        return vae.encode(image[:1, :, :, :3])

    return encode
