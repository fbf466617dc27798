"""Offline trainer for InfuseNet + identity projection on a frozen ComfyUI FLUX.1 or FLUX.2 [klein] (Python API).

``train(config)`` runs stage 1 (SPSS pretraining) or stage 2 (SPMS fine-tuning); the pieces:
``data.prepare_cache`` (encoders once), ``init.init_from_base`` (ControlNet-style start),
``loop.Trainer`` (step, checkpoint, resume), ``spms.synthesize_spms`` (stage-2 data),
``export.export_checkpoint`` (files the loaders read). Submodules import torch and ComfyUI.
"""
from __future__ import annotations


def train(config, base=None, dataset=None, watcher=None):
    """See :func:`infusenet.trainer.loop.train`."""
    from .loop import train as _train

    return _train(config, base, dataset, watcher)


__all__ = ["train"]
