"""What the pack does once when ComfyUI loads it: register model folders, report the ONNX providers."""
from __future__ import annotations

import logging

from .onnx_runtime import provider_report

log = logging.getLogger("InfiniteYou")


def announce() -> None:
    from .paths import register_model_folders

    register_model_folders()
    log.info(provider_report())
