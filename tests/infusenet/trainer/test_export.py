"""Export round trip: what the trainer exports loads with the pack's loader and, patched into the
base by Apply InfiniteYou, gives the training forward's prediction (fp32 exact; bf16 within 2e-2)."""
from __future__ import annotations

import pytest
import torch

from infusenet import patch, weights
from infusenet.trainer.data import CachedDataset
from infusenet.trainer.export import export_checkpoint
from infusenet.trainer.loop import Trainer
from devtools.tiny_training import tiny_config


@pytest.fixture(scope="module")
def trained(base, prepared, tmp_path_factory):
    cache, _ = prepared
    out = tmp_path_factory.mktemp("run")
    trainer = Trainer(tiny_config(cache, out, steps=3, checkpoint__every=3), base.patcher, CachedDataset(cache))
    try:
        result = trainer.run()
    finally:
        trainer.close()
    return result


@pytest.mark.parametrize("precision,form,tol", [("fp32", "folder", 0.0), ("bf16", "single", 2e-2)])
def test_export_loads_and_matches_training(trained, base, prepared, tmp_path, precision, form, tol):
    cache, _ = prepared
    module = trained.module
    assert float(module.infusenet.controlnet_blocks[0].weight.detach().abs().max()) > 0  # trained away from zero
    paths = export_checkpoint(trained.last_checkpoint, tmp_path, precision=precision)
    bundle = weights.load_infusenet(paths[form], dtype=torch.float32)
    assert bundle.resampler is not None and bundle.config == module.infusenet.config
    item = {k: v.unsqueeze(0) for k, v in CachedDataset(cache)[1].items()}
    frozen = module.base
    lf, ms = frozen.latent_format, frozen.model_sampling
    sigma = torch.tensor([0.6])
    x_t = ms.noise_scaling(sigma, torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(3)), lf.process_in(item["latent"]))
    g = torch.ones(1)
    with torch.no_grad():
        v = module.eval()(x_t, sigma, lf.process_in(item["control"]), item["embedding"], item["context"], item["pooled"], g)
        expected = ms.calculate_denoised(sigma, v, x_t)
        tokens = weights.project_identity(bundle, item["embedding"][0])
        patched = patch.apply_infiniteyou(base.patcher, bundle, tokens, item["control"], strength=1.0)
        opts = {"wrappers": patched.wrappers, "cond_or_uncond": [0]}
        got = patched.model.apply_model(x_t, sigma, c_crossattn=item["context"], y=item["pooled"], guidance=g,
                                        transformer_options=opts)
        base_only = base.patcher.model.apply_model(x_t, sigma, c_crossattn=item["context"], y=item["pooled"], guidance=g)
    assert float((base_only - expected).abs().max()) > 1e-4  # the residuals matter
    err = float((got - expected).abs().max() / expected.abs().max())
    print(precision, form, "relative max error", err)
    assert err <= tol, err
    if precision == "fp32":
        ref = module.resampler(item["embedding"].reshape(1, 1, 512))
        assert torch.equal(tokens, ref)


def test_a_folder_of_the_single_file_layout_exports_the_same_files(trained, tmp_path):
    """Checkpoint folders written before sharded checkpoints (``trainable.safetensors`` with the base's
    rotary axes in its metadata) still export, byte for byte as the sharded checkpoint of the same weights."""
    from safetensors.torch import save_file

    from infusenet import host
    from infusenet.trainer.checkpoint import TRAINABLE_FILE

    old = tmp_path / "step-000003"
    old.mkdir()
    sd = {k: v.detach().float().contiguous() for k, v in trained.module.state_dict().items()}
    axes = ",".join(str(a) for a in trained.module.base.dm.params.axes_dim)
    save_file(host.to_published_keys(sd), str(old / TRAINABLE_FILE), metadata={"axes_dim": axes})
    new = export_checkpoint(trained.last_checkpoint, tmp_path / "from_shards", precision="fp32")
    legacy = export_checkpoint(old, tmp_path / "from_single_file", precision="fp32")
    for key in ("single", "projection_safetensors"):
        with open(new[key], "rb") as a, open(legacy[key], "rb") as b:
            assert a.read() == b.read(), key
    with pytest.raises(FileNotFoundError, match="not a trainer checkpoint folder with EMA"):
        export_checkpoint(old, tmp_path / "ema", use_ema=True)
