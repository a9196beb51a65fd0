"""Where the worker leaves its :class:`~deltaroll.api.job_result.JobReport` for the controller."""

from __future__ import annotations

import os
from pathlib import Path

import structlog

from deltaroll.api.job_result import DEFAULT_PATH, PATH_ENV, JobReport

log = structlog.get_logger(__name__)


def termination_path(explicit: Path | None) -> Path:
    """``--termination-log``, else ``$DELTAROLL_TERMINATION_LOG``, else Kubernetes' default."""
    return explicit or Path(os.environ.get(PATH_ENV) or DEFAULT_PATH)


def write_report(path: Path, report: JobReport) -> None:
    """Write the report; a path that cannot be written (no pod, read-only) is logged, not fatal."""
    try:
        path.write_bytes(report.encode())
    except OSError as exc:
        log.warning("worker.termination_log_unwritable", path=str(path), error=exc.strerror)
