"""Turn the model layer's errors into messages that name the node the user sees."""
from __future__ import annotations

from contextlib import contextmanager

from ..infusenet.face.errors import FaceError
from ..infusenet.names import ModelNameError
from ..infusenet.weights import InfiniteYouError


class InfiniteYouNodeError(RuntimeError):
    """Raised from a node: ComfyUI shows the message in the execution_error, the server keeps going."""


@contextmanager
def node_errors(node_name: str):
    """Re-raise the pack's user-facing errors (and missing files) with the node's name in front."""
    try:
        yield
    except (InfiniteYouError, FaceError, ModelNameError, FileNotFoundError) as exc:
        raise InfiniteYouNodeError(f"{node_name}: {exc}") from exc
