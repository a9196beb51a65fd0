"""What a worker Job tells the controller: its termination message and its exit code.

The worker writes a :class:`JobReport` to its container's ``terminationMessagePath``; the
controller reads it back from the pod's status. Kubernetes keeps at most 4096 bytes of it; the
message is cut to fit (the ``message`` field shortened first), so a long error never makes the
whole report unreadable. On success it carries the published version's facts
(:class:`~deltaroll.api.facts.VersionFacts` and what the command adds); on failure a CamelCase
``reason`` and an actionable ``message``. Both are advisory: the controller takes a success's
numbers from the store, and uses the termination message to explain a failure.

The exit code says whether retrying the pod can help: a Job's podFailurePolicy fails the Job at
once on :data:`EXIT_PERMANENT`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, ValidationError

DEFAULT_PATH: Final = "/dev/termination-log"
PATH_ENV: Final = "DELTAROLL_TERMINATION_LOG"
#: ``namespace/name`` of the Job a worker runs in: a sharded computation records it beside its
#: staged parts, and gc keeps them while that Job exists.
JOB_ENV: Final = "DELTAROLL_JOB"
LIMIT_BYTES: Final = 4096

#: A success report's field: True when this run created the version in the store (it was not
#: there before), so the ModelDelta may delete it later.
CREATED_FIELD: Final = "created"

EXIT_RETRYABLE: Final = 1
EXIT_PERMANENT: Final = 3


class JobReport(BaseModel):
    """A worker's report; the fields a command adds on success (version, parent, bytes, ...)
    are kept as extra fields, and only the fields that were given are written."""

    model_config = ConfigDict(extra="allow", frozen=True)

    ok: bool | None = None
    command: str | None = None
    reason: str | None = None  # CamelCase, on failure
    message: str | None = None  # what to fix, on failure

    @classmethod
    def success(cls, command: str, result: Mapping[str, Any]) -> JobReport:
        return cls(ok=True, command=command, **result)

    @classmethod
    def failure(cls, command: str, reason: str, message: str) -> JobReport:
        return cls(ok=False, command=command, reason=reason, message=message)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)

    def encode(self) -> bytes:
        """Compact JSON within :data:`LIMIT_BYTES` (the message is trimmed to fit)."""
        return _encode(self.to_dict())

    @classmethod
    def parse(cls, text: str | None) -> JobReport | None:
        """A report read back from a container status; None if absent or not ours."""
        if not text:
            return None
        try:
            report = json.loads(text)
        except ValueError:
            return None
        if not isinstance(report, dict):
            return None
        try:
            return cls.model_validate(report)
        except ValidationError:
            return None


def _encode(report: dict[str, Any]) -> bytes:
    data = json.dumps(report, sort_keys=True, separators=(",", ":")).encode()
    if len(data) <= LIMIT_BYTES:
        return data
    message = str(report.get("message", ""))
    keep = max(0, len(message) - (len(data) - LIMIT_BYTES) - 3)
    return _encode({**report, "message": message[:keep] + "..."}) if keep else data[:LIMIT_BYTES]
