"""The pack's own socket types: a face encoder, an identity and an InfuseNet are not MODEL or CONDITIONING."""
from comfy_api.latest import io

FaceEncoderType = io.Custom("INFU_FACE_ENCODER")
"""infusenet.face.encoder.FaceEncoder: the antelopev2 detector and the ArcFace IR-SE50."""
IdentityType = io.Custom("INFU_IDENTITY")
"""infusenet.face.identity.FaceIdentity with its InfuseNet tokens set."""
InfuseNetType = io.Custom("INFU_INFUSENET")
"""infusenet.weights.InfuseNetBundle: the InfuseNet (a ComfyUI-managed model) and its projection."""

CATEGORY = "InfiniteYou"
