"""Face pipeline for InfiniteYou: antelopev2 detection (insightface), ArcFace IR-SE50 (torch), the
identity object, the keypoint image and identity similarity. Submodules import their heavy
dependencies (insightface, onnxruntime, cv2, comfy) only when called."""
from .errors import FaceError
from .identity import FaceIdentity

__all__ = ["FaceError", "FaceIdentity"]
