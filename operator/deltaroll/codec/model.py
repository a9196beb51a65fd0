"""The value the codec hands to its callers: one tensor's delta, opaque payload included."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class TensorKind(enum.StrEnum):
    """How a tensor's delta is represented (what the manifest records per tensor)."""

    UNCHANGED = "unchanged"
    SPARSE = "sparse"
    DENSE = "dense"


@dataclass(frozen=True)
class EncodedTensor:
    """One tensor's delta.

    ``payload`` is self-describing (its first byte names its format), so the encoder can improve
    without changing this type; an ``UNCHANGED`` delta still carries a small payload that records
    the element width and count, so applying it to the wrong tensor is detected.
    """

    kind: TensorKind
    payload: bytes | bytearray  # a bytearray when read from a delta in one buffer
    changed_elements: int
    total_elements: int
    #: BLAKE3 of the change set (see :mod:`deltaroll.codec.changes`); None when unchanged, and
    #: when the caller rebuilt this value from a manifest (the payload does not carry it).
    changes_digest: str | None = None
