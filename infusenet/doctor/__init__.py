"""The model doctor: every model file the pack can use, where it goes, whether it is there and opens.

* :mod:`infusenet.catalogue` (data) lists the files: InfuseNets and their identity projections, the antelopev2
  face pack, ArcFace IR-SE50, the FLUX.1 bases of the shipped workflows (dev, schnell, the GGUF, Fill, Kontext), their
  VAE and text encoders; FLUX.2 [klein] 4B, its text encoder and VAE, and the FLUX.2 InfuseNet the user trains.
* :mod:`.places`: ComfyUI's model folders, safe names in them, paths as reports show them.
* :mod:`.checks`: each file checked without loading a model, by the loaders' own checks (safetensors from their
  header, pickles with ``weights_only``; a pickle that carries code is *refused*; ONNX by its signature).
* :mod:`.fixes`: the official link, the exact folder, and one shell line (run in ComfyUI's ``models`` folder).
* :mod:`.report`: the inventory, one file on request, and what a loader node would fail on.
"""
from __future__ import annotations

from .checks import (STATUS_BROKEN, STATUS_MISPLACED, STATUS_MISSING, STATUS_OK, STATUS_REFUSED, Check,
                     check_arcface, check_file, check_infusenet, check_onnx, check_projection, read_safetensors_header)
from .fixes import fix_for, problem_line
from .places import UnsafePath, safe_relative, shown_path
from .report import (check_one, face_loader_problems, face_problems, infusenet_loader_problems, infusenet_problems,
                     inventory, validation_message)

__all__ = [
    "STATUS_BROKEN", "STATUS_MISPLACED", "STATUS_MISSING", "STATUS_OK", "STATUS_REFUSED", "Check", "UnsafePath",
    "check_arcface", "check_file", "check_infusenet", "check_one", "check_onnx", "check_projection",
    "face_loader_problems", "face_problems", "fix_for", "infusenet_loader_problems", "infusenet_problems",
    "inventory", "problem_line", "read_safetensors_header", "safe_relative", "shown_path", "validation_message",
]
