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

from tests.host_features import newest_host_only
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


LEAVER = """
import sys, time, torch.distributed as dist
from pathlib import Path
from infusenet.trainer.distributed import DistContext, shutdown  # torch.distributed only: no ComfyUI import
failed, late, out = sys.argv[1] == "failed", float(sys.argv[2]), Path(sys.argv[3])
dist.init_process_group("gloo")
rank = dist.get_rank()
time.sleep(late if rank == 1 else 0)
(out / f"arrived{rank}").write_text(repr(time.time()))
shutdown(DistContext(rank, 2, rank, "fsdp", None, True), failed=failed and rank == 0)
(out / f"left{rank}").write_text(repr(time.time()))
"""


@newest_host_only("torch.distributed's gloo group and the trainer's shutdown; imports no ComfyUI module")
@pytest.mark.parametrize("failed", [False, True])
def test_a_rank_leaves_the_group_after_the_others_unless_its_run_failed(tmp_path, failed):
    """After a run that ended well a rank leaves the process group only once every rank has arrived (none tears
    down its connections while another still uses them); after a failure it leaves at once, because the others
    may be stuck in a collective that never completes (there rank 1, whose run ended well, finds its peer gone and
    fails instead of waiting). Rank 1 arrives 3 s after rank 0."""
    import subprocess
    import sys

    from tests.infusenet.trainer.launchers import ROOT, _env, free_port

    env = {**_env(), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2"}
    procs = [subprocess.Popen([sys.executable, "-c", LEAVER, "failed" if failed else "ok", "3", str(tmp_path)],
                              cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(2)]
    logs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == ([0, 1] if failed else [0, 0]), "\n".join(log[-3000:] for log in logs)
    left0, arrived1 = (float((tmp_path / name).read_text()) for name in ("left0", "arrived1"))
    assert (left0 < arrived1) if failed else (left0 >= arrived1), (left0, arrived1)
