"""Face nodes: load the face encoder, identity from photos, pose image, face mask, identity similarity."""
from __future__ import annotations

import json
import logging

import torch
from comfy_api.latest import io, ui

from ..infusenet import doctor, report
from ..infusenet.face import paths as face_paths
from ..infusenet.face.encoder import load_face_encoder
from ..infusenet.face.combine import COMBINE_MODES
from ..infusenet.face.identity import identity_and_faces, merge_identities, photo_report_lines, preview_image
from ..infusenet.face.pose import DEFAULT_HEIGHT, DEFAULT_WIDTH, pose_image
from ..infusenet.face.masks import face_mask
from .checks import finite_between, given, link_type_problems, number_problems, one_of, plain_names, require, verdict
from .errors import node_errors
from .types import CATEGORY, FaceEncoderType, IdentityType, InfuseNetType, advanced

log = logging.getLogger(__name__)

PROVIDERS = ["auto", "CPU", "CUDA", "ROCm", "CoreML", "DirectML"]
FACE_SELECT = ["largest", "size_rank", "left_to_right"]
DET_SIZES = ["auto", "640", "320", "160"]
MAX_SIDE = 16384


def detector_packs() -> list[str]:
    """Face packs (folders of ONNX files) under ``models/insightface/models``; ``antelopev2`` first."""
    found = set()
    for root in face_paths.insightface_roots():
        models = root / "models"
        if models.is_dir():
            found.update(p.name for p in models.iterdir() if p.is_dir() and any(p.rglob("*.onnx")))
    return [face_paths.PACK_NAME] + sorted(found - {face_paths.PACK_NAME})


def arcface_files() -> list[str]:
    """IR-SE50 weight files found; the reference's file name first (even when missing, so the loader
    can say exactly where it should go)."""
    names = {face_paths.ARCFACE_FILE}
    for folder in face_paths.arcface_search_dirs():
        if folder.is_dir():
            names.update(p.name for p in folder.iterdir() if p.suffix in (".pth", ".pt", ".safetensors")
                         and "arcface" in p.name.lower())
    return [face_paths.ARCFACE_FILE] + sorted(names - {face_paths.ARCFACE_FILE})


NODE_FACE_LOADER = "InfiniteYou Face Encoder Loader"
NODE_IDENTITY = "InfiniteYou Identity From Images"
NODE_POSE = "InfiniteYou Pose Image"
NODE_MASK = "InfiniteYou Face Mask"


def face_select_problems(face_select, det_size):
    yield one_of("face_select", face_select, FACE_SELECT)
    yield one_of("det_size", det_size, DET_SIZES)


def face_choice(face_select: str, face_index: int):
    return "largest" if face_select == "largest" else (face_select, int(face_index))


def face_select_inputs() -> list:
    return [
        io.Combo.Input("face_select", options=FACE_SELECT, default="largest",
                       tooltip="Which face to use in each photo: the largest (as the reference does), the "
                               "n-th by size, or the n-th from left to right."),
        io.Int.Input("face_index", default=0, min=0, max=63,
                     tooltip="With size_rank or left_to_right: which face, counting from 0."),
        io.Combo.Input("det_size", options=DET_SIZES, default="auto",
                       tooltip="Face detection size. auto tries 640, then 320, then 160 when nothing is found "
                               "(the reference's order); a number uses that size only."),
    ]


def selftest_ui(encoder, ui: dict | None = None) -> dict | None:
    """``ui`` with the self-test note added to its text when the encoder's models are the stand-ins."""
    note = encoder.selftest_note() if hasattr(encoder, "selftest_note") else None
    if note is None:
        return ui
    ui = dict(ui or {})
    ui["text"] = [*ui.get("text", []), note]
    return ui


def faces_ui(identity) -> dict:
    """What a frontend needs to draw the faces used: boxes, keypoints and photo sizes."""
    return {"infu_faces": [json.dumps({"boxes": identity.boxes, "keypoints": identity.keypoints,
                                       "image_sizes": identity.image_sizes})]}


class FaceEncoderLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InfU_FaceEncoderLoader",
            display_name="InfiniteYou Face Encoder Loader",
            category=CATEGORY,
            description="Loads the face detector (insightface antelopev2 pack from models/insightface/models/) "
                        "and the ArcFace IR-SE50 identity network (recognition_arcface_ir_se50.pth from "
                        "models/insightface or models/facexlib). Nothing is downloaded.",
            inputs=[
                io.Combo.Input("detector_pack", options=detector_packs(), default=face_paths.PACK_NAME,
                               tooltip="Folder under models/insightface/models/ holding the detector "
                                       "(scrfd_10g_bnkps.onnx). InfiniteYou uses antelopev2."),
                io.Combo.Input("arcface", options=arcface_files(), default=face_paths.ARCFACE_FILE,
                               tooltip="The IR-SE50 ArcFace weights the identity projection was trained on "
                                       "(not glintr100)."),
                io.Combo.Input("providers", options=PROVIDERS, default="auto",
                               tooltip="ONNX Runtime device for detection. auto picks CUDA, ROCm, CoreML or "
                                       "DirectML when available, else the CPU. The log says which is active."),
            ],
            outputs=[FaceEncoderType.Output("face_encoder", display_name="face_encoder", tooltip="Detector + ArcFace, for the other "
                                            "InfiniteYou face nodes.")],
        )

    @staticmethod
    def problems(detector_pack, arcface, providers):
        yield one_of("detector_pack", detector_pack, detector_packs(), "face packs in models/insightface/models")
        yield one_of("arcface", arcface, arcface_files(), "ArcFace files in models/insightface or models/facexlib")
        yield one_of("providers", providers, PROVIDERS)

    @staticmethod
    def missing(detector_pack, arcface, providers, linked=()):
        """A choice sent as null (not linked): the allowed values, as for any other unknown choice."""
        yield given("detector_pack", detector_pack, detector_packs(), linked)
        yield given("arcface", arcface, arcface_files(), linked)
        yield given("providers", providers, PROVIDERS, linked)

    @classmethod
    def validate_inputs(cls, detector_pack: str, arcface: str, providers: str, input_types=None):
        missing = verdict(NODE_FACE_LOADER, [*link_type_problems(cls, input_types),
                                             *cls.missing(detector_pack, arcface, providers, input_types or {})])
        if missing is not True:
            return missing
        names = verdict(NODE_FACE_LOADER, cls.problems(detector_pack, arcface, providers))
        if names is not True or detector_pack is None or arcface is None or not plain_names(detector_pack, arcface):
            # linked names are checked when the node runs; names not listed are refused outright, before
            # any file system look-up (a 5000-character name is not a path to ask the system about)
            return names
        # Plain names of missing or broken files: the doctor says how to get them in place.
        files = doctor.validation_message(doctor.face_loader_problems(detector_pack, arcface), NODE_FACE_LOADER)
        return files if files is not True else names

    @classmethod
    def execute(cls, detector_pack: str, arcface: str, providers: str) -> io.NodeOutput:
        require(NODE_FACE_LOADER, cls.missing(detector_pack, arcface, providers))
        require(NODE_FACE_LOADER, cls.problems(detector_pack, arcface, providers))
        with node_errors(NODE_FACE_LOADER):
            encoder = load_face_encoder(face_paths.resolve_detector_pack(detector_pack),
                                        face_paths.resolve_arcface_name(arcface), providers)
        return io.NodeOutput(encoder, ui=selftest_ui(encoder, {
            "text": [f"detector on {', '.join(encoder.providers)}; "
                     f"ArcFace on {encoder.info.get('device')} ({encoder.info.get('dtype')})"],
            "infu_report": report.payload(report.face_encoder_report(encoder.info))}))


class IdentityFromImages(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InfU_IdentityFromImages",
            display_name="InfiniteYou Identity From Images",
            category=CATEGORY,
            description="Detects the face in each reference photo, aligns it and embeds it with ArcFace. Several "
                        "photos (a batch, or a chain through add_to) combine into one identity as 'combine' says; "
                        "photo_report and the node show each photo's quality, weight and similarity, and mark a "
                        "photo that looks like someone else. Apply InfiniteYou turns the identity into its own "
                        "InfuseNet's tokens, so changing the InfuseNet does not run the faces again.",
            inputs=[
                FaceEncoderType.Input("face_encoder", tooltip="From InfiniteYou Face Encoder Loader."),
                io.Image.Input("images", tooltip="One or more photos of the same person (RGB, RGBA or grayscale, "
                               "any size). Several photos combine into one identity as 'combine' says."),
                *face_select_inputs(),
                IdentityType.Input("add_to", optional=True,
                                   tooltip="An identity to add these photos to (chain nodes for photos of different "
                                           "sizes). All photos are combined again as 'combine' says."),
                io.Combo.Input("combine", options=list(COMBINE_MODES), default="mean", optional=True,
                               tooltip="How several photos make one identity. mean: every photo counts the same "
                                       "(the average of the normalised embeddings). quality weighted: sharper, "
                                       "larger, surer faces count more. best photo: only the best face."),
                advanced(InfuseNetType.Input(
                    "infusenet", optional=True,
                    tooltip="Not used: Apply InfiniteYou projects the identity with its own InfuseNet. Workflows "
                            "saved with this link still run; without it, changing the InfuseNet keeps this node's "
                            "result.")),
            ],
            outputs=[
                IdentityType.Output("identity", display_name="identity", tooltip="For Apply InfiniteYou: the ArcFace "
                                    "embeddings and the faces used (boxes, keypoints)."),
                io.Image.Output("faces", display_name="faces", tooltip="Each photo with the face box and keypoints used, beside the "
                                "aligned 112x112 crop ArcFace saw."),
                io.String.Output("photo_report", display_name="photo_report",
                                 tooltip="One line per photo: the face used, its size, detector score, sharpness, "
                                         "quality, weight, similarity to the identity, and OUTLIER when it does not "
                                         "look like the other photos."),
            ],
        )

    @staticmethod
    def problems(face_select, det_size, combine):
        yield from face_select_problems(face_select, det_size)
        yield one_of("combine", combine, list(COMBINE_MODES))

    @classmethod
    def validate_inputs(cls, face_select: str, det_size: str, combine: str = "mean"):
        return verdict(NODE_IDENTITY, cls.problems(face_select, det_size, combine))

    @classmethod
    def execute(cls, face_encoder, images, face_select, face_index, det_size, combine="mean", add_to=None,
                infusenet=None) -> io.NodeOutput:
        require(NODE_IDENTITY, cls.problems(face_select, det_size, combine))
        require(NODE_IDENTITY, number_problems(cls, {"face_index": face_index}))
        with node_errors(NODE_IDENTITY):
            identity, uses = identity_and_faces(face_encoder, images, face_choice(face_select, face_index), det_size,
                                                combine)
            if add_to is not None:
                identity = merge_identities(add_to, identity, combine)
        lines = photo_report_lines(identity)
        for line in lines:
            if "OUTLIER" in line:
                log.warning("%s: %s", NODE_IDENTITY, line)
        preview = preview_image(uses)
        images = ui.PreviewImage(preview, cls=cls).as_dict()["images"]
        return io.NodeOutput(identity, preview, "\n".join(lines), ui=selftest_ui(face_encoder, {
            **faces_ui(identity), "infu_report": report.payload(report.identity_report(identity, images))}))


class PoseImage(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InfU_PoseImage",
            display_name="InfiniteYou Pose Image",
            category=CATEGORY,
            description="Makes the InfuseNet control image from a pose photo as the reference does: the photo is "
                        "scaled to the output's shorter side and centred on a white canvas of the output size "
                        "(padded or centre-cropped), and its face's five keypoints are drawn on black.",
            inputs=[
                FaceEncoderType.Input("face_encoder", tooltip="From InfiniteYou Face Encoder Loader."),
                io.Image.Input("photo", tooltip="A photo whose face position and orientation to follow (first of the batch)."),
                io.Int.Input("width", default=DEFAULT_WIDTH, min=64, max=MAX_SIDE, step=16,
                             tooltip="Output width: the same as the image you generate."),
                io.Int.Input("height", default=DEFAULT_HEIGHT, min=64, max=MAX_SIDE, step=16,
                             tooltip="Output height: the same as the image you generate."),
                *face_select_inputs(),
                io.Mask.Input("mask", optional=True, tooltip="Only faces whose centre lies inside this mask "
                              "(on the photo) are considered."),
            ],
            outputs=[io.Image.Output("pose_image", display_name="pose_image", tooltip="Keypoints on black at width x height; connect to "
                                     "Apply InfiniteYou's control_image.")],
        )

    @classmethod
    def validate_inputs(cls, face_select: str, det_size: str):
        return verdict(NODE_POSE, face_select_problems(face_select, det_size))

    @classmethod
    def execute(cls, face_encoder, photo, width, height, face_select, face_index, det_size, mask=None) -> io.NodeOutput:
        require(NODE_POSE, face_select_problems(face_select, det_size))
        require(NODE_POSE, number_problems(cls, {"width": width, "height": height, "face_index": face_index}))
        with node_errors(NODE_POSE):
            image = pose_image(face_encoder, photo[0], width, height, mask, face_choice(face_select, face_index), det_size)
        images = ui.PreviewImage(image, cls=cls).as_dict()["images"]
        return io.NodeOutput(image, ui=selftest_ui(face_encoder, {
            "infu_report": report.payload(report.pose_report(width, height, images))}))


class FaceMask(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InfU_FaceMask",
            display_name="InfiniteYou Face Mask",
            category=CATEGORY,
            description="A soft mask over the chosen face of each image, grown around the detected box: the "
                        "region to repaint when recrafting a photo with an identity.",
            inputs=[
                FaceEncoderType.Input("face_encoder", tooltip="From InfiniteYou Face Encoder Loader."),
                io.Image.Input("images", tooltip="Images to find the face in."),
                io.Float.Input("grow", default=0.35, min=0.0, max=3.0, step=0.05,
                               tooltip="How far the mask extends beyond the face box, as a fraction of the box size."),
                io.Int.Input("feather", default=16, min=0, max=256,
                             tooltip="Blur radius of the mask edge, in pixels."),
                *face_select_inputs(),
            ],
            outputs=[io.Mask.Output("mask", display_name="mask", tooltip="1 over the face region, 0 elsewhere, per image.")],
        )

    @staticmethod
    def problems(grow, face_select, det_size):
        yield finite_between("grow", grow, 0.0, 3.0)
        yield from face_select_problems(face_select, det_size)

    @classmethod
    def validate_inputs(cls, grow: float, face_select: str, det_size: str):
        return verdict(NODE_MASK, cls.problems(grow, face_select, det_size))

    @classmethod
    def execute(cls, face_encoder, images, grow, feather, face_select, face_index, det_size) -> io.NodeOutput:
        require(NODE_MASK, cls.problems(grow, face_select, det_size))
        require(NODE_MASK, number_problems(cls, {"grow": grow, "feather": feather, "face_index": face_index}))
        with node_errors(NODE_MASK):
            mask = face_mask(face_encoder, images, grow, feather, face_choice(face_select, face_index), det_size)
        shown = ui.PreviewMask(report.mask_thumbnail(mask), cls=cls).as_dict()["images"]
        return io.NodeOutput(mask, ui=selftest_ui(face_encoder, {
            "infu_report": report.payload(report.face_mask_report(shown, grow, feather))}))
