"""Two gloo processes (DDP, started like torchrun starts them) reach the parameters of one process with the same global batch.

Same for two FSDP (FSDP2, fully_shard) processes, whose branch weights are checked to be sharded.

Tolerance: max |parameter difference| <= 1e-5 absolute after 3 AdamW steps at lr 1e-3 (largest change
2.5e-3). The all-reduce sums gradients in another order than one batch; Adam's normalisation turns those
last-bit differences on the near-zero gradients of the zero-initialised projections into differences of
up to ~lr * 1e-4 (measured 3.3e-7). Losses agree to 1e-6."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

STEPS, GLOBAL_BATCH = 3, 4


def _worker(rank, world, port, cache: str, out: str, strategy: str = "ddp") -> None:
    rank, world = int(rank), int(world)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from devtools.comfy_env import enable_in_process_comfy

    enable_in_process_comfy()
    from infusenet.trainer.data import CachedDataset
    from infusenet.trainer.loop import Trainer
    from devtools import flux_pair as fp
    from devtools.tiny_training import tiny_config

    base = fp.make_base(2, 2, seed=0, text_dim=768)
    cfg = tiny_config(cache, out, steps=STEPS, batch=GLOBAL_BATCH, distributed__backend="gloo",
                      distributed__strategy=strategy)
    trainer = Trainer(cfg, base.patcher, CachedDataset(cache))
    if strategy == "fsdp":  # the branch is really sharded: each rank holds half of every block's weights
        from torch.distributed.tensor import DTensor

        weight = trainer.module.infusenet.double_blocks[0].img_attn.qkv.weight
        assert isinstance(weight, DTensor) and weight.to_local().shape[0] == weight.shape[0] // world
    try:
        result = trainer.run()
        params = trainer._state_dicts()[0]  # a collective under FSDP: every rank takes part
        if rank == 0:
            torch.save({"params": params, "losses": result.losses}, os.path.join(out, "final.pt"))
    finally:
        trainer.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one_process(base, prepared, tmp_path, strategy):
    from infusenet.trainer.data import CachedDataset
    from infusenet.trainer.loop import Trainer
    from devtools.tiny_training import tiny_config

    cache, _ = prepared
    single = Trainer(tiny_config(cache, tmp_path / "one", steps=STEPS, batch=GLOBAL_BATCH), base.patcher, CachedDataset(cache))
    start = {k: v.clone() for k, v in single.module.state_dict().items()}
    try:
        one = single.run()
        params_one = single.module.state_dict()
    finally:
        single.close()

    out = tmp_path / "two"
    out.mkdir()
    # Two fresh interpreters (as torchrun starts them): a multiprocessing spawn child would re-run the
    # parent's __main__ and ComfyUI's argument parsing with pytest's arguments.
    port = _free_port()
    root = Path(__file__).resolve().parents[3]
    code = "import sys; from tests.infusenet.trainer.test_distributed import _worker; _worker(*sys.argv[1:])"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(rank), "2", str(port), str(cache), str(out), strategy], cwd=root,
                              env={**os.environ, "PYTHONPATH": str(root)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for rank in range(2)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    two = torch.load(out / "final.pt", weights_only=True)
    change = max(float((params_one[k] - start[k]).abs().max()) for k in start)
    diff = max(float((params_one[k] - two["params"][k]).abs().max()) for k in start)
    print(f"{strategy} vs one process: max param diff {diff:.3g}, max param change {change:.3g}, "
          f"losses {one.losses} vs {two['losses']}")
    assert change > 0
    assert diff <= 1e-5
    assert all(abs(a - b) < 1e-5 for a, b in zip(one.losses, two["losses"]))
