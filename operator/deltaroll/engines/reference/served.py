"""Digests of the tensors the engine holds in memory right now, on request and rate-limited.

Once an engine patches its weights in memory, the disk scrub no longer proves what is served:
the agent asks for these digests and compares them with the version it set. Answers keep to
:mod:`deltaroll.engines.served_duty`'s limit (the vLLM extension's too).
"""

from __future__ import annotations

import threading
import time

from deltaroll.engines.reference.loading import LoadedModel
from deltaroll.engines.served_duty import DutyLimit
from deltaroll.engines.weights_identity import tensor_identity


class DigestRateLimitedError(Exception):
    """Asked again too soon; ``retry_after_s`` says when it will be answered."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"served digests are rate-limited: ask again in {retry_after_s:.2f} s")
        self.retry_after_s = retry_after_s


class UnknownTensorError(Exception):
    """A requested name is not a tensor the engine holds."""


class ServedDigester:
    """Hashes live tensors for whoever asks, within the duty limit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._limit = DutyLimit()

    def digests(self, loaded: LoadedModel, names: list[str] | None) -> dict[str, str]:
        """``{name: digest}`` of the named tensors (all when None) as they are in memory."""
        held = loaded.model.state_dict()
        wanted = [t.name for t in loaded.tensors] if names is None else names
        unknown = [n for n in wanted if n not in held]
        if unknown:
            raise UnknownTensorError(f"the engine holds no tensor {unknown[0]!r}")
        with self._lock:
            wait = self._limit.wait_s()
            if wait > 0:
                raise DigestRateLimitedError(wait)
            started = time.monotonic()
            found = {name: tensor_identity(name, held[name]).digest for name in wanted}
            self._limit.spent(time.monotonic() - started)
        return found
