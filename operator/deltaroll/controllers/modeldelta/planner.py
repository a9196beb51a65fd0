"""The ModelDelta planner: from (spec, observed state) to the status to write and the actions
to take. Pure: no I/O, no clock (``now`` is passed in), so every branch is tested without a
server.

Level-triggered: the plan depends only on what is observed now, never on which event woke the
handler, so an operator restarted mid-Job, a repeated event or a lost one all converge:

1. The version is already in the store under its name (and was not published from a different
   spec) -> Ready, with the numbers read from the store. Nothing is recomputed.
2. A Job for this exact spec exists -> follow it: Computing, Ready when it succeeded and the
   store shows the version, Failed with the worker's or the pod's reason when it failed.
3. No such Job -> validate (credentials Secret, store, parent), then create it. Jobs made for an
   older spec are deleted (a spec change while computing replaces the Job).

With a signing key (the operator's, never the tenant's), a Ready version is signed once the
store shows it, and only when this ModelDelta's own succeeded Job reported that version: the
handler checks the store's records (:mod:`deltaroll.store.vouch`) and signs, or the ModelDelta
is Failed with reason SignatureRefused. A version found in the store without such a Job (pushed
by someone else) is Ready but not signed, and the message says so.

A Failed ModelDelta stays Failed until its spec changes (a new generation): the failure message
says what to change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from deltaroll.api.common import Condition, ConditionStatus
from deltaroll.api.conditions import (
    READY,
    RECONCILING,
    STALLED,
    find_condition,
    remove_condition,
    set_condition,
)
from deltaroll.api.facts import VersionFacts
from deltaroll.api.modeldelta import (
    JobReference,
    ModelDelta,
    ModelDeltaPhase,
    ModelDeltaStatus,
    as_percent,
)
from deltaroll.controllers.job_defaults import JobDefaults
from deltaroll.controllers.modeldelta.jobs import build_job, content_digest, spec_digest
from deltaroll.controllers.modeldelta.observe import JobView

IN_PROGRESS: Final = ("Pending", "Computing")


@dataclass(frozen=True)
class StoreView:
    """What the operator learnt from the store (all None when it could not look)."""

    problem: str | None = None  # actionable message when the store could not be checked
    problem_reason: str | None = None  # StoreAccessDenied, StoreUnavailable, InvalidStore
    retryable: bool = False
    parent_id: str | None = None  # spec.parent resolved in the store
    published: VersionFacts | None = None  # the version the ModelDelta's name points at
    signed: bool = False  # the operator's key signed it, naming the ModelDelta's version name


@dataclass(frozen=True)
class Observed:
    """Everything the planner looks at besides the ModelDelta itself."""

    store: StoreView
    secret_missing: bool = False
    parent_phase: str | None = None  # phase of the ModelDelta publishing spec.parent, if any
    jobs: tuple[JobView, ...] = ()
    published_inputs: str | None = None  # content digest recorded when it last became Ready
    signer: str | None = None  # id of the operator's signing key; None: it signs nothing
    sign_refused: str | None = None  # why the store's records did not pass the checks


@dataclass(frozen=True)
class CreateJob:
    manifest: dict[str, object]


@dataclass(frozen=True)
class DeleteJob:
    name: str


@dataclass(frozen=True)
class RecordInputs:
    """Remember which spec content the published version came from (an annotation)."""

    digest: str


@dataclass(frozen=True)
class SignVersion:
    """Check the published version against its records and sign it with the operator's key."""

    version: str
    name: str
    parent: str | None


@dataclass(frozen=True)
class PostEvent:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


Action = CreateJob | DeleteJob | RecordInputs | SignVersion | PostEvent


@dataclass(frozen=True)
class Plan:
    status: ModelDeltaStatus
    actions: list[Action] = field(default_factory=list)


def plan(delta: ModelDelta, observed: Observed, *, now: str, defaults: JobDefaults) -> Plan:
    """The status ``delta`` should have and what to do to get there (``defaults``: the admin's
    for what spec.job leaves unset)."""
    generation = int(delta.metadata.get("generation") or 0)
    before = delta.status or ModelDeltaStatus()
    digest, content = spec_digest(delta.spec), content_digest(delta.spec)
    current = _newest([j for j in observed.jobs if j.spec_digest == digest])
    actions: list[Action] = [DeleteJob(j.name) for j in observed.jobs if j.spec_digest != digest]
    builder = _StatusBuilder(before, generation, now, current)

    published = observed.store.published
    if published is not None and observed.published_inputs in (None, content):
        status = builder.ready(delta.version_name, published)
    elif (
        before.phase == "Failed"
        and before.observed_generation == generation
        and (current is None or not current.active)
    ):
        status = before
    elif current is None:
        status, create = _validate(delta, observed, builder)
        if create:
            manifest = build_job(delta, defaults=defaults)
            actions.append(CreateJob(manifest))
            name = str(manifest["metadata"]["name"])
            status = builder.computing("JobCreated", f"created Job {name}", job_name=name)
    elif current.succeeded:
        if published is not None:
            status = builder.ready(delta.version_name, published)
        else:
            status = builder.failed(
                "PublishNotFound",
                f"Job {current.name} succeeded but {delta.version_name} is not in "
                f"{delta.spec.store.uri}; check the store (deltaroll log) and the worker's logs",
            )
    elif current.failed:
        status = builder.failed(current.reason or "JobFailed", current.message or "Job failed")
    else:
        detail = f"; {current.waiting}" if current.waiting else ""
        status = builder.computing(
            "Computing", f"Job {current.name} is running ({current.active} active pod(s)){detail}"
        )

    if status.phase == "Ready" and observed.signer is not None and published is not None:
        status, signing = _vouch(delta, observed, published, current, builder, status)
        actions.extend(signing)
    if status.phase == "Ready" and published is not None:
        status = _with_created(status, before, published, observed.jobs)
    if status.phase == "Ready" and observed.published_inputs != content:
        actions.append(RecordInputs(content))
    actions.extend(_transition_events(before, status))
    return Plan(status=status, actions=actions)


def _vouch(
    delta: ModelDelta,
    observed: Observed,
    facts: VersionFacts,
    job: JobView | None,
    builder: _StatusBuilder,
    ready: ModelDeltaStatus,
) -> tuple[ModelDeltaStatus, list[Action]]:
    """A Ready version with the operator's signature: signed already, to sign now (its own Job
    reported it), refused by the checks, or left unsigned with the reason."""
    signed = ready.model_copy(update={"signed_by": observed.signer})
    if observed.store.signed:
        return signed, []
    if observed.sign_refused is not None:
        return builder.failed("SignatureRefused", observed.sign_refused), []
    if job is not None and job.active and not (job.succeeded or job.failed):
        return builder.computing(
            "Publishing", f"{facts.version} is in the store; Job {job.name} is finishing"
        ), []
    reported = job.reported_versions if job else set()
    if job is not None and job.verified_publish(facts):
        sign = SignVersion(facts.version, delta.version_name, observed.store.parent_id)
        message = f"signed {facts.version} as {delta.version_name} with the operator's key"
        return signed, [sign, PostEvent("Normal", "Signed", message)]
    made_by = f"Job {job.name} reported {', '.join(sorted(map(str, reported)))}" if job else ""
    return builder.ready(
        delta.version_name,
        facts,
        note=f"not signed: no Job of this ModelDelta published it{made_by and f' ({made_by})'}; "
        "the operator signs only what its own Jobs publish (sign it with `deltaroll sign`)",
    ), []


def _with_created(
    status: ModelDeltaStatus,
    before: ModelDeltaStatus,
    published: VersionFacts,
    jobs: tuple[JobView, ...],
) -> ModelDeltaStatus:
    """Remember that one of this ModelDelta's Jobs created the published version (its worker
    said so and the store agrees, :meth:`JobView.verified_create`); once remembered, kept for
    as long as that version is the published one."""
    version = status.version_id
    created = before.created_version_id == version or any(
        job.verified_create(published) for job in jobs
    )
    return status.model_copy(update={"created_version_id": version if created else None})


def invalid_spec_status(
    before: Mapping[str, Any] | None,
    generation: int,
    message: str,
    now: str,
    reason: str = "InvalidSpec",
) -> ModelDeltaStatus:
    """Failed with ``reason``: InvalidSpec when the object does not parse (e.g. stored under an
    older CRD, or by an API server that does not run the CRD's CEL rules), PolicyDenied when the
    admin's policy refuses what it asks for."""
    try:
        previous = ModelDeltaStatus.model_validate(before or {})
    except ValueError:
        previous = ModelDeltaStatus()
    return _StatusBuilder(previous, generation, now, None).failed(reason, message)


def _validate(
    delta: ModelDelta, observed: Observed, builder: _StatusBuilder
) -> tuple[ModelDeltaStatus, bool]:
    """(status, whether to create the Job): the checks a Job would otherwise fail on later."""
    spec, store = delta.spec, observed.store
    namespace = delta.metadata.get("namespace")
    if observed.secret_missing and spec.store.secret_ref is not None:
        secret = spec.store.secret_ref.name
        return builder.failed(
            "SecretNotFound",
            f"Secret {secret} (spec.store.secretRef) not found in namespace {namespace}: create "
            "it with the store's credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ... or "
            "HF_TOKEN)",
        ), False
    if store.problem is not None:
        reason = store.problem_reason or "StoreUnavailable"
        if store.retryable:
            return builder.pending(reason, f"{store.problem}; retrying"), False
        return builder.failed(reason, store.problem), False
    if spec.parent is not None and store.parent_id is None:
        if observed.parent_phase in IN_PROGRESS:
            return builder.pending(
                "WaitingForParent",
                f"waiting for ModelDelta {spec.parent} to publish the parent version",
            ), False
        return builder.failed(
            "ParentNotFound",
            f"parent {spec.parent} not found in {spec.store.uri} (model {spec.model}) nor as a "
            f"ModelDelta in namespace {namespace}: push it (deltaroll push) or fix spec.parent",
        ), False
    return builder.before, True


class _StatusBuilder:
    """Makes the status of each phase, keeping what must not change between reconciles."""

    def __init__(
        self, before: ModelDeltaStatus, generation: int, now: str, job: JobView | None
    ) -> None:
        self.before, self.generation, self.now, self.job = before, generation, now, job

    def ready(self, name: str, facts: VersionFacts, note: str = "") -> ModelDeltaStatus:
        message = f"version {name} ({facts.version}) is published" + (note and f"; {note}")
        return self._status("Ready", "Published", message).model_copy(
            update={
                "version": name,
                "version_id": facts.version,
                "parent_version_id": facts.parent,
                "changed_fraction": facts.changed_fraction,
                "changed_percent": None
                if facts.changed_fraction is None
                else as_percent(facts.changed_fraction),
                "delta_bytes": facts.delta_bytes,
                "full_bytes": facts.full_bytes,
            }
        )

    def computing(
        self, reason: str, message: str, *, job_name: str | None = None
    ) -> ModelDeltaStatus:
        return self._status("Computing", reason, message, job_name=job_name)

    def pending(self, reason: str, message: str) -> ModelDeltaStatus:
        return self._status("Pending", reason, message)

    def failed(self, reason: str, message: str) -> ModelDeltaStatus:
        return self._status("Failed", reason, message)

    def _status(
        self, phase: ModelDeltaPhase, reason: str, message: str, *, job_name: str | None = None
    ) -> ModelDeltaStatus:
        before = self.before
        conditions = _conditions(
            before.conditions, phase, reason, message, self.generation, self.now
        )
        finished = phase in ("Ready", "Failed")
        job_ref = before.job_ref
        if self.job is not None:
            job_ref = JobReference(name=self.job.name, uid=self.job.uid)
        elif job_name is not None:
            job_ref = JobReference(name=job_name)
        started = before.start_time
        if job_name is not None or (self.job is not None and self.job.created and not started):
            started = (self.job.created if self.job is not None else None) or self.now
        keep_completion = before.phase == phase and before.completion_time is not None
        return ModelDeltaStatus(
            phase=phase,
            version=before.version,
            version_id=before.version_id,
            parent_version_id=before.parent_version_id,
            created_version_id=before.created_version_id,
            changed_fraction=before.changed_fraction,
            changed_percent=before.changed_percent,
            delta_bytes=before.delta_bytes,
            full_bytes=before.full_bytes,
            job_ref=job_ref,
            start_time=started,
            completion_time=(before.completion_time if keep_completion else self.now)
            if finished
            else None,
            message=message,
            observed_generation=self.generation,
            conditions=conditions,
        )


def _conditions(
    before: list[Condition] | None,
    phase: ModelDeltaPhase,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> list[Condition]:
    ready: ConditionStatus = "True" if phase == "Ready" else "False"
    conditions = set_condition(
        before, READY, ready, reason, message, observed_generation=generation, now=now
    )
    if phase in IN_PROGRESS:
        conditions = set_condition(
            conditions,
            RECONCILING,
            "True",
            reason,
            message,
            observed_generation=generation,
            now=now,
        )
    else:
        conditions = remove_condition(conditions, RECONCILING)
    if phase == "Failed":
        return set_condition(
            conditions, STALLED, "True", reason, message, observed_generation=generation, now=now
        )
    return remove_condition(conditions, STALLED)


def _transition_events(before: ModelDeltaStatus, after: ModelDeltaStatus) -> list[PostEvent]:
    """One Event per change of phase or of the Ready condition's reason."""
    old, new = _ready_reason(before), _ready_reason(after)
    if (before.phase, old) == (after.phase, new) and before.conditions:
        return []
    kind: Literal["Normal", "Warning"] = "Warning" if after.phase == "Failed" else "Normal"
    return [PostEvent(kind, new or after.phase, after.message or after.phase)]


def _ready_reason(status: ModelDeltaStatus) -> str | None:
    ready = find_condition(status.conditions, READY)
    return ready.reason if ready is not None else None


def _newest(jobs: list[JobView]) -> JobView | None:
    return max(jobs, key=lambda j: j.created or "", default=None)
