"""Identity Similarity: ArcFace cosine between an identity and the faces of generated images."""
from __future__ import annotations

import json

from comfy_api.latest import io

from ..infusenet import report
from ..infusenet.face.similarity import identity_similarity, keep_best, rank_images
from .checks import finite_between, number_problems, require, verdict
from .errors import node_errors
from .types import CATEGORY, FaceEncoderType, IdentityType


NODE_SIMILARITY = "InfiniteYou Identity Similarity"
MAX_KEEP = 64


def report_payload(scores, identity, ranking=None, kept=()) -> list[str]:
    return report.payload(report.similarity_report(scores, identity, ranking, kept))


def score_lines(scores, ranking, kept) -> list[str]:
    """One line per image: similarity, band, rank, kept; then which were kept."""
    rank_of = {index: rank + 1 for rank, index in enumerate(ranking)}
    lines = []
    for i, s in enumerate(scores):
        shown = "no face" if s is None else f"{s:.4f} ({report.similarity_band(s)['band']})"
        lines.append(f"image {i}: {shown}, rank {rank_of[i]}{' (kept)' if i in kept else ''}")
    lines.append(f"kept: {', '.join(f'image {i}' for i in kept)} (best first)")
    return lines


class IdentitySimilarity(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InfU_IdentitySimilarity",
            display_name="InfiniteYou Identity Similarity",
            category=CATEGORY,
            description="ArcFace cosine similarity between the identity and the largest face of each image "
                        "(the paper's ID metric; ID loss = 1 - similarity), with a band from published ArcFace "
                        "verification thresholds: same person >= 0.45, likely >= 0.32, unlikely below. Ranks the "
                        "batch and outputs the best images: make a batch of seeds and keep the likest.",
            is_output_node=True,
            inputs=[
                FaceEncoderType.Input("face_encoder", tooltip="From InfiniteYou Face Encoder Loader."),
                IdentityType.Input("identity", tooltip="The identity the images should show."),
                io.Image.Input("images", tooltip="Generated images (a batch is scored image by image)."),
                io.Int.Input("keep", default=1, min=1, max=MAX_KEEP, optional=True,
                             tooltip="How many images best_images keeps: the highest similarities, best first "
                                     "(images with no face come last)."),
            ],
            outputs=[
                io.Float.Output("best_similarity", display_name="best_similarity", tooltip="The highest similarity in the batch (-1 if no face)."),
                io.Int.Output("best_index", display_name="best_index", tooltip="Which image of the batch scored highest (0-based; -1 if no face)."),
                io.String.Output("report", display_name="report", tooltip="One line per image: its similarity and band "
                                 "(or 'no face') and its rank; then which images were kept."),
                io.Image.Output("best_images", display_name="best_images",
                                tooltip="The 'keep' images with the highest similarity, best first."),
            ],
        )

    @classmethod
    def validate_inputs(cls, keep: int = 1):
        return verdict(NODE_SIMILARITY, [finite_between("keep", keep, 1, MAX_KEEP)])

    @classmethod
    def execute(cls, face_encoder, identity, images, keep=1) -> io.NodeOutput:
        require(NODE_SIMILARITY, [finite_between("keep", keep, 1, MAX_KEEP)])
        require(NODE_SIMILARITY, number_problems(cls, {"keep": keep}))
        with node_errors(NODE_SIMILARITY):
            scores = identity_similarity(face_encoder, identity, images)
        ranking = rank_images(scores)
        best_images, kept = keep_best(images, scores, keep)
        best = scores[ranking[0]] if scores[ranking[0]] is not None else -1.0
        index = ranking[0] if scores[ranking[0]] is not None else -1
        lines = score_lines(scores, ranking, kept)
        note = face_encoder.selftest_note() if hasattr(face_encoder, "selftest_note") else None
        text = "\n".join([note, *lines] if note else lines)
        return io.NodeOutput(float(best), int(index), text, best_images,
                             ui={"text": [text], "infu_similarity": [json.dumps(scores)],
                                 "infu_report": report_payload(scores, identity, ranking, kept)})
