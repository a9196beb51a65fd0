"""Named errors of the agent layer.

Most failures the agent meets belong to the layers below (store, checkpoint, engines) and keep
their own types; the agent adds only what is its own: a wrong configuration, an unreadable
annotations file, a failure to report through its pod, and a pull that a newer annotation
made pointless.
"""

from __future__ import annotations

from deltaroll.errors import DeltarollError


class AgentError(DeltarollError):
    """Something the pod agent cannot do; the message says what to fix."""


class AgentConfigError(AgentError):
    """The agent's flags or environment are unusable (e.g. POD_NAME missing)."""

    exit_code = 2


class ReportError(AgentError):
    """The agent could not write its pod's annotations or condition (API unreachable, no RBAC)."""


class PullSupersededError(AgentError):
    """The pod's wanted version changed while the deltas to ``target`` were being pulled, before
    anything touched the weights. Not a failure: the next pass follows ``wanted`` at once."""

    def __init__(self, target: str, wanted: str | None) -> None:
        super().__init__(f"superseded by {wanted or 'no deltaroll.dev/version annotation'}")
        self.target = target
        self.wanted = wanted
