"""The face pipeline's own error type."""
from __future__ import annotations


class FaceError(ValueError):
    """A face model file is missing or unusable, or no usable face was found.

    Messages say what was expected (exact paths), what was found, and what to do."""
