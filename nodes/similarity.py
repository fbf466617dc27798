"""Identity Similarity: ArcFace cosine between an identity and the faces of generated images."""
from __future__ import annotations

import json

from comfy_api.latest import io

from ..infusenet import report
from ..infusenet.face.similarity import identity_similarity
from .errors import node_errors
from .types import CATEGORY, FaceEncoderType, IdentityType


def report_payload(scores, identity) -> list[str]:
    return report.payload(report.similarity_report(scores, identity))


class IdentitySimilarity(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InfU_IdentitySimilarity",
            display_name="InfiniteYou Identity Similarity",
            category=CATEGORY,
            description="ArcFace cosine similarity between the identity and the largest face of each image "
                        "(the paper's ID metric; ID loss = 1 - similarity). Use it to rank seeds and tune strength.",
            is_output_node=True,
            inputs=[
                FaceEncoderType.Input("face_encoder", tooltip="From InfiniteYou Face Encoder Loader."),
                IdentityType.Input("identity", tooltip="The identity the images should show."),
                io.Image.Input("images", tooltip="Generated images (a batch is scored image by image)."),
            ],
            outputs=[
                io.Float.Output("best_similarity", display_name="best_similarity", tooltip="The highest similarity in the batch (-1 if no face)."),
                io.Int.Output("best_index", display_name="best_index", tooltip="Which image of the batch scored highest (0-based; -1 if no face)."),
                io.String.Output("report", display_name="report", tooltip="One line per image: its similarity, or 'no face'."),
            ],
        )

    @classmethod
    def execute(cls, face_encoder, identity, images) -> io.NodeOutput:
        with node_errors("InfiniteYou Identity Similarity"):
            scores = identity_similarity(face_encoder, identity, images)
        lines = [f"image {i}: {'no face' if s is None else f'{s:.4f}'}" for i, s in enumerate(scores)]
        valid = [(s, i) for i, s in enumerate(scores) if s is not None]
        best, index = max(valid) if valid else (-1.0, -1)
        note = face_encoder.selftest_note() if hasattr(face_encoder, "selftest_note") else None
        text = "\n".join([note, *lines] if note else lines)
        return io.NodeOutput(float(best), int(index), text,
                             ui={"text": [text], "infu_similarity": [json.dumps(scores)],
                                 "infu_report": report_payload(scores, identity)})
