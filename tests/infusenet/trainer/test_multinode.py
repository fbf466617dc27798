"""The real ``torchrun``, two launchers as two "nodes" (``--nnodes 2 --nproc-per-node 1``, c10d
rendezvous on loopback, gloo), trains with the default strategy (FSDP2), and its sharded checkpoints
resume on another world size: 2 ranks to step 2, one process to step 4, 2 ranks to step 6 give the
losses, parameters and EMA of one uninterrupted process.

Tolerance: 1e-5 absolute for losses, parameters and EMA, as in test_distributed (gradient sums in
another order on two ranks, amplified by Adam on near-zero gradients; the checkpoints themselves are
exact: the one-process resume test in test_loop compares bit for bit)."""
from __future__ import annotations

import pytest

from tests.host_features import newest_host_only
from tests.infusenet.trainer.launchers import max_difference, run_torchrun_nodes

STEPS, BATCH, EMA_DECAY = 6, 4, 0.5
SETTINGS = {"optim__ema_decay": EMA_DECAY, "checkpoint__every": 2, "checkpoint__keep_last": 2}

pytestmark = newest_host_only("torch.distributed (torchrun, FSDP2, sharded checkpoints), the same on every host")


def _trainer(base, cache, out, steps, **extra):
    from infusenet.trainer.data import CachedDataset
    from infusenet.trainer.loop import Trainer
    from devtools.tiny_training import tiny_config

    return Trainer(tiny_config(cache, out, steps=steps, batch=BATCH, **SETTINGS, **extra), base.patcher,
                   CachedDataset(cache))


def _exports_what_was_trained(checkpoint, trained: dict, out) -> None:
    """The export of a checkpoint written by 2 ranks holds the gathered weights (and EMA), bit for bit."""
    import torch

    from infusenet import weights
    from infusenet.trainer.export import export_checkpoint

    for use_ema, expected in [(False, trained["params"]), (True, trained["ema"])]:
        paths = export_checkpoint(checkpoint, out / str(use_ema), precision="fp32", use_ema=use_ema)
        bundle = weights.load_infusenet(paths["single"], dtype=torch.float32)
        got = {**{f"infusenet.{k}": v for k, v in bundle.model.state_dict().items()},
               **{f"resampler.{k}": v for k, v in bundle.resampler.state_dict().items()}}
        assert set(got) == set(expected) and all(torch.equal(got[k], expected[k]) for k in got)


def test_two_nodes_and_resuming_on_other_world_sizes_match_one_process(base, prepared, tmp_path):
    from infusenet.trainer.checkpoint import SHARDS_DIR, list_checkpoints, read_state

    cache, _ = prepared
    reference = _trainer(base, cache, tmp_path / "one", STEPS)
    try:
        ref_losses = reference.run().losses
        ref_params = {k: v.detach().clone() for k, v in reference.module.state_dict().items()}
        ref_ema = reference.ema.full_state_dict()
    finally:
        reference.close()

    out = tmp_path / "resumed"
    out.mkdir()
    worker = {"batch": BATCH, "config": {**SETTINGS, "distributed__backend": "gloo", "checkpoint__resume": "latest"}}
    first = run_torchrun_nodes(2, cache, out, {**worker, "steps": 2, "result": "first.pt"})
    assert first["world_size"] == 2 and first["strategy"] == "fsdp" and first["sharded"]["branch"]
    step2 = list_checkpoints(out)[-1]
    assert step2.name == "step-000002" and read_state(step2)["world_size"] == 2
    assert sorted(p.name for p in (step2 / SHARDS_DIR).glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    _exports_what_was_trained(step2, first, tmp_path / "export")

    middle = _trainer(base, cache, out, 4, checkpoint__resume="latest")
    try:
        assert middle.step == 2
        middle_losses = middle.run().losses
    finally:
        middle.close()
    assert read_state(list_checkpoints(out)[-1])["world_size"] == 1

    last = run_torchrun_nodes(2, cache, out, {**worker, "steps": STEPS, "result": "last.pt"})
    assert last["start_step"] == 4
    losses = first["losses"] + middle_losses + last["losses"]
    diff, ema_diff = max_difference(ref_params, last["params"]), max_difference(ref_ema, last["ema"])
    print(f"losses {losses} vs {ref_losses}; max param diff {diff:.3g}, max EMA diff {ema_diff:.3g}")
    assert len(losses) == STEPS and all(abs(a - b) <= 1e-5 for a, b in zip(losses, ref_losses))
    assert diff <= 1e-5 and ema_diff <= 1e-5
    assert [p.name for p in list_checkpoints(out)] == ["step-000004", "step-000006"]  # keep_last 2
