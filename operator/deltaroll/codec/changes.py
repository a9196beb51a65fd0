"""The digest of a tensor's change set: which elements change, from what, to what.

``changes_digest`` binds a delta to the exact elements it touches: BLAKE3 over the changed
positions and both sides' values there. A publisher computes it from its diff; an in-place apply
that starts from a checkpoint it already trusts reads only the base values at the listed
positions, computes the targets, and refuses unless the three together hash to the recorded
digest. That check costs what changed, not what the tensor holds.

The three parts are hashed as separate streams and combined, so a caller may feed them in
windows (a dense tensor's diff arrives chunk by chunk) and the digest does not depend on how
the change set was cut.
"""

from __future__ import annotations

import struct
from typing import Literal

import blake3
import numpy as np

_DOMAIN = b"deltaroll.changes/v1\0"


class ChangesHasher:
    """Accumulates (positions, base values, target values) windows; ascending positions."""

    def __init__(self, width: int) -> None:
        self._width = width
        self._count = 0
        # Large updates (a window of positions: megabytes) are hashed on every core.
        self._positions = blake3.blake3(max_threads=blake3.blake3.AUTO)
        self._base = blake3.blake3(max_threads=blake3.blake3.AUTO)
        self._target = blake3.blake3(max_threads=blake3.blake3.AUTO)

    def update(self, positions: np.ndarray, base_values: np.ndarray, target: np.ndarray) -> None:
        """Add one window: int64 positions and the unsigned-int bits of both sides there."""
        if not positions.shape[0] == base_values.shape[0] == target.shape[0]:
            raise ValueError("positions and values of a change set differ in length")
        self.update_positions(positions)
        self.update_values("base", base_values)
        self.update_values("target", target)

    def update_positions(self, positions: np.ndarray) -> None:
        """Add positions only (an apply gathers values a window of positions at a time and
        resolves the other side's afterwards); the streams must end equally long."""
        self._count += positions.shape[0]
        self._positions.update(_bytes(np.asarray(positions, dtype="<i8")))

    def update_values(self, side: Literal["base", "target"], values: np.ndarray) -> None:
        """Add one side's values only (see :meth:`update_positions`)."""
        (self._base if side == "base" else self._target).update(_bytes(values))

    def hexdigest(self) -> str:
        combined = blake3.blake3(_DOMAIN)
        combined.update(struct.pack("<BQ", self._width, self._count))
        for part in (self._positions, self._base, self._target):
            combined.update(part.digest())
        return combined.hexdigest()


def _bytes(values: np.ndarray) -> memoryview:
    return np.ascontiguousarray(values).reshape(-1).view(np.uint8).data


def changes_digest(positions: np.ndarray, base_values: np.ndarray, target: np.ndarray) -> str:
    """The digest of one whole change set (see :class:`ChangesHasher`)."""
    hasher = ChangesHasher(base_values.dtype.itemsize)
    hasher.update(positions, base_values, target)
    return hasher.hexdigest()
