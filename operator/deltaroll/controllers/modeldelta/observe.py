"""What the cluster says about a ModelDelta's Jobs, reduced to what the planner needs. Pure.

A failed Job's reason comes from the most telling source available: the worker's own report in
its termination message ("ParentNotFound: ..."), else a container's terminated reason
("OOMKilled", "Error" with its exit code), else a waiting reason ("ImagePullBackOff"), else the
Job's Failed condition ("BackoffLimitExceeded", "DeadlineExceeded").

A termination message is anyone's word: whoever may create pods in the namespace can make one
that carries this Job's labels and ownerReference and ends with any message. So a worker's
"created" (and "published") counts only for a version whose manifest in the store was written
after the Job itself was created (:meth:`JobView.verified_publish`): the Job's creationTimestamp
comes from the API server, the manifest from the store, read with the tenant's own identity.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from deltaroll.api.conditions import parse_rfc3339
from deltaroll.api.facts import VersionFacts
from deltaroll.api.job_result import CREATED_FIELD, JobReport
from deltaroll.controllers.modeldelta.jobs import ANNOTATION_SPEC_DIGEST

Body = Mapping[str, Any]
_STUCK_WAITING = (
    "ImagePullBackOff",
    "ErrImagePull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "InvalidImageName",
    "CrashLoopBackOff",
)


@dataclass(frozen=True)
class JobView:
    """One Job of a ModelDelta."""

    name: str
    uid: str
    spec_digest: str | None
    created: str | None
    active: int = 0
    succeeded: bool = False
    failed: bool = False
    reason: str | None = None  # CamelCase, for the Ready condition when failed
    message: str | None = None  # what happened, for people
    waiting: str | None = None  # e.g. "ImagePullBackOff: ..." while a pod cannot start
    reports: tuple[JobReport, ...] = field(default_factory=tuple)  # workers' reports

    @property
    def created_version(self) -> str | None:
        """The version id a worker of this Job reports having created in the store (a claim:
        see :meth:`verified_create`)."""
        for report in self.reports:
            extra = report.model_extra or {}
            if report.ok and extra.get(CREATED_FIELD) is True and extra.get("version"):
                return str(extra["version"])
        return None

    @property
    def reported_versions(self) -> set[str]:
        """The version ids this Job's workers report having published (claims)."""
        extra = [r.model_extra or {} for r in self.reports if r.ok]
        return {str(e["version"]) for e in extra if e.get("version")}

    def verified_publish(self, facts: VersionFacts) -> bool:
        """Whether this Job published ``facts``'s version, as far as the operator can verify:
        it succeeded, a worker reports the version, and the store's manifest is no older than
        the Job (a version that was there before cannot be claimed by a forged message)."""
        return (
            self.succeeded
            and facts.version in self.reported_versions
            and self.created is not None
            and parse_rfc3339(facts.published_at) >= parse_rfc3339(self.created)
        )

    def verified_create(self, facts: VersionFacts) -> bool:
        """Whether this Job created ``facts``'s version: :meth:`verified_publish`, and its worker's
        own publish wrote the manifest (not a racer publishing the same weights)."""
        return self.verified_publish(facts) and self.created_version == facts.version


def view_job(job: Body, pods: Sequence[Body]) -> JobView:
    """Reduce a Job and its pods (those with its controller-uid) to a :class:`JobView`."""
    meta, status = job.get("metadata") or {}, job.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    finished = {t for t in ("Complete", "Failed") if conditions.get(t, {}).get("status") == "True"}
    reports = tuple(r for r in (_report(p) for p in _by_age(pods)) if r is not None)
    view = JobView(
        name=str(meta.get("name")),
        uid=str(meta.get("uid")),
        spec_digest=(meta.get("annotations") or {}).get(ANNOTATION_SPEC_DIGEST),
        created=meta.get("creationTimestamp"),
        active=int(status.get("active") or 0),
        succeeded="Complete" in finished,
        failed="Failed" in finished,
        waiting=_waiting(pods),
        reports=reports,
    )
    if not view.failed:
        return view
    reason, message = _failure(conditions.get("Failed") or {}, pods, reports)
    return JobView(**{**view.__dict__, "reason": reason, "message": message})


def _failure(
    condition: Mapping[str, Any], pods: Sequence[Body], reports: Sequence[JobReport]
) -> tuple[str, str]:
    failed_reports = [r for r in reports if r.ok is False and r.reason]
    if failed_reports:
        last = failed_reports[-1]
        return str(last.reason), str(last.message or last.reason)
    for pod in reversed(_by_age(pods)):
        for state in _container_states(pod):
            terminated = state.get("terminated") or {}
            if terminated and terminated.get("exitCode", 0) != 0:
                why = str(terminated.get("reason") or "Error")
                code = int(terminated.get("exitCode") or 0)
                detail = f"Job failed: {why} (exit code {code}{_signal_note(code)})"
                if why == "OOMKilled":
                    detail += "; raise spec.job.resources.limits.memory"
                return why, detail
    if stuck := _waiting(pods):
        return stuck.split(":", 1)[0], f"Job failed: {stuck}"
    reason = str(condition.get("reason") or "JobFailed")
    message = str(condition.get("message") or "the Job failed")
    hint = {
        "DeadlineExceeded": "; raise spec.job.activeDeadlineSeconds",
        "BackoffLimitExceeded": "; see the worker's logs (kubectl logs job/NAME)",
    }.get(reason, "")
    return reason, f"Job failed: {reason}: {message}{hint}"


def _signal_note(code: int) -> str:
    """``: killed by SIGKILL`` for 137, as shells and the kubelet encode a fatal signal."""
    if code <= 128:
        return ""
    try:
        return f": killed by {signal.Signals(code - 128).name}"
    except ValueError:
        return ""


def _report(pod: Body) -> JobReport | None:
    for state in _container_states(pod):
        terminated = state.get("terminated") or {}
        report = JobReport.parse(terminated.get("message"))
        if report is not None:
            return report
    return None


def _waiting(pods: Sequence[Body]) -> str | None:
    for pod in pods:
        for state in _container_states(pod):
            waiting = state.get("waiting") or {}
            if waiting.get("reason") in _STUCK_WAITING:
                message = str(waiting.get("message") or "").strip()
                return f"{waiting['reason']}: {message}" if message else str(waiting["reason"])
    return None


def _container_states(pod: Body) -> list[Mapping[str, Any]]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return [s.get("state") or {} for s in statuses] + [s.get("lastState") or {} for s in statuses]


def _by_age(pods: Sequence[Body]) -> list[Body]:
    return sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp")))
