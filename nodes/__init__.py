"""The pack's V3 nodes. Thin: the work is done in ``infusenet``."""
from ..infusenet.face.paths import insightface_roots
from ..infusenet.paths import register_model_folders
from .face import FaceEncoderLoader, FaceMask, IdentityFromImages, PoseImage
from .infusenet import ApplyInfiniteYou, InfuseNetLoader
from .regions import FaceRegions
from .likeness import ApplyLikenessBlend
from .similarity import IdentitySimilarity

register_model_folders()
insightface_roots()  # registers models/insightface and models/facexlib

NODES = (
    FaceEncoderLoader,
    IdentityFromImages,
    PoseImage,
    FaceMask,
    InfuseNetLoader,
    ApplyInfiniteYou,
    IdentitySimilarity,
    ApplyLikenessBlend,
    FaceRegions,
)
