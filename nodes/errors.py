"""Turn the model layer's errors into messages that name the node the user sees."""
from __future__ import annotations

from contextlib import contextmanager

from ..infusenet import host
from ..infusenet.face.errors import FaceError
from ..infusenet.names import ModelNameError
from ..infusenet.weights import InfiniteYouError


DRIFT_ERRORS = (TypeError, AttributeError, ImportError, KeyError)
"""What code calling a ComfyUI internal that changed (a signature, a moved function or key) raises."""


class InfiniteYouNodeError(RuntimeError):
    """Raised from a node: ComfyUI shows the message in the execution_error, the server keeps going."""


@contextmanager
def node_errors(node_name: str):
    """Re-raise the pack's user-facing errors (and missing files) with the node's name in front."""
    try:
        yield
    except (InfiniteYouError, FaceError, ModelNameError, FileNotFoundError, host.HostMismatch) as exc:
        raise InfiniteYouNodeError(f"{node_name}: {exc}") from exc
    except DRIFT_ERRORS as exc:  # what a changed ComfyUI internal raises: say which one changed, if one did
        note = host.drift_note()
        if not note:
            raise
        raise InfiniteYouNodeError(f"{node_name}: {type(exc).__name__}: {exc}. {note} {host.version_note()}") from exc
