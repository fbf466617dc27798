"""The optimiser variants, the learning-rate schedules, gradient accumulation and what a watcher is told.

Tolerances: the AdamW variants and the accumulated step compute the same update with float sums in
another order; after 2 steps at lr 1e-3 (largest change ~1.5e-3) parameters agree to 1e-5 absolute,
the bound the distributed tests use for the same reason (Adam's normalisation of the near-zero
gradients of the zero-initialised projections), and losses to 1e-6."""
from __future__ import annotations

import math

import pytest
import torch

from infusenet.trainer.data import CachedDataset
from infusenet.trainer.loop import Trainer
from devtools.tiny_training import tiny_config

STEPS, BATCH = 2, 4


class Recorder:
    """A watcher that writes down what the trainer tells it."""

    def __init__(self):
        self.steps, self.validated, self.closed = [], [], 0

    def on_step(self, step, scalars):
        self.steps.append((step, dict(scalars)))

    def maybe_validate(self, step, trainer):
        self.validated.append(step)

    def close(self):
        self.closed += 1


def _run(base, cache, out, steps=STEPS, batch=BATCH, watcher=None, **overrides):
    trainer = Trainer(tiny_config(cache, out, steps=steps, batch=batch, **overrides), base.patcher, CachedDataset(cache),
                      watcher=watcher)
    start = {k: v.detach().clone() for k, v in trainer.module.state_dict().items()}
    try:
        losses = trainer.run().losses
        params = {k: v.detach().clone() for k, v in trainer.module.state_dict().items()}
        defaults = dict(trainer.optimizer.defaults)
    finally:
        trainer.close()
    return {"losses": losses, "params": params, "start": start, "defaults": defaults}


@pytest.fixture(scope="module")
def reference(base, prepared, tmp_path_factory):
    cache, _ = prepared
    return _run(base, cache, tmp_path_factory.mktemp("ref"))


def _diff(a, b):
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.parametrize("accumulation", [2, 4])
def test_accumulated_step_equals_the_whole_batch(reference, base, prepared, tmp_path, accumulation):
    cache, _ = prepared
    got = _run(base, cache, tmp_path, optim__grad_accum_steps=accumulation)
    diff, change = _diff(got["params"], reference["params"]), _diff(reference["params"], reference["start"])
    print(f"accumulation {accumulation}: max param diff {diff:.3g} (change {change:.3g}), losses {got['losses']} vs "
          f"{reference['losses']}")
    assert change > 1e-3 and diff <= 1e-5
    assert all(abs(a - b) <= 1e-6 for a, b in zip(got["losses"], reference["losses"]))


def test_a_batch_that_does_not_split_into_micro_steps_is_refused(base, prepared, tmp_path):
    cache, _ = prepared
    with pytest.raises(ValueError, match="global batch 4 is not divisible by 1 processes x 3 accumulation steps"):
        Trainer(tiny_config(cache, tmp_path, steps=1, batch=4, optim__grad_accum_steps=3), base.patcher,
                CachedDataset(cache))


@pytest.mark.parametrize("variant,flags", [("adamw_fused", {"fused": True}), ("adamw_low_memory", {"foreach": False})])
def test_optimizer_variants_make_the_same_update(reference, base, prepared, tmp_path, variant, flags):
    cache, _ = prepared
    got = _run(base, cache, tmp_path, optim__optimizer=variant)
    assert reference["defaults"]["foreach"] is True
    assert all(got["defaults"][k] == v for k, v in flags.items()), got["defaults"]
    diff = _diff(got["params"], reference["params"])
    print(f"{variant}: max param diff to foreach AdamW {diff:.3g}")
    assert diff <= 1e-5
    assert all(abs(a - b) <= 1e-6 for a, b in zip(got["losses"], reference["losses"]))


@pytest.mark.parametrize("schedule,factors", [
    ("constant", [0.5, 1.0, 1.0, 1.0, 1.0]),
    # warm-up 2, then cosine over steps 2..5 down to 0.1: 0.1 + 0.9 * (1 + cos(pi * p)) / 2, p = 0, 1/3, 2/3
    ("cosine", [0.5, 1.0, 1.0, 0.775, 0.325]),
])
def test_learning_rate_schedule_and_what_the_watcher_is_told(base, prepared, tmp_path, schedule, factors):
    cache, _ = prepared
    watcher = Recorder()
    got = _run(base, cache, tmp_path, steps=5, batch=2, watcher=watcher, optim__schedule=schedule,
               optim__min_lr_ratio=0.1, optim__grad_clip=1e-3)
    assert [s for s, _ in watcher.steps] == [1, 2, 3, 4, 5] and watcher.validated == [1, 2, 3, 4, 5]
    assert watcher.closed == 1
    lrs = [scalars["lr"] for _, scalars in watcher.steps]
    assert all(math.isclose(lr, 1e-3 * f, rel_tol=1e-12) for lr, f in zip(lrs, factors)), lrs
    for (_, scalars), loss in zip(watcher.steps, got["losses"]):
        assert set(scalars) == {"loss", "lr", "grad_norm", "samples_per_s", "memory_gb"}
        assert scalars["loss"] == loss
        assert scalars["grad_norm"] > 1e-3  # the norm before clipping to 1e-3
        assert scalars["samples_per_s"] > 0 and 0 < scalars["memory_gb"] < 64


def test_full_modules_are_whole_float32_copies_on_the_cpu(base, prepared, tmp_path):
    cache, _ = prepared
    trainer = Trainer(tiny_config(cache, tmp_path, steps=1, batch=2, optim__ema_decay=0.5), base.patcher,
                      CachedDataset(cache))
    try:
        trainer.run()
        net, resampler = trainer.full_modules()
        ema_net, _ = trainer.full_modules(ema=True)
        live = trainer.module.infusenet.state_dict()
        for k, v in net.state_dict().items():
            assert v.device.type == "cpu" and v.dtype == torch.float32 and torch.equal(v, live[k].cpu())
            assert v.data_ptr() != live[k].data_ptr()
        shadow = trainer.ema.full_state_dict()
        assert all(torch.equal(v, shadow[f"infusenet.{k}"]) for k, v in ema_net.state_dict().items())
        assert torch.equal(resampler.state_dict()["proj_in.weight"], trainer.module.resampler.proj_in.weight.detach())
    finally:
        trainer.close()
    no_ema = Trainer(tiny_config(cache, tmp_path / "b", steps=1, batch=2), base.patcher, CachedDataset(cache))
    try:
        with pytest.raises(ValueError, match="optim.ema_decay"):
            no_ema.full_modules(ema=True)
    finally:
        no_ema.close()


def test_the_resampler_learns_at_its_own_rate(base, prepared, tmp_path):
    """``resampler_lr_scale``: the identity projection's group runs at lr x scale through the warm-up and the
    schedule, the rest of the branch at lr; the Resampler moves, and a bad scale is refused by name."""
    cache, _ = prepared
    cfg = tiny_config(cache, tmp_path, steps=3, batch=2, optim__resampler_lr_scale=0.1, optim__schedule="cosine")
    trainer = Trainer(cfg, base.patcher, CachedDataset(cache))
    try:
        groups = trainer.optimizer.param_groups
        resampler = {id(p) for p in trainer.module.resampler.parameters()}
        assert len(groups) == 2 and {id(p) for p in groups[1]["params"]} == resampler
        assert not resampler & {id(p) for p in groups[0]["params"]}
        start = {k: v.detach().clone() for k, v in trainer.module.resampler.state_dict().items()}
        for _ in range(3):
            trainer.train_step()
            assert math.isclose(groups[1]["lr"], 0.1 * groups[0]["lr"], rel_tol=1e-12), (groups[0]["lr"], groups[1]["lr"])
        moved = max(float((v - start[k]).abs().max()) for k, v in trainer.module.resampler.state_dict().items())
        assert moved > 0
    finally:
        trainer.close()
    one = Trainer(tiny_config(cache, tmp_path / "one", steps=1, batch=2), base.patcher, CachedDataset(cache))
    assert len(one.optimizer.param_groups) == 1  # the default keeps one group: the same update as before
    one.close()
    with pytest.raises(ValueError, match="optim.resampler_lr_scale must be a positive number, got 0"):
        Trainer(tiny_config(cache, tmp_path / "bad", steps=1, batch=2, optim__resampler_lr_scale=0.0), base.patcher,
                CachedDataset(cache))
