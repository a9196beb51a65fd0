"""Condition helpers that follow metav1.Condition and kstatus.

``lastTransitionTime`` changes only when a condition's status changes, so ``kubectl describe``
says how long a resource has been Ready, not when the operator last looked.
``observedGeneration`` on every condition (and on status) lets Argo CD, Flux and kstatus tell a
stale status from a current one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from deltaroll.api.common import Condition, ConditionStatus
from deltaroll.redact import scrub

# Condition types. Ready/Progressing/Degraded are what people and Argo CD read; kstatus (Flux,
# kpt, cli-utils) only knows Ready plus the "abnormal-true" Reconciling and Stalled, so a
# controller sets Reconciling alongside Progressing and Stalled alongside Degraded, and a
# Degraded rollout reads as Failed rather than forever in progress.
READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
RECONCILING = "Reconciling"
STALLED = "Stalled"


def rfc3339(moment: datetime) -> str:
    """A UTC timestamp the way the API server writes them (whole seconds)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(value: str) -> datetime:
    """A timestamp the API server wrote (``...Z``); ValueError when it is not one."""
    return datetime.fromisoformat(value)


def now_rfc3339() -> str:
    """The current time the way the API server writes timestamps (UTC, whole seconds)."""
    return rfc3339(datetime.now(UTC))


def find_condition(conditions: Sequence[Condition] | None, type_: str) -> Condition | None:
    """The condition of the given type, or None."""
    return next((c for c in conditions or () if c.type == type_), None)


def is_condition_true(conditions: Sequence[Condition] | None, type_: str) -> bool:
    """Whether the condition of the given type is present and True."""
    found = find_condition(conditions, type_)
    return found is not None and found.status == "True"


def set_condition(
    conditions: Sequence[Condition] | None,
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str = "",
    *,
    observed_generation: int | None = None,
    now: str | None = None,
) -> list[Condition]:
    """A new list with the condition of ``type_`` set (added or replaced; order kept).

    lastTransitionTime is kept when the status is unchanged and set to ``now`` otherwise; reason,
    message and observedGeneration are always updated. The message is scrubbed (tenants read it).
    """
    previous = find_condition(conditions, type_)
    transition_time = (
        previous.last_transition_time
        if previous is not None and previous.status == status
        else (now or now_rfc3339())
    )
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=scrub(message),
        last_transition_time=transition_time,
        observed_generation=observed_generation,
    )
    result = [updated if c.type == type_ else c for c in conditions or ()]
    if previous is None:
        result.append(updated)
    return result


def remove_condition(conditions: Sequence[Condition] | None, type_: str) -> list[Condition]:
    """A new list without the condition of ``type_``."""
    return [c for c in conditions or () if c.type != type_]
