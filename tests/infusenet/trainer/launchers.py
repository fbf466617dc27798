"""Start tiny training runs in other processes (devtools/train_worker.py): as torchrun's workers with
the environment set by hand, or through the real ``torchrun`` with one launcher per "node"."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]
WORKER = ROOT / "devtools" / "train_worker.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _finish(procs, what: str, timeout: int = 300) -> None:
    logs = [p.communicate(timeout=timeout)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), f"{what} failed:\n" + "\n".join(log[-4000:] for log in logs)


def run_ranks(world: int, cache, out, settings: dict) -> dict:
    """``world`` worker processes with torchrun's environment (one machine); rank 0's result."""
    port = free_port()
    args = [sys.executable, str(WORKER), str(cache), str(out), json.dumps(settings)]
    procs = [subprocess.Popen(args, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env={**_env(), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(r),
                                   "WORLD_SIZE": str(world), "LOCAL_RANK": str(r)}) for r in range(world)]
    _finish(procs, f"{world} ranks")
    return torch.load(Path(out) / settings.get("result", "result.pt"), weights_only=True)


def run_torchrun_nodes(nodes: int, cache, out, settings: dict) -> dict:
    """The real launcher (``python -m torch.distributed.run``), one per node, ``--nproc-per-node 1``,
    c10d rendezvous on loopback; rank 0's result."""
    endpoint = f"127.0.0.1:{free_port()}"
    args = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes), "--nproc-per-node", "1",
            "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "infusenet-test", "--max-restarts", "0",
            str(WORKER), str(cache), str(out), json.dumps(settings)]
    procs = [subprocess.Popen(args, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env())
             for _ in range(nodes)]
    _finish(procs, f"torchrun on {nodes} nodes")
    return torch.load(Path(out) / settings.get("result", "result.pt"), weights_only=True)


def max_difference(a: dict, b: dict) -> float:
    assert set(a) == set(b), sorted(set(a) ^ set(b))[:5]
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
