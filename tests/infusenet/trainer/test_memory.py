"""The memory planner: exact parameter counts of the published shapes, per-strategy terms, and its
prediction checked against what real training steps of three tiny FLUX sizes use on the CPU."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from devtools.tiny_training import tiny_config, write_synthetic_cache

RES = (128, 128)          # 16x16 latents -> 64 image tokens
TEXT = 77                 # CLIP-L length of the synthetic context
SIZES = [(64, 2, 2), (128, 2, 4), (192, 3, 3)]   # hidden, double, single
FLUX2_FIELDS = {"txt_ids_dims", "global_modulation", "mlp_silu_act", "ops_bias"}


@pytest.fixture(scope="module")
def memory_cache(tmp_path_factory):
    from infusenet.trainer.data import CachedDataset

    root = write_synthetic_cache(tmp_path_factory.mktemp("memory_cache"), 2, RES, text_tokens=TEXT)
    return root, CachedDataset(root)


def test_parameter_counts_of_the_published_shapes():
    from infusenet import host
    from infusenet.trainer import memory as m
    from infusenet.trainer.config import InfuseNetShape

    v1 = InfuseNetShape()
    dev = m.count_params(m.flux1_dev(), v1)
    assert dev.base == 11_901_408_320                      # FLUX.1-dev as published
    assert abs(dev.branch / 2.95e9 - 1) < 0.005            # InfuseNet v1.0: 4 double + 10 single + embedders
    assert dev.base_block_max == dev.branch_block_max == 339_831_296   # a 3072-wide double block
    assert dev.trained == dev.branch + dev.resampler
    if FLUX2_FIELDS <= {f.name for f in dataclasses.fields(host.FluxParams)}:
        klein4 = m.count_params(m.flux2_klein_4b(), v1)
        klein9 = m.count_params(m.flux2_klein_9b(), v1)
        assert 3.8e9 < klein4.base < 4.0e9 and 8.9e9 < klein9.base < 9.2e9
        two_five = dataclasses.replace(v1, depth=2, depth_single_blocks=5)   # the FLUX.2 InfuseNet's default
        assert m.count_params(m.flux2_klein_4b(), two_five).branch == 1_346_398_464
        assert m.count_params(m.flux2_klein_9b(), two_five).branch == 2_401_274_112
        # the unset shape takes each base's default: 2 + 5 blocks and tokens as wide as its text (7680, 12288)
        assert (klein4.branch, klein4.resampler) == (1_346_398_464, 89_194_240)
        assert (klein9.branch, klein9.resampler) == (2_401_274_112, 95_106_304)
        assert dev.resampler == 84_595_968                                  # FLUX.1: 4096-wide tokens
    else:   # a ComfyUI without FLUX.2 says so by name
        with pytest.raises(host.HostMismatch, match="cannot build that FLUX variant"):
            m.flux2_klein_4b()


@pytest.mark.parametrize("hidden,n_double,n_single", SIZES)
def test_prediction_within_15_percent_of_a_measured_step(memory_cache, hidden, n_double, n_single):
    from devtools import flux_pair as fp
    from infusenet.trainer import memory as m
    from infusenet.trainer.loop import Trainer

    root, dataset = memory_cache
    base = fp.make_base(n_double, n_single, seed=0, hidden=hidden, text_dim=768)
    for checkpointing in (False, True):
        cfg = tiny_config(root, root / "run", steps=4, batch=2, precision__gradient_checkpointing=checkpointing)
        cfg.shape.depth, cfg.shape.depth_single_blocks = 1, 2
        trainer = Trainer(cfg, base.patcher, dataset)
        try:
            measured = m.measure_step(trainer)
        finally:
            trainer.close()
        plan = m.plan_for_run(cfg, 1, base.patcher, "cpu", resolution=RES, text_tokens=TEXT)
        predicted = plan.row("single").terms
        assert measured.how == "live tensor storages"
        # weights, gradients and AdamW moments: exact counts of the same tensors
        assert predicted.base_weights == measured.base_weights
        assert predicted.trainable_weights == measured.trainable_weights
        assert predicted.gradients == measured.gradients
        assert predicted.optimizer == measured.optimizer
        ratio = predicted.activations / measured.activations
        assert 0.85 <= ratio <= 1.15, (hidden, checkpointing, predicted.activations, measured.activations)
        if not checkpointing:
            kept_off = plan.activations.kept
        else:
            assert plan.activations.kept < kept_off / 5    # checkpointing keeps block inputs only


def test_strategies_shard_what_they_say():
    from infusenet.trainer import memory as m
    from infusenet.trainer.config import TrainConfig

    cfg = TrainConfig()
    cfg.data.batch_size = 8
    one = m.plan_memory(cfg, 1, gpu_gb=80, batch_per_rank=1)
    eight = m.plan_memory(cfg, 8, gpu_gb=80)
    single, ddp, fsdp, fsdp_base = one.row("single").terms, *(eight.row(s).terms for s in ("ddp", "fsdp", "fsdp_base"))
    p = one.params
    assert single.base_weights == ddp.base_weights == fsdp.base_weights == 2 * p.base
    assert single.trainable_weights == ddp.trainable_weights == 4 * p.trained
    assert single.gradients == ddp.gradients == 4 * p.trained            # DDP: gradients are bucket views
    assert single.optimizer == 8 * p.trained and single.step_temporary == 4 * p.trained   # foreach AdamW
    assert single.activations == ddp.activations == fsdp.activations    # batch 1 per rank in both
    # FSDP2: 1/8 of the branch, plus the root group and two gathered blocks
    assert fsdp.optimizer == 8 * -(-p.trained // 8)
    assert fsdp.trainable_weights == 4 * (-(-p.trained // 8) + p.branch_root + 2 * p.branch_block_max)
    assert fsdp_base.base_weights < ddp.base_weights / 4
    assert [r.strategy for r in eight.rows] == ["ddp", "fsdp", "fsdp_base"]
    usable = one.headroom.usable_gib(80)
    for plan in (one, eight):
        for r in plan.rows:
            assert r.fits == (r.terms.total / m.GIB <= usable)
    assert not one.row("single").fits and eight.row("fsdp").fits and not eight.row("ddp").fits
    assert one.row("single").terms.total == (single.base_weights + single.trainable_weights + single.gradients
                                             + single.optimizer + single.ema
                                             + max(single.activations, single.step_temporary))
    cfg.data.buckets = [(512, 512), (832, 1216)]      # (width, height): the largest bucket sets the plan
    assert m.plan_memory(cfg, 8).workload.resolution == (1216, 832)
    cfg.optim.optimizer, cfg.optim.ema_decay = "adamw_fused", 0.999
    fused = m.plan_memory(cfg, 8, batch_per_rank=1).row("fsdp").terms
    assert fused.step_temporary == 0 and fused.ema == 4 * -(-p.trained // 8)


def test_activations_follow_resolution_batch_precision_and_checkpointing():
    from infusenet.trainer import memory as m
    from infusenet.trainer.config import InfuseNetShape

    dims, shape = m.flux1_dev(), InfuseNetShape()

    def acts(res=1024, batch=1, bf16=True, gc=True):
        return m.activation_model(dims, shape, m.Workload((res, res), 512, batch), mixed_bf16=bf16,
                                  gradient_checkpointing=gc)

    base = acts()
    assert base.image_tokens == 4096 and m.Workload((512, 768)).image_tokens(dims) == 32 * 48
    # checkpointing keeps the block inputs: [B, 512 + 4096, 3072] in bf16 per base block
    assert base.blocks["base_double"].kept == base.blocks["base_single"].kept == 4608 * 3072 * 2
    two = acts(batch=2)
    for kind in ("base_double", "base_single", "branch_double"):
        assert two.blocks[kind].kept == 2 * base.blocks[kind].kept
    # batch > 1: the residual projection of a single block copies its non-contiguous image-token slice
    assert two.blocks["branch_single"].kept == 2 * base.blocks["branch_single"].kept + 2 * 4096 * 3072 * 2
    assert acts(gc=False).kept > 15 * base.kept
    assert base.autocast_copies == 2 * m.count_params(dims, shape).trained
    fp32 = acts(bf16=False)
    assert fp32.autocast_copies == 0
    assert fp32.blocks["branch_double"].kept == 2 * base.blocks["branch_double"].kept


def test_format_plan_prints_every_strategy():
    from infusenet.trainer import memory as m
    from infusenet.trainer.config import TrainConfig

    cfg = TrainConfig()
    cfg.data.batch_size = 16
    plan = m.plan_memory(cfg, 16, gpu_gb=24)
    text = m.format_plan(plan)
    lines = text.splitlines()
    assert "FLUX.1-dev" in lines[0] and "16 processes" in lines[0] and "4096 image + 512 text tokens" in lines[0]
    assert lines[1].split()[:2] == ["strategy", "base"] and "fits 24 GB" in lines[1]
    for r in plan.rows:
        row = next(line for line in lines if line.startswith(r.label))
        assert row.split()[-1] == ("yes" if r.fits else "no")
        assert f"{r.terms.total / m.GIB:.1f}" in row


def test_bad_input_is_named():
    from infusenet.trainer import memory as m
    from infusenet.trainer.config import TrainConfig

    with pytest.raises(ValueError, match="world_size must be >= 1, got 0"):
        m.plan_memory(TrainConfig(), 0)
    with pytest.raises(ValueError, match="attention must be one of"):
        m.plan_memory(TrainConfig(), 1, attention="xformers")
    with pytest.raises(ValueError, match="expected a ComfyUI FLUX model"):
        m.dims_of(torch.nn.Linear(2, 2))
    with pytest.raises(KeyError, match="no 'ddp' row"):
        m.plan_memory(TrainConfig(), 1).row("ddp")


def test_every_run_logs_its_plan_before_training(memory_cache, caplog):
    """The trainer logs the plan of the run it starts (this base, the data's resolution), and keeps it."""
    import logging

    from devtools import flux_pair as fp
    from infusenet.trainer import memory as m
    from infusenet.trainer.loop import Trainer

    root, dataset = memory_cache
    base = fp.make_base(2, 2, seed=0, hidden=64, text_dim=768)
    cfg = tiny_config(root, root / "run-plan", steps=1, batch=2)
    with caplog.at_level(logging.INFO, logger="infusenet.trainer.loop"):
        trainer = Trainer(cfg, base.patcher, dataset)
    try:
        plan = trainer.memory_plan
        assert plan.world_size == 1 and plan.workload.resolution == RES and [r.label for r in plan.rows] == ["one process"]
        logged = [r.getMessage() for r in caplog.records if "memory plan" in r.getMessage()]
        assert len(logged) == 1 and m.format_plan(plan) in logged[0]
        assert "FLUX 2+2 blocks at 64" in logged[0] and "128x128" in logged[0]
        cfg.schedule.memory_plan = False
        quiet = Trainer(cfg, base.patcher, dataset)
        assert quiet.memory_plan is None
        quiet.close()
    finally:
        trainer.close()
