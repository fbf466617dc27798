"""Apply InfiniteYou (likeness blend): sim_stage1 and aes_stage2 as two chained Applies whose residuals add up."""
from __future__ import annotations

from comfy_api.latest import io, ui

from ..infusenet import report
from ..infusenet.likeness import CUSTOM, PRESET_NAMES, blend_warnings, blend_weights, preset_values
from .checks import finite_between, number_problems, one_of, require, verdict
from .errors import node_errors
from .infusenet import apply_branch, pose_latent, preset_input, window_problem
from .types import CATEGORY, IdentityType, InfuseNetType

NODE_BLEND = "Apply InfiniteYou (likeness blend)"


class ApplyLikenessBlend(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InfU_ApplyLikenessBlend",
            display_name=NODE_BLEND,
            category=CATEGORY,
            description="Runs both official InfuseNets on one identity and adds their residuals: sim_stage1 "
                        "(higher similarity) at strength x likeness and aes_stage2 (better text alignment and "
                        "aesthetics) at strength x (1 - likeness). Exactly two chained Apply InfiniteYou nodes; "
                        "the input model is not changed.",
            inputs=[
                io.Model.Input("model", tooltip="A FLUX.1 model (as for Apply InfiniteYou)."),
                InfuseNetType.Input("infusenet_sim", tooltip="The sim_stage1 InfuseNet (InfuseNet Loader)."),
                InfuseNetType.Input("infusenet_aes", tooltip="The aes_stage2 InfuseNet (another InfuseNet Loader)."),
                IdentityType.Input("identity", tooltip="From InfiniteYou Identity From Images: each branch projects "
                                   "the identity with its own InfuseNet's projection."),
                io.Vae.Input("vae", tooltip="The FLUX VAE (encodes the control image, or the reference's black image)."),
                io.Float.Input("likeness", default=0.5, min=0.0, max=1.0, step=0.05,
                               tooltip="The share of sim_stage1. 1: sim_stage1 alone (most like the photo); "
                                       "0: aes_stage2 alone (freer, follows the prompt more)."),
                io.Float.Input("strength", default=1.0, min=0.0, max=2.0, step=0.01,
                               tooltip="Total strength, split between the two InfuseNets by likeness."),
                io.Float.Input("start", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Start of both branches, a fraction of the sampling steps (as the reference)."),
                io.Float.Input("end", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="End of both branches, a fraction of the sampling steps."),
                preset_input(),
                io.Image.Input("control_image", optional=True,
                               tooltip="Pose image from InfiniteYou Pose Image, at the output size."),
                io.Mask.Input("mask", optional=True, tooltip="Limits the identity to a region of the image."),
            ],
            outputs=[io.Model.Output("patched_model", display_name="MODEL", tooltip="The patched copy of the model.")],
        )

    @staticmethod
    def problems(likeness, strength, start, end, preset):
        yield finite_between("likeness", likeness, 0.0, 1.0)
        yield finite_between("strength", strength, 0.0, 2.0)
        yield finite_between("start", start, 0.0, 1.0)
        yield finite_between("end", end, 0.0, 1.0)
        yield one_of("preset", preset, PRESET_NAMES)
        yield window_problem(preset, start, end)

    @classmethod
    def validate_inputs(cls, likeness: float, strength: float, start: float, end: float, preset: str = CUSTOM):
        return verdict(NODE_BLEND, cls.problems(likeness, strength, start, end, preset))

    @classmethod
    def execute(cls, model, infusenet_sim, infusenet_aes, identity, vae, likeness, strength, start, end,
                preset=CUSTOM, control_image=None, mask=None) -> io.NodeOutput:
        require(NODE_BLEND, cls.problems(likeness, strength, start, end, preset))
        require(NODE_BLEND, number_problems(cls, {"likeness": likeness, "strength": strength, "start": start,
                                                 "end": end}))
        strength, start, end = preset_values(preset, strength, start, end)
        weights = blend_weights(strength, likeness)
        patched, branches = model, []
        control = pose_latent(vae, control_image)  # one encode for both branches (black without a pose image)
        with node_errors(NODE_BLEND):
            for socket, bundle, weight in (("infusenet_sim", infusenet_sim, weights.sim),
                                           ("infusenet_aes", infusenet_aes, weights.aes)):
                reprojected = False
                if weight != 0.0:  # a zero weight skips its branch (no InfuseNet run at all)
                    patched, reprojected = apply_branch(patched, bundle, identity, vae, weight, start, end,
                                                        mask=mask, control=control)
                branches.append({"socket": socket, "variant": bundle.variant, "strength": weight,
                                 "ran": weight != 0.0, "reprojected": reprojected})
        if patched is model:
            patched = model.clone()  # both weights 0: an unchanged copy, as Apply at strength 0
        mask_images = [] if mask is None else ui.PreviewMask(report.mask_thumbnail(mask), cls=cls).as_dict()["images"]
        shown = report.blend_report(identity, preset or CUSTOM, strength, start, end, likeness, branches,
                                    blend_warnings(infusenet_sim, infusenet_aes), mask_images, control_image is not None)
        return io.NodeOutput(patched, ui={"infu_report": report.payload(shown)})
