"""Analysis runs: when the next measurement is due, and what one measurement does to a run.

A run is an :class:`~deltaroll.api.modeldeployment.AnalysisResult` in the ModelDeployment's
status, so an operator restarted mid-analysis picks up where it was: measurement ``n`` (counting
from 0) is due at ``startedAt + initialDelay + n * interval``. Like Argo Rollouts, a run fails
once more than ``failureLimit`` measurements failed, errs once more than
``consecutiveErrorLimit`` measurements in a row could not be taken (``consecutiveErrors`` in the
status; any measurement that was taken resets it, so a flaky endpoint that recovers does not end
the run), ends Inconclusive when neither condition held, and succeeds after ``count``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from deltaroll.api.conditions import parse_rfc3339, rfc3339
from deltaroll.api.modeldeployment import AnalysisResult, MetricTemplate

Verdict = Literal["Successful", "Failed", "Inconclusive", "Error"]
_UNITS = {"s": 1, "m": 60, "h": 3600}


@dataclass(frozen=True)
class Measurement:
    """One measurement's outcome: the verdict, the value as text, and why."""

    verdict: Verdict
    value: str | None = None
    message: str = ""


def seconds(duration: str | None) -> int:
    """A spec duration ("30s", "5m", "1h") in seconds; None is zero."""
    if not duration:
        return 0
    match = re.fullmatch(r"([0-9]+)([smh])", duration)
    if match is None:
        raise ValueError(f"duration {duration!r} is not a number followed by s, m or h")
    return int(match.group(1)) * _UNITS[match.group(2)]


def start_run(
    template: str, *, step_index: int | None, version: str, now: datetime
) -> AnalysisResult:
    """A new, Running run of ``template`` judging ``version``."""
    return AnalysisResult(
        template_name=template,
        step_index=step_index,
        version=version,
        phase="Running",
        started_at=rfc3339(now),
    )


def taken(run: AnalysisResult) -> int:
    """Measurements the run has recorded."""
    return run.successful + run.failed + run.errors


def next_due(run: AnalysisResult, template: MetricTemplate) -> datetime | None:
    """When the run's next measurement is due; None once the run has ended."""
    if run.phase != "Running" or run.started_at is None:
        return None
    started = parse_rfc3339(run.started_at)
    offset = seconds(template.initial_delay) + taken(run) * seconds(template.interval)
    return started + timedelta(seconds=offset)


def is_due(run: AnalysisResult, template: MetricTemplate, now: datetime) -> bool:
    """Whether a measurement should be taken now."""
    due = next_due(run, template)
    return due is not None and now >= due


def record(
    run: AnalysisResult, template: MetricTemplate, measurement: Measurement, now: datetime
) -> AnalysisResult:
    """The run after ``measurement``: counters, last value, and its phase if it ended."""
    verdict = measurement.verdict
    updated = run.model_copy(
        update={
            "successful": run.successful + (verdict == "Successful"),
            "failed": run.failed + (verdict == "Failed"),
            "errors": run.errors + (verdict == "Error"),
            "consecutive_errors": (run.consecutive_errors + 1) if verdict == "Error" else 0,
            "last_value": measurement.value if measurement.value is not None else run.last_value,
            "message": measurement.message or None,
        }
    )
    phase, message = _ending(updated, template, measurement)
    if phase is None:
        return updated
    return updated.model_copy(
        update={"phase": phase, "message": message, "finished_at": rfc3339(now)}
    )


def _ending(
    run: AnalysisResult, template: MetricTemplate, measurement: Measurement
) -> tuple[Verdict | None, str]:
    name = template.name
    if run.failed > template.failure_limit:
        return "Failed", (
            f"analysis {name}: {run.failed} failed measurement(s), more than failureLimit "
            f"{template.failure_limit}; last value {run.last_value}: {measurement.message}"
        ).rstrip(": ")
    if run.consecutive_errors > template.consecutive_error_limit:
        return "Error", (
            f"analysis {name}: {run.consecutive_errors} measurement(s) in a row could not be "
            f"taken, more than consecutiveErrorLimit {template.consecutive_error_limit}: "
            f"{measurement.message}"
        )
    if measurement.verdict == "Inconclusive":
        return "Inconclusive", (
            f"analysis {name}: neither condition held for value {measurement.value}; "
            "promote to go on or abort"
        )
    if taken(run) >= template.count:
        return "Successful", (
            f"analysis {name}: {run.successful} of {taken(run)} measurement(s) successful"
        )
    return None, ""
