"""Two identities applied with the automatic region masks: the patched ComfyUI FLUX gives the diffusers
reference velocity computed with those token masks, and each identity's residuals are zero on the other
region's tokens (feather 0)."""
from __future__ import annotations

import torch

from devtools import flux_pair as fp
from devtools.face_models import draw_faces
from infusenet import patch
from infusenet.face.regions import face_regions
from tests.infusenet.test_patch import H, Q, SIGMA, TOL, W, branch_files, inputs, rel

# The 64x64 canvas of an 8x8 latent (4x4 tokens of 16x16 pixels); the faces' regions meet at x = 32,
# a token border, so every token belongs wholly to one face.
LEFT, RIGHT = (6, 18, 22, 42), (42, 18, 58, 42)


def token_mask(mask: torch.Tensor) -> torch.Tensor:
    """[H*8, W*8] -> [1, L, 1] as the patch and the reference read a mask."""
    return torch.nn.functional.interpolate(mask[None, None], size=(H // 2, W // 2), mode="bilinear").reshape(1, -1, 1)


def test_two_identities_with_region_masks_stay_in_their_regions(encoder, tmp_path):
    layout = torch.from_numpy(draw_faces((W * 8, H * 8), [LEFT, RIGHT], texture_seed=9))[None]
    regions = face_regions(encoder, layout, W * 8, H * 8, people=2, order="left to right", feather=0)
    mask_a, mask_b = regions.masks
    tokens_a, tokens_b = token_mask(mask_a), token_mask(mask_b)
    assert set(torch.unique(tokens_a).tolist()) == {0.0, 1.0} and torch.equal(tokens_a + tokens_b, torch.ones_like(tokens_a))
    assert tokens_a.reshape(H // 2, W // 2)[:, :2].eq(1).all() and tokens_b.reshape(H // 2, W // 2)[:, 2:].eq(1).all()

    base = fp.make_base(3, 4)
    net_a, bundle_a, _ = branch_files(tmp_path, 2, 2, seed=5)
    net_b, bundle_b, _ = branch_files(tmp_path, 2, 2, seed=6)
    d = inputs(4)
    ids_b = torch.randn(1, Q, 4096, generator=torch.Generator().manual_seed(7))
    only_a = patch.apply_infiniteyou(base.patcher, bundle_a, d["id_tokens"], d["control"], strength=1.0, mask=mask_a)
    both = patch.apply_infiniteyou(only_a, bundle_b, ids_b, d["control"], strength=0.6, mask=mask_b)
    cond = fp.conds(d["context"], d["pooled"], 3.5)

    x_in, got = fp.comfy_denoised(both, d["x"], SIGMA, cond, None, 1.0)
    v = fp.reference_velocity(base, [fp.Branch(net_a, d["id_tokens"], d["control"], 1.0, tokens_a),
                                     fp.Branch(net_b, ids_b, d["control"], 0.6, tokens_b)],
                              x_in, SIGMA, d["context"], d["pooled"], 3.5)
    error = rel(got, x_in - SIGMA * v)
    print(f"\ntwo identities with the region masks vs the reference: relative error {error:.2e}")
    assert error < TOL

    residuals = fp.recorded_control(only_a, d["x"], cond, SIGMA)
    on_b = tokens_b[0, :, 0].bool()
    blocks = [r for part in ("input", "output") for r in residuals[part] if r is not None]
    assert len(blocks) == 3 + 4  # every base block got identity A's residual
    for r in blocks:
        assert r.shape[1] == on_b.numel()
        assert float(r[:, on_b].abs().max()) == 0.0  # nothing on the other person's tokens
        assert float(r[:, ~on_b].abs().max()) > 0.0
