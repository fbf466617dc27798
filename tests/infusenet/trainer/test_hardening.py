"""Trainer defects found by review: the device each rank uses, a bf16 base in every precision the config
allows, and resuming a checkpoint written with another configuration."""
from __future__ import annotations

import math
import typing

import pytest
import torch

from infusenet.trainer.config import Precision
from infusenet.trainer.data import CachedDataset
from infusenet.trainer.loop import Trainer
from tests.infusenet.trainer.conftest import tiny_config


@pytest.mark.parametrize("local_rank", [0, 1, 3])
def test_each_rank_is_given_its_own_gpu_before_anything_is_loaded(local_rank):
    from infusenet.trainer.distributed import rank_device

    torchrun = {"WORLD_SIZE": "4", "RANK": str(local_rank), "LOCAL_RANK": str(local_rank)}
    assert rank_device(torch.device("cuda", 0), torchrun) == torch.device("cuda", local_rank)
    assert rank_device(torch.device("cuda"), torchrun) == torch.device("cuda", local_rank)
    assert rank_device(torch.device("cpu"), torchrun) == torch.device("cpu")
    # two nodes of 2 GPUs: global rank 3 is local rank 1 on its node
    assert rank_device(torch.device("cuda", 0), {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == torch.device("cuda", 1)
    assert rank_device(torch.device("cuda", 0), {}) == torch.device("cuda", 0)  # one process: ComfyUI's device


def test_the_base_is_loaded_on_the_rank_device(base, prepared, tmp_path):
    cache, _ = prepared
    trainer = Trainer(tiny_config(cache, tmp_path, steps=1), base.patcher, CachedDataset(cache))
    try:
        assert trainer.base.patcher.load_device == trainer.ctx.device == trainer.base.device
    finally:
        trainer.close()


@pytest.mark.parametrize("mixed", typing.get_args(Precision))
def test_a_bf16_base_trains_in_every_precision(prepared, tmp_path, mixed):
    """bf16 weights in the frozen base, float32 trainable branch, with or without autocast (the CPU and
    GPUs without bf16 run without it)."""
    from devtools import flux_pair as fp

    cache, _ = prepared
    bf16 = fp.make_base(2, 2, seed=0, text_dim=768, dtype=torch.bfloat16)
    assert bf16.patcher.model.diffusion_model.img_in.weight.dtype == torch.bfloat16
    trainer = Trainer(tiny_config(cache, tmp_path, steps=2, precision__mixed=mixed), bf16.patcher, CachedDataset(cache))
    try:
        losses = trainer.run().losses
        assert all(p.dtype == torch.float32 for p in trainer.module.parameters())
    finally:
        trainer.close()
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses), losses


def test_resuming_a_checkpoint_of_another_configuration_names_the_differences(base, prepared, tmp_path):
    cache, _ = prepared
    ds = CachedDataset(cache)
    first = Trainer(tiny_config(cache, tmp_path, steps=2, checkpoint__every=2), base.patcher, ds)
    try:
        first.run()
    finally:
        first.close()
    changed = tiny_config(cache, tmp_path, steps=4, checkpoint__every=2, checkpoint__resume="latest",
                          optim__lr=5e-4)
    changed.seed = 1
    with pytest.raises(ValueError) as refusal:
        Trainer(changed, base.patcher, ds).close()
    message = str(refusal.value)
    assert "step-000002" in message and "optim.lr" in message and "seed" in message
    assert "0.001" in message and "0.0005" in message  # what it was, what it is now
    # more steps, another checkpoint interval or logging are not a different configuration
    same = tiny_config(cache, tmp_path, steps=3, checkpoint__every=1, checkpoint__resume="latest", schedule__log_every=5)
    trainer = Trainer(same, base.patcher, ds)
    try:
        assert trainer.step == 2
    finally:
        trainer.close()
