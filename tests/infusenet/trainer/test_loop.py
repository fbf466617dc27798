"""Zero-init start, the loss falling on a handful of samples, exact resume."""
from __future__ import annotations

import torch

from infusenet.trainer.data import CachedDataset
from infusenet.trainer.init import init_from_base
from infusenet.trainer.loop import FrozenBase, TrainableInfuseNet, Trainer, sample_noise
from devtools.tiny_training import tiny_config, tiny_shape


def test_step0_prediction_is_the_base_prediction(base, prepared):
    cache, _ = prepared
    frozen = FrozenBase(base.patcher)
    frozen.load()
    net, resampler = init_from_base(frozen.dm, tiny_shape())
    dm = frozen.dm
    assert torch.equal(net.double_blocks[0].img_attn.qkv.weight, dm.double_blocks[0].img_attn.qkv.weight)
    assert torch.equal(net.single_blocks[1].linear1.weight, dm.single_blocks[1].linear1.weight)
    assert torch.equal(net.img_in.weight, dm.img_in.weight) and torch.equal(net.time_in.in_layer.weight, dm.time_in.in_layer.weight)
    assert net.txt_in.weight.shape != dm.txt_in.weight.shape  # 4096 identity tokens vs 768 text: fresh
    module = TrainableInfuseNet(net, resampler, frozen)
    batch = CachedDataset(cache)[0]
    batch = {k: v.unsqueeze(0) for k, v in batch.items()}
    sigma, noise = sample_noise([0], (16, 8, 8), 16, tiny_config(cache, cache, 1).timesteps, 0)
    x0 = frozen.latent_format.process_in(batch["latent"])
    x_t = frozen.model_sampling.noise_scaling(sigma, noise, x0)
    g = torch.ones(1)
    with torch.no_grad():
        v = module(x_t, sigma, frozen.latent_format.process_in(batch["control"]), batch["embedding"], batch["context"],
                   batch["pooled"], g)
        denoised = base.patcher.model.apply_model(x_t, sigma, c_crossattn=batch["context"], y=batch["pooled"], guidance=g)
        d, s = module.residuals(x_t, sigma, frozen.latent_format.process_in(batch["control"]), batch["embedding"], batch["pooled"])
    assert all(float(r.abs().max()) == 0.0 for r in d + s)
    # bit-identical to ComfyUI's own evaluation of the base (denoised = x_t - sigma * v)
    assert torch.equal(frozen.model_sampling.calculate_denoised(sigma, v, x_t), denoised)


def test_loss_falls_when_overfitting(base, prepared, tmp_path):
    cache, _ = prepared
    cfg = tiny_config(cache, tmp_path, steps=24, batch=2, optim__ema_decay=0.9)
    ds = CachedDataset(cache)
    ds.entries = ds.entries[:2]
    trainer = Trainer(cfg, base.patcher, ds)
    try:
        losses = trainer.run().losses
    finally:
        trainer.close()
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    print("loss curve", [round(x, 4) for x in losses])
    assert last < 0.8 * first, losses


def test_resume_gives_the_same_losses(base, prepared, tmp_path):
    cache, _ = prepared
    common = dict(optim__ema_decay=0.9, checkpoint__every=3, precision__gradient_checkpointing=True)
    ds = CachedDataset(cache)

    def run(out, steps, resume=None):
        cfg = tiny_config(cache, out, steps=steps, batch=2, checkpoint__resume=resume, **common)
        trainer = Trainer(cfg, base.patcher, ds)
        try:
            result = trainer.run()
            return result, {k: v.clone() for k, v in trainer.module.state_dict().items()}, trainer.ema.state_dict()
        finally:
            trainer.close()

    full, params_full, ema_full = run(tmp_path / "a", 6)
    first, _, _ = run(tmp_path / "b", 3)
    second, params_resumed, ema_resumed = run(tmp_path / "b", 6, resume="latest")
    assert second.start_step == 3
    assert first.losses + second.losses == full.losses
    assert all(torch.equal(params_full[k], params_resumed[k]) for k in params_full)
    assert all(torch.equal(ema_full[k], ema_resumed[k]) for k in ema_full)
