"""What the pack does once when ComfyUI loads it: register model folders, say which ComfyUI this is and
whether the pack was tested on it, check the ComfyUI internals it relies on, report the ONNX providers."""
from __future__ import annotations

import logging

from .onnx_runtime import provider_report

log = logging.getLogger("InfiniteYou")


def announce() -> None:
    from . import host
    from .paths import register_model_folders

    register_model_folders()
    log.info("InfiniteYou: %s", host.version_note())
    problems = host.check_contract()
    if problems:
        log.warning("InfiniteYou: %d ComfyUI internals this pack relies on changed on %s; the nodes that use "
                    "them will fail:\n  %s", len(problems), host.host_label(), "\n  ".join(problems))
    log.info(provider_report())
