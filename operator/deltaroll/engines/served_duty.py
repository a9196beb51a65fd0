"""How often an engine answers the agent's check of what it serves: the one rate limit for the
reference engine and the vLLM extension alike.

Hashing live tensors competes with inference for the engine's cores (vLLM runs the extension's
``collective_rpc`` between two engine steps, so the steps wait), so the answers may take at most
:data:`DUTY` of the time: after a call that took ``t`` seconds, the next is refused (with how
long to wait) for ``t * (1 / DUTY - 1)`` seconds, and at least :data:`MIN_INTERVAL_S` (hashing a
few small tensors takes a millisecond; a check answered a hundred times a second protects
nothing more). An agent asks for a few tensors at a time, in rotation.
"""

from __future__ import annotations

import time

#: The share of wall time served-digest calls may take from serving.
DUTY = 0.1
#: The shortest wait between two answered calls, however fast the hashing.
MIN_INTERVAL_S = 1.0


class DutyLimit:
    """Says how long to wait before the next call; not thread-safe (callers serialise)."""

    def __init__(self) -> None:
        self._next_allowed = 0.0

    def wait_s(self) -> float:
        """Seconds until a call is allowed (0: now)."""
        return max(0.0, self._next_allowed - time.monotonic())

    def spent(self, seconds: float) -> None:
        """A call just took ``seconds``: refuse until it is paid back."""
        wait = max(seconds * (1 / DUTY - 1), MIN_INTERVAL_S)
        self._next_allowed = time.monotonic() + wait
