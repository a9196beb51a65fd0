"""The agent's states, and how they are written into the ``deltaroll.dev/agent-state`` annotation.

The value is the state's name, followed by ``": "`` and a message when there is one
(``Failed: store s3://... object 'm/objects/ab..' is corrupt ...``). The controller reads it with
:func:`parse_agent_state`; people read it with ``kubectl get pod -o yaml``.
"""

from __future__ import annotations

from enum import StrEnum

from deltaroll.redact import scrub

#: Annotations are small; a message is cut so a pod object never grows unbounded.
MAX_MESSAGE_CHARS = 1000


class AgentState(StrEnum):
    """Where the agent is in moving its pod to the wanted version."""

    IDLE = "Idle"  # no version asked for yet
    PULLING = "Pulling"  # fetching the deltas on the path; the old version is still served
    # patching the weights volume; the pod is not Ready, unless its engine patches its weights in
    # memory (it keeps serving its verified version until it applies the delta behind a hold)
    APPLYING = "Applying"
    RELOADING = "Reloading"  # the engine is loading the new weights; the pod is not Ready
    READY = "Ready"  # the engine holds the wanted version, verified
    FAILED = "Failed"  # cannot reach the wanted version; the message says why


def format_agent_state(state: AgentState, message: str = "") -> str:
    """The annotation value for ``state`` and an optional message (one line, scrubbed, bounded)."""
    one_line = " ".join(scrub(message).split())
    if len(one_line) > MAX_MESSAGE_CHARS:
        one_line = one_line[: MAX_MESSAGE_CHARS - 3] + "..."
    return f"{state.value}: {one_line}" if one_line else state.value


def parse_agent_state(value: str | None) -> tuple[AgentState | None, str]:
    """``(state, message)`` from an annotation value; ``(None, "")`` when absent or unknown."""
    if not value:
        return None, ""
    name, _, message = value.partition(":")
    try:
        return AgentState(name.strip()), message.strip()
    except ValueError:
        return None, ""
