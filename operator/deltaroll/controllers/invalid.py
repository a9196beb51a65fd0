"""One code path for an object the API server stored but the operator cannot parse.

Both controllers call :func:`parse_or_mark`: the status it writes comes from the kind's own
builder, which sets kstatus' Ready=False and Stalled=True with the reason InvalidSpec, so
``kubectl wait``, Flux and Argo CD report the object as broken instead of trusting the last
healthy status. It writes only when a field it sets changes, and posts one Warning Event then.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, cast

import kopf

from deltaroll.api import InvalidResourceError, ModelDelta, ModelDeployment, parse_resource
from deltaroll.api.conditions import now_rfc3339


class _Wire(Protocol):
    def to_wire(self) -> dict[str, Any]: ...


# (status before, generation, message, now) -> the status saying the spec is invalid
InvalidStatus = Callable[[Mapping[str, Any] | None, int, str, str], _Wire]
PatchStatus = Callable[[str, str, dict[str, Any]], None]


def parse_or_mark(
    body: dict[str, Any], invalid_status: InvalidStatus, patch_status: PatchStatus
) -> ModelDelta | ModelDeployment | None:
    """The typed object; None after marking an invalid one with the fields to fix."""
    try:
        return parse_resource(body)
    except InvalidResourceError as exc:
        meta, before = body["metadata"], body.get("status") or {}
        generation = int(meta.get("generation") or 0)
        after = invalid_status(before, generation, str(exc), now_rfc3339()).to_wire()
        if any(before.get(key) != value for key, value in after.items()):
            patch_status(meta["namespace"], meta["name"], after)
            kopf.warn(cast("kopf.Body", body), reason="InvalidSpec", message=str(exc))
        return None
