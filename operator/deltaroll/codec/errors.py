"""Errors of the codec layer."""

from __future__ import annotations

from deltaroll.errors import DeltarollError


class CodecError(DeltarollError):
    """A delta payload is malformed, truncated, or does not fit the tensor it is applied to.

    The payload is not trusted: every length, count and position is checked before it touches
    the tensor, so a bad payload raises this instead of writing a wrong result.
    """
