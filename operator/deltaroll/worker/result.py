"""The worker's termination message: a short JSON object the controller reads from the pod.

Kubernetes keeps at most 4096 bytes of ``terminationMessagePath``; the message is cut to fit
(the ``message`` field shortened first), so a long error never makes the whole report unreadable.
On success it carries the published version's facts; on failure a CamelCase ``reason`` and an
actionable ``message``. Both are advisory: the controller takes a success's numbers from the
store, and uses the termination message to explain a failure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Final

import structlog

DEFAULT_PATH: Final = "/dev/termination-log"
PATH_ENV: Final = "DELTAROLL_TERMINATION_LOG"
LIMIT_BYTES: Final = 4096

log = structlog.get_logger(__name__)


def termination_path(explicit: Path | None) -> Path:
    """``--termination-log``, else ``$DELTAROLL_TERMINATION_LOG``, else Kubernetes' default."""
    return explicit or Path(os.environ.get(PATH_ENV) or DEFAULT_PATH)


def encode(report: dict[str, Any]) -> bytes:
    """Compact JSON of ``report`` within :data:`LIMIT_BYTES` (the message is trimmed to fit)."""
    data = json.dumps(report, sort_keys=True, separators=(",", ":")).encode()
    if len(data) <= LIMIT_BYTES:
        return data
    message = str(report.get("message", ""))
    keep = max(0, len(message) - (len(data) - LIMIT_BYTES) - 3)
    return encode({**report, "message": message[:keep] + "..."}) if keep else data[:LIMIT_BYTES]


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write the report; a path that cannot be written (no pod, read-only) is logged, not fatal."""
    try:
        path.write_bytes(encode(report))
    except OSError as exc:
        log.warning("worker.termination_log_unwritable", path=str(path), error=exc.strerror)


def parse_report(text: str | None) -> dict[str, Any] | None:
    """A report read back from a container status; None if absent or not ours."""
    if not text:
        return None
    try:
        report = json.loads(text)
    except ValueError:
        return None
    return report if isinstance(report, dict) else None
