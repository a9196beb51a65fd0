"""Digests of the tensors the engine holds in memory right now, on request and rate-limited.

Once an engine patches its weights in memory, the disk scrub no longer proves what is served:
the agent asks for these digests and compares them with the version it set. Hashing competes
with inference for the engine's cores, so a caller may spend at most :data:`DUTY` of the time
hashing: after a call that took ``t`` seconds, the next is refused (with how long to wait) for
``t * (1 / DUTY - 1)`` seconds, and at least :data:`MIN_INTERVAL_S` (hashing a small model takes
a millisecond; a check it answers a hundred times a second protects nothing more). An agent asks
for a few tensors at a time, in rotation.
"""

from __future__ import annotations

import threading
import time

from deltaroll.engines.reference.loading import LoadedModel
from deltaroll.engines.weights_identity import tensor_identity

#: The share of wall time served-digest requests may spend hashing.
DUTY = 0.1
#: The shortest wait between two answered requests, however fast the hashing.
MIN_INTERVAL_S = 1.0


class DigestRateLimitedError(Exception):
    """Asked again too soon; ``retry_after_s`` says when it will be answered."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"served digests are rate-limited: ask again in {retry_after_s:.2f} s")
        self.retry_after_s = retry_after_s


class UnknownTensorError(Exception):
    """A requested name is not a tensor the engine holds."""


class ServedDigester:
    """Hashes live tensors for whoever asks, within :data:`DUTY`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next_allowed = 0.0

    def digests(self, loaded: LoadedModel, names: list[str] | None) -> dict[str, str]:
        """``{name: digest}`` of the named tensors (all when None) as they are in memory."""
        held = loaded.model.state_dict()
        wanted = [t.name for t in loaded.tensors] if names is None else names
        unknown = [n for n in wanted if n not in held]
        if unknown:
            raise UnknownTensorError(f"the engine holds no tensor {unknown[0]!r}")
        with self._lock:
            now = time.monotonic()
            if now < self._next_allowed:
                raise DigestRateLimitedError(self._next_allowed - now)
            started = time.monotonic()
            found = {name: tensor_identity(name, held[name]).digest for name in wanted}
            spent = time.monotonic() - started
            self._next_allowed = time.monotonic() + max(spent * (1 / DUTY - 1), MIN_INTERVAL_S)
        return found
