"""The pack's own socket types (a face encoder, an identity and an InfuseNet are not MODEL or CONDITIONING), and
the expert-setting mark for inputs."""
from comfy_api.latest import io

FaceEncoderType = io.Custom("INFU_FACE_ENCODER")
"""infusenet.face.encoder.FaceEncoder: the antelopev2 detector and the ArcFace IR-SE50."""
IdentityType = io.Custom("INFU_IDENTITY")
"""infusenet.face.identity.FaceIdentity with its InfuseNet tokens set."""
InfuseNetType = io.Custom("INFU_INFUSENET")
"""infusenet.weights.InfuseNetBundle: the InfuseNet (a ComfyUI-managed model) and its projection."""

CATEGORY = "InfiniteYou"


def advanced(spec: io.Input) -> io.Input:
    """Mark ``spec`` as an expert setting: the frontend folds it away until "show advanced" is on, as core nodes do.

    ComfyUI 0.30 has the V3 field (``advanced=True``); older V3 APIs (0.3.75) lack it, and there the same key goes
    into the input's options, where the frontend reads it all the same."""
    if "advanced" in vars(spec):
        spec.advanced = True
    else:
        spec.extra_dict = {**(spec.extra_dict or {}), "advanced": True}
    return spec
