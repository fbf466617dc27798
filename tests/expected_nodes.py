"""The pack's node ids. They are public API: saved workflows refer to them, so they never change."""
PACK_NODE_IDS = (
    "InfU_FaceEncoderLoader",
    "InfU_IdentityFromImages",
    "InfU_PoseImage",
    "InfU_FaceMask",
    "InfU_InfuseNetLoader",
    "InfU_ApplyInfiniteYou",
    "InfU_IdentitySimilarity",
    "InfU_ApplyLikenessBlend",
    "InfU_FaceRegions",
)
