"""Two gloo processes (started like torchrun starts them) reach the parameters and the EMA of one
process with the same global batch: DDP, and FSDP2 (fully_shard) with the frozen base sharded too and
gradient checkpointing on; both accumulate 2 micro-steps per step (DDP syncs on the last only, FSDP
reduce-scatters each);
under FSDP every rank keeps the EMA of its own shard.

Tolerance: max |difference| <= 1e-5 absolute after 3 AdamW steps at lr 1e-3 (largest change
2.5e-3), for the parameters and for the EMA. The all-reduce sums gradients in another order than one
batch; Adam's normalisation turns those last-bit differences on the near-zero gradients of the
zero-initialised projections into differences of up to ~lr * 1e-4 (measured up to 7.4e-7). The EMA is a
convex combination of the parameters after each step, so its difference is bounded by theirs.
Losses agree to 1e-5."""
from __future__ import annotations

import pytest

from tests.infusenet.trainer.launchers import max_difference, run_ranks

STEPS, GLOBAL_BATCH, EMA_DECAY = 3, 4, 0.5


@pytest.fixture(scope="module")
def one_process(base, prepared, tmp_path_factory):
    from infusenet.trainer.data import CachedDataset
    from infusenet.trainer.loop import Trainer
    from devtools.tiny_training import tiny_config

    cache, _ = prepared
    trainer = Trainer(tiny_config(cache, tmp_path_factory.mktemp("one"), steps=STEPS, batch=GLOBAL_BATCH,
                                  optim__ema_decay=EMA_DECAY), base.patcher, CachedDataset(cache))
    start = {k: v.detach().clone() for k, v in trainer.module.state_dict().items()}
    try:
        losses = trainer.run().losses
        params = {k: v.detach().clone() for k, v in trainer.module.state_dict().items()}
        ema = trainer.ema.full_state_dict()
    finally:
        trainer.close()
    return {"start": start, "losses": losses, "params": params, "ema": ema}


@pytest.mark.parametrize("strategy,extra", [
    ("ddp", {"optim__grad_accum_steps": 2}),
    ("fsdp", {"distributed__shard_base": True, "precision__gradient_checkpointing": True, "optim__grad_accum_steps": 2}),
])
def test_two_processes_match_one_process(one_process, prepared, tmp_path, strategy, extra):
    cache, _ = prepared
    two = run_ranks(2, cache, tmp_path, {"steps": STEPS, "batch": GLOBAL_BATCH, "config": {
        "distributed__backend": "gloo", "distributed__strategy": strategy, "optim__ema_decay": EMA_DECAY, **extra}})
    assert two["strategy"] == strategy
    assert two["gradient_as_bucket_view"] is (True if strategy == "ddp" else None)  # DDP: no second copy of the grads
    if strategy == "fsdp":  # each rank holds half of every block's weights: branch, projection and base
        assert two["sharded"] == {"branch": True, "projection": True, "base": True}
    ref = one_process
    change = max_difference(ref["params"], ref["start"])
    ema_change = max_difference(ref["ema"], ref["start"])
    diff = max_difference(ref["params"], two["params"])
    ema_diff = max_difference(ref["ema"], two["ema"])
    print(f"{strategy} vs one process: max param diff {diff:.3g} (change {change:.3g}), max EMA diff {ema_diff:.3g} "
          f"(change {ema_change:.3g}), losses {ref['losses']} vs {two['losses']}")
    assert change > 1e-3 and ema_change > 1e-4
    assert diff <= 1e-5 and ema_diff <= 1e-5
    assert len(two["losses"]) == STEPS
    assert all(abs(a - b) < 1e-5 for a, b in zip(ref["losses"], two["losses"]))
