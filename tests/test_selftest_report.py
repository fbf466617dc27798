"""The self-test face models (an untrained stand-in detector that "finds" any bright patch) are never
used silently: every node that used them says so in its report. The test server's face models are
those stand-ins under the real file names, so the check goes by the model, not by its name. The face nodes run as
the pose (02) and recraft (07) workflows set them, with the generation cut away (``face_part``: no FLUX runs)."""
from __future__ import annotations

from tests.test_hostile_inputs import similarity_prompt
from tests.test_workflows import api_prompt, face_part, photos, run_ok, save_photo  # noqa: F401 (fixture)

FACE_NODES = {"InfU_FaceEncoderLoader", "InfU_IdentityFromImages", "InfU_PoseImage", "InfU_FaceMask",
              "InfU_IdentitySimilarity"}


def reports(result, prompt: dict) -> dict[str, str]:
    """class_type -> the text each face node that ran showed (cached nodes report nothing new)."""
    out = {}
    for node_id, node in prompt.items():
        if node["class_type"] in FACE_NODES and node_id in result.history.get("outputs", {}):
            out[node["class_type"]] = " ".join(result.output(node_id).get("text", []))
    return out


def uncached(prompt: dict) -> dict:
    """The same graph with the face encoder on the CPU provider: a new cache key, so every face node runs."""
    for node in prompt.values():
        if node["class_type"] == "InfU_FaceEncoderLoader":
            node["inputs"]["providers"] = "CPU"
    return prompt


def test_every_node_that_used_the_selftest_face_models_says_so(comfy_server, photos):  # noqa: F811
    save_photo(photos / "face.png", (256, 256), [(72, 56, 184, 200)], 1)  # the similarity prompt's photo
    seen = {}
    info = comfy_server.object_info()
    for prompt in (face_part(api_prompt(comfy_server, "02_pose_control.json"), info, FACE_NODES),
                   face_part(api_prompt(comfy_server, "07_recraft_face_inpaint.json"), info, FACE_NODES),
                   similarity_prompt("aes_stage2/infusenet_aes_bf16.safetensors")):
        prompt = uncached(prompt)
        for class_type, text in reports(run_ok(comfy_server, prompt), prompt).items():
            seen.setdefault(class_type, text)
    assert set(seen) == FACE_NODES
    for class_type, text in seen.items():
        assert "self-test face models" in text and "not real faces" in text, (class_type, text)
