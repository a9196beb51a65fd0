"""One code path for an object the operator will not act on: it does not parse, or the admin's
policy refuses it.

Both controllers call :func:`parse_or_mark` and :func:`mark_refused`: the status written comes
from the kind's own builder, which sets kstatus' Ready=False and Stalled=True with the reason
(InvalidSpec, PolicyDenied), so ``kubectl wait``, Flux and Argo CD report the object as broken
instead of trusting the last healthy status. It writes only when a field it sets changes, and
posts one Warning Event then.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from deltaroll.api import InvalidResourceError, ModelDelta, ModelDeployment, parse_resource
from deltaroll.api.conditions import now_rfc3339
from deltaroll.controllers.disclosure import post_event


class _Wire(Protocol):
    def to_wire(self) -> dict[str, Any]: ...


# (status before, generation, message, now, reason) -> the status saying the spec is refused
InvalidStatus = Callable[[Mapping[str, Any] | None, int, str, str, str], _Wire]
PatchStatus = Callable[[str, str, dict[str, Any]], None]


def parse_or_mark(
    body: dict[str, Any], invalid_status: InvalidStatus, patch_status: PatchStatus
) -> ModelDelta | ModelDeployment | None:
    """The typed object; None after marking an invalid one with the fields to fix."""
    try:
        return parse_resource(body)
    except InvalidResourceError as exc:
        mark_refused(body, invalid_status, patch_status, "InvalidSpec", str(exc))
        return None


def mark_refused(
    body: dict[str, Any],
    refused_status: InvalidStatus,
    patch_status: PatchStatus,
    reason: str,
    message: str,
) -> None:
    """Write the refused status (and one Warning Event) unless the object already says so."""
    meta, before = body["metadata"], body.get("status") or {}
    generation = int(meta.get("generation") or 0)
    after = refused_status(before, generation, message, now_rfc3339(), reason).to_wire()
    if any(before.get(key) != value for key, value in after.items()):
        patch_status(meta["namespace"], meta["name"], after)
        post_event(body, "Warning", reason, message)
