"""Face Regions: one mask per person from a layout photo, and a check that the identities do not mix."""
from __future__ import annotations

import logging

import torch
from comfy_api.latest import io, ui

from ..infusenet import report
from ..infusenet.face.regions import (MAX_PEOPLE, ORDERS, REGION_COLOURS, face_regions, mixing_pairs, mixing_warnings,
                                      regions_preview, regions_report_lines)
from ..infusenet.face.pose import DEFAULT_HEIGHT, DEFAULT_WIDTH
from .checks import number_problems, one_of, require, verdict
from .errors import node_errors
from .face import DET_SIZES, MAX_SIDE, selftest_ui
from .types import CATEGORY, FaceEncoderType, IdentityType

log = logging.getLogger(__name__)

NODE_REGIONS = "InfiniteYou Face Regions"


class FaceRegions(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InfU_FaceRegions",
            display_name="InfiniteYou Face Regions",
            category=CATEGORY,
            description="Two or more people without drawing masks: finds the faces in a layout photo, fits it to "
                        "the output size as InfiniteYou Pose Image does, and gives each face the part of the image "
                        "nearest to it. Connect mask_1 to the first person's Apply InfiniteYou, mask_2 to the "
                        "second's. Warns when two connected identities look like the same person.",
            inputs=[
                FaceEncoderType.Input("face_encoder", tooltip="From InfiniteYou Face Encoder Loader."),
                io.Image.Input("layout", tooltip="A photo with the people where they should be (first of the batch): "
                               "the same photo you would give InfiniteYou Pose Image."),
                io.Int.Input("width", default=DEFAULT_WIDTH, min=64, max=MAX_SIDE, step=16,
                             tooltip="Output width: the same as the image you generate."),
                io.Int.Input("height", default=DEFAULT_HEIGHT, min=64, max=MAX_SIDE, step=16,
                             tooltip="Output height: the same as the image you generate."),
                io.Int.Input("people", default=2, min=1, max=MAX_PEOPLE,
                             tooltip="How many people (regions): the largest faces of the layout photo are used."),
                io.Combo.Input("order", options=list(ORDERS), default="left to right",
                               tooltip="Which face is person 1, 2, ...: from the left, from the right, the largest "
                                       "first, or from the top."),
                io.Int.Input("feather", default=0, min=0, max=256,
                             tooltip="Blur of the borders between regions, in pixels. The masks still add up to 1 "
                                     "everywhere; 0 keeps the regions strictly apart."),
                io.Combo.Input("det_size", options=DET_SIZES, default="auto",
                               tooltip="Face detection size. auto tries 640, then 320, then 160 until enough faces "
                                       "are found; a number uses that size only."),
                *[IdentityType.Input(f"identity_{k}", optional=True,
                                     tooltip=f"The identity for region {k} (optional): shown on the node, and "
                                             "checked against the others so that two identities do not mix.")
                  for k in range(1, MAX_PEOPLE + 1)],
            ],
            outputs=[
                *[io.Mask.Output(f"mask_{k}", display_name=f"mask_{k}",
                                 tooltip=f"Region of person {k} ([1, height, width]); all zero when people < {k}. "
                                         "Connect to that person's Apply InfiniteYou mask.")
                  for k in range(1, MAX_PEOPLE + 1)],
                io.Mask.Output("masks", display_name="masks", tooltip="All regions as a batch [people, height, width]."),
                io.String.Output("report", display_name="report",
                                 tooltip="Each region's face and share of the image, which masks are unused, the "
                                         "ArcFace cosine of each pair of identities and any mixing warning."),
            ],
        )

    @staticmethod
    def problems(order, det_size):
        yield one_of("order", order, list(ORDERS))
        yield one_of("det_size", det_size, DET_SIZES)

    @classmethod
    def validate_inputs(cls, order: str, det_size: str):
        return verdict(NODE_REGIONS, cls.problems(order, det_size))

    @classmethod
    def execute(cls, face_encoder, layout, width, height, people, order, feather, det_size,
                identity_1=None, identity_2=None, identity_3=None, identity_4=None) -> io.NodeOutput:
        require(NODE_REGIONS, cls.problems(order, det_size))
        require(NODE_REGIONS, number_problems(cls, {"width": width, "height": height, "people": people,
                                                    "feather": feather}))
        with node_errors(NODE_REGIONS):
            regions = face_regions(face_encoder, layout, width, height, people, order, feather, det_size)
        connected = {f"identity_{k + 1}": ident for k, ident in
                     enumerate((identity_1, identity_2, identity_3, identity_4)) if ident is not None}
        pairs = mixing_pairs(list(connected.items()))
        warnings = mixing_warnings(pairs)
        for warning in warnings:
            log.warning("%s: %s", NODE_REGIONS, warning)
        lines = regions_report_lines(regions, width, height, order, feather, connected, pairs,
                                     lambda identity: report.fingerprint(identity.embedding))
        masks = regions.masks
        empty = torch.zeros((1, height, width), dtype=masks.dtype)
        singles = [masks[k:k + 1] if k < people else empty for k in range(MAX_PEOPLE)]
        shown = ui.PreviewImage(regions_preview(regions), cls=cls).as_dict()["images"]
        rows = [{"mask": k + 1, "box": [round(float(v), 1) for v in face.box],
                 "centre": [round(v, 1) for v in face.centre], "share": round(float(masks[k].mean()), 4),
                 "identity": f"identity_{k + 1}" if f"identity_{k + 1}" in connected else None,
                 "fingerprint": report.fingerprint(connected[f"identity_{k + 1}"].embedding)
                 if f"identity_{k + 1}" in connected else None,
                 "colour": list(REGION_COLOURS[k])} for k, face in enumerate(regions.faces)]
        pair_rows = [{"a": a, "b": b, "cosine": round(c, 4)} for a, b, c in pairs]
        return io.NodeOutput(*singles, masks, "\n".join(lines), ui=selftest_ui(face_encoder, {
            "infu_report": report.payload(report.regions_report(width, height, order, feather, regions.found, rows,
                                                                pair_rows, warnings, shown))}))
