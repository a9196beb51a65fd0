"""The ModelDelta planner and the Job observer: pure functions, every branch without a server."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from deltaroll.api import ModelDelta, parse_resource
from deltaroll.api.crd import MODEL_DELTA
from deltaroll.api.facts import VersionFacts
from deltaroll.api.job_result import CREATED_FIELD, JobReport
from deltaroll.api.modeldelta import ModelDeltaStatus
from deltaroll.controllers.job_defaults import JobDefaults
from deltaroll.controllers.modeldelta.jobs import build_job, content_digest, spec_digest
from deltaroll.controllers.modeldelta.observe import JobView, view_job
from deltaroll.controllers.modeldelta.planner import (
    CreateJob,
    DeleteJob,
    Observed,
    Plan,
    PostEvent,
    RecordInputs,
    SignVersion,
    StoreView,
    plan,
)

T0, T1, T2 = "2026-11-28T10:00:00Z", "2026-11-28T10:05:00Z", "2026-11-28T10:09:00Z"
PARENT_ID = "a" * 32
FACTS = VersionFacts(
    version="b" * 32,
    parent=PARENT_ID,
    changed_fraction=0.0123,
    delta_bytes=4567,
    full_bytes=890123,
    anchored=False,
    published_at="2026-11-28T10:03:12.345678+00:00",  # after T0, the Job's creation
)
FOUND = StoreView(parent_id=PARENT_ID)


def delta(status: ModelDeltaStatus | None = None, generation: int = 1, **spec: Any) -> ModelDelta:
    body: dict[str, Any] = {
        "apiVersion": "deltaroll.dev/v1alpha1",
        "kind": "ModelDelta",
        "metadata": {"name": "step-120", "namespace": "ml", "uid": "u-1", "generation": generation},
        "spec": {
            "model": "qwen3",
            "store": {"uri": "s3://models/prod"},
            "parent": "step-119",
            "source": {"checkpoint": {"uri": "s3://ckpts/step-120"}},
            **spec,
        },
    }
    if status is not None:
        body["status"] = status.to_wire()
    parsed = parse_resource(body)
    assert isinstance(parsed, ModelDelta)
    return parsed


def run(d: ModelDelta, observed: Observed, now: str = T0) -> Plan:
    return plan(d, observed, now=now, defaults=JobDefaults("worker", "worker:1"))


def job(d: ModelDelta, **fields: Any) -> JobView:
    return JobView(
        name=f"step-120-{spec_digest(d.spec)[:10]}",
        uid="job-uid",
        spec_digest=spec_digest(d.spec),
        created=T0,
        **fields,
    )


def kinds(p: Plan) -> list[type]:
    return [type(a) for a in p.actions]


def ready_condition(p: Plan) -> Any:
    return next(c for c in p.status.conditions or [] if c.type == "Ready")


@pytest.mark.parametrize(
    ("fraction", "shown"),
    [(0.1504449843380918, "15.04%"), (0.0123, "1.23%"), (1.0, "100.00%"), (1e-6, "<0.01%")],
)
def test_kubectl_get_shows_the_changed_fraction_in_percent(fraction: float, shown: str) -> None:
    facts = dataclasses.replace(FACTS, changed_fraction=fraction)
    status = run(delta(), Observed(store=StoreView(parent_id=PARENT_ID, published=facts))).status
    (column,) = [c for c in MODEL_DELTA.printer_columns if c["name"] == "Changed"]
    cell: Any = {"status": status.to_wire()}
    for key in column["jsonPath"].strip(".").split("."):
        cell = cell[key]
    assert (column["type"], cell) == ("string", shown)
    assert status.changed_fraction == fraction  # the number stays, for machines


def test_a_valid_new_modeldelta_gets_its_job_and_goes_computing() -> None:
    d = delta()
    p = run(d, Observed(store=FOUND))
    assert kinds(p) == [CreateJob, PostEvent]
    created = p.actions[0]
    assert isinstance(created, CreateJob)
    assert created.manifest == build_job(d, defaults=JobDefaults("worker", "worker:1"))
    assert p.status.phase == "Computing"
    assert (
        p.status.job_ref is not None
        and p.status.job_ref.name == created.manifest["metadata"]["name"]
    )  # type: ignore[index]
    assert (ready_condition(p).status, ready_condition(p).reason) == ("False", "JobCreated")
    assert p.status.observed_generation == 1 and p.status.start_time == T0


def test_a_missing_parent_fails_with_where_it_was_looked_for() -> None:
    p = run(delta(), Observed(store=StoreView(parent_id=None)))
    assert CreateJob not in kinds(p)
    assert p.status.phase == "Failed"
    condition = ready_condition(p)
    assert condition.reason == "ParentNotFound"
    assert "parent step-119 not found in s3://models/prod" in condition.message
    stalled = next(c for c in p.status.conditions or [] if c.type == "Stalled")
    assert stalled.status == "True"
    event = p.actions[-1]
    assert isinstance(event, PostEvent) and event.type == "Warning"


def test_a_parent_still_being_computed_is_waited_for() -> None:
    p = run(delta(), Observed(store=StoreView(parent_id=None), parent_phase="Computing"))
    assert p.status.phase == "Pending"
    assert ready_condition(p).reason == "WaitingForParent"
    assert CreateJob not in kinds(p)


def test_a_missing_secret_and_store_problems_are_reported_before_any_job() -> None:
    with_secret = delta(store={"uri": "s3://models/prod", "secretRef": {"name": "creds"}})
    missing = run(with_secret, Observed(store=StoreView(), secret_missing=True))
    assert (missing.status.phase, ready_condition(missing).reason) == ("Failed", "SecretNotFound")
    assert "Secret creds" in ready_condition(missing).message
    denied = run(
        delta(),
        Observed(
            store=StoreView(
                problem="s3://models/prod: access refused", problem_reason="StoreAccessDenied"
            )
        ),
    )
    assert (denied.status.phase, ready_condition(denied).reason) == ("Failed", "StoreAccessDenied")
    flaky = run(
        delta(),
        Observed(
            store=StoreView(problem="timeout", retryable=True, problem_reason="StoreUnavailable")
        ),
    )
    assert (flaky.status.phase, ready_condition(flaky).reason) == ("Pending", "StoreUnavailable")
    assert all(CreateJob not in kinds(p) for p in (missing, denied, flaky))


def test_a_version_already_in_the_store_is_ready_without_a_job() -> None:
    d = delta()
    p = run(d, Observed(store=StoreView(parent_id=PARENT_ID, published=FACTS)))
    assert kinds(p) == [RecordInputs, PostEvent]
    assert p.actions[0] == RecordInputs(content_digest(d.spec))
    s = p.status
    assert (s.phase, s.version, s.version_id, s.parent_version_id) == (
        "Ready",
        "step-120",
        FACTS.version,
        PARENT_ID,
    )
    assert (s.changed_fraction, s.delta_bytes, s.full_bytes) == (0.0123, 4567, 890123)
    assert ready_condition(p).status == "True"
    assert not any(c.type in ("Reconciling", "Stalled") for c in s.conditions or [])


def test_a_running_job_keeps_computing_and_repeats_change_nothing() -> None:
    d = delta()
    first = run(d, Observed(store=FOUND, jobs=(job(d, active=1),)), now=T0)
    assert first.status.phase == "Computing"
    again = run(delta(first.status), Observed(store=FOUND, jobs=(job(d, active=1),)), now=T1)
    assert again.actions == []
    assert again.status == first.status  # lastTransitionTime and messages kept: no patch


def test_a_job_stuck_pulling_its_image_says_so_while_computing() -> None:
    d = delta()
    p = run(d, Observed(store=FOUND, jobs=(job(d, active=1, waiting="ImagePullBackOff: no"),)))
    assert "ImagePullBackOff" in (p.status.message or "")


def test_a_succeeded_job_is_ready_only_when_the_store_shows_the_version() -> None:
    d = delta()
    running = run(d, Observed(store=FOUND, jobs=(job(d, active=1),)), now=T0)
    done = job(d, succeeded=True)
    ready = run(
        delta(running.status),
        Observed(store=StoreView(parent_id=PARENT_ID, published=FACTS), jobs=(done,)),
        now=T1,
    )
    assert ready.status.phase == "Ready" and ready.status.completion_time == T1
    assert ready.status.start_time == T0
    lost = run(delta(running.status), Observed(store=FOUND, jobs=(done,)), now=T1)
    assert (lost.status.phase, ready_condition(lost).reason) == ("Failed", "PublishNotFound")


def test_a_failed_job_fails_with_its_reason_and_stays_failed() -> None:
    d = delta()
    failed_job = job(
        d, failed=True, reason="OOMKilled", message="Job failed: OOMKilled (exit code 137)"
    )
    p = run(d, Observed(store=FOUND, jobs=(failed_job,)), now=T1)
    assert (p.status.phase, ready_condition(p).reason) == ("Failed", "OOMKilled")
    assert ready_condition(p).message.startswith("Job failed: OOMKilled")
    later = run(delta(p.status), Observed(store=FOUND, jobs=()), now=T2)
    assert later.status == p.status and later.actions == []


def test_a_spec_change_replaces_the_job() -> None:
    old = delta()
    old_job = job(old, active=1)
    new = delta(generation=2, encoding={"zstdLevel": 9})
    p = run(new, Observed(store=FOUND, jobs=(old_job,)))
    assert DeleteJob(old_job.name) in p.actions
    created = [a for a in p.actions if isinstance(a, CreateJob)]
    assert len(created) == 1 and created[0].manifest["metadata"]["name"] != old_job.name  # type: ignore[index]
    assert p.status.observed_generation == 2


def test_a_failed_modeldelta_is_planned_again_after_a_spec_change() -> None:
    failed = run(delta(), Observed(store=StoreView(parent_id=None))).status
    p = run(delta(failed, generation=2), Observed(store=FOUND))
    assert CreateJob in kinds(p) and p.status.phase == "Computing"


def test_a_version_published_from_another_spec_is_not_taken_for_this_one() -> None:
    d = delta(generation=2, source={"checkpoint": {"uri": "s3://ckpts/step-120-retrained"}})
    p = run(
        d,
        Observed(store=StoreView(parent_id=PARENT_ID, published=FACTS), published_inputs="0" * 16),
    )
    assert CreateJob in kinds(p)


def test_the_job_observer_prefers_the_workers_own_report() -> None:
    report = {"ok": False, "reason": "ParentNotFound", "message": "parent step-119 not found"}
    pod = _pod(terminated={"exitCode": 3, "reason": "Error", "message": json.dumps(report)})
    view = view_job(_failed_job("BackoffLimitExceeded"), [pod])
    assert (view.failed, view.reason, view.message) == (
        True,
        "ParentNotFound",
        "parent step-119 not found",
    )


def test_the_job_observer_names_oomkilled_and_deadlines() -> None:
    oom = view_job(
        _failed_job("BackoffLimitExceeded"),
        [_pod(terminated={"exitCode": 137, "reason": "OOMKilled"})],
    )
    assert oom.reason == "OOMKilled"
    assert oom.message == (
        "Job failed: OOMKilled (exit code 137: killed by SIGKILL); "
        "raise spec.job.resources.limits.memory"
    )
    late = view_job(_failed_job("DeadlineExceeded"), [])
    assert late.reason == "DeadlineExceeded" and "activeDeadlineSeconds" in (late.message or "")


def _failed_job(reason: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "j", "uid": "ju", "annotations": {}},
        "status": {
            "conditions": [
                {"type": "Failed", "status": "True", "reason": reason, "message": "it failed"}
            ]
        },
    }


def _pod(**state: Any) -> dict[str, Any]:
    return {
        "metadata": {"creationTimestamp": T0},
        "status": {"containerStatuses": [{"name": "worker", "state": state}]},
    }


def test_an_unparseable_object_fails_with_the_reason_invalid_spec() -> None:
    from deltaroll.controllers.modeldelta.planner import invalid_spec_status

    status = invalid_spec_status({"phase": "Computing", "bogus": 1}, 4, "spec.model: bad", T1)
    assert (status.phase, status.observed_generation, status.message) == (
        "Failed",
        4,
        "spec.model: bad",
    )
    condition = next(c for c in status.conditions or [] if c.type == "Ready")
    assert (condition.reason, condition.last_transition_time) == ("InvalidSpec", T1)


# ---------------------------------------------------------------- signing with the operator's key

SIGNER = "e" * 64
PUBLISHED = StoreView(parent_id=PARENT_ID, published=FACTS)


def reported(d: ModelDelta, version: str = FACTS.version, **fields: Any) -> JobView:
    """A finished Job whose worker reported publishing ``version``."""
    report = JobReport.success("compute", {"version": version, "name": "step-120"})
    return job(d, **{"succeeded": True, "reports": (report,), **fields})


def test_the_version_its_own_job_reported_is_signed_before_it_is_ready() -> None:
    d = delta()
    p = run(d, Observed(store=PUBLISHED, jobs=(reported(d),), signer=SIGNER))
    assert p.status.phase == "Ready" and p.status.signed_by == SIGNER
    signs = [a for a in p.actions if isinstance(a, SignVersion)]
    assert signs == [SignVersion(FACTS.version, "step-120", PARENT_ID)]
    assert any(isinstance(a, PostEvent) and a.reason == "Signed" for a in p.actions)

    signed = dataclasses.replace(PUBLISHED, signed=True)
    again = run(d, Observed(store=signed, jobs=(reported(d),), signer=SIGNER))
    assert again.status.signed_by == SIGNER and SignVersion not in kinds(again)
    assert run(d, Observed(store=PUBLISHED, jobs=(reported(d),))).status.signed_by is None


def test_a_version_the_checks_refuse_fails_the_modeldelta() -> None:
    d = delta()
    refused = "the name 'step-120' points at cccc, not at this version: not signed"
    p = run(d, Observed(store=PUBLISHED, jobs=(reported(d),), signer=SIGNER, sign_refused=refused))
    assert p.status.phase == "Failed" and p.status.signed_by is None
    assert (ready_condition(p).reason, ready_condition(p).message) == ("SignatureRefused", refused)
    assert SignVersion not in kinds(p)


@pytest.mark.parametrize(
    "jobs",
    [
        pytest.param((), id="found in the store, no Job of ours"),
        pytest.param("other", id="our Job reported another version"),
    ],
)
def test_a_version_no_job_of_ours_reported_is_ready_but_not_signed(jobs: Any) -> None:
    d = delta()
    found = (reported(d, version="c" * 32),) if jobs == "other" else ()
    p = run(d, Observed(store=PUBLISHED, jobs=found, signer=SIGNER))
    assert p.status.phase == "Ready" and p.status.signed_by is None
    assert SignVersion not in kinds(p)
    assert "not signed: no Job of this ModelDelta published it" in str(p.status.message)
    assert "`deltaroll sign`" in ready_condition(p).message


def _claimed(d: ModelDelta) -> JobView:
    """A finished Job one of whose pods says ``created: true`` for FACTS' version: what a pod
    anyone in the namespace may create can say, with this Job's labels and ownerReference."""
    report = JobReport.success(
        "compute", {"version": FACTS.version, "name": "step-120", CREATED_FIELD: True}
    )
    return job(d, succeeded=True, reports=(report,))


def test_a_version_its_job_created_after_the_job_was_made_is_remembered_as_created() -> None:
    d = delta()
    p = run(d, Observed(store=PUBLISHED, jobs=(_claimed(d),), signer=SIGNER))
    assert p.status.created_version_id == FACTS.version and p.status.signed_by == SIGNER


def test_a_report_claiming_a_version_older_than_the_job_is_not_believed() -> None:
    """The store says the version was there before this Job existed: no message makes it this
    ModelDelta's (deletionPolicy: Delete must not remove it) or gets it signed."""
    d = delta()
    older = dataclasses.replace(FACTS, published_at="2026-11-28T09:59:59+00:00")
    store = StoreView(parent_id=PARENT_ID, published=older)
    p = run(d, Observed(store=store, jobs=(_claimed(d),), signer=SIGNER))
    assert p.status.phase == "Ready"
    assert p.status.created_version_id is None and p.status.signed_by is None
    assert SignVersion not in kinds(p)


def test_a_version_whose_job_is_still_finishing_waits_for_its_report() -> None:
    d = delta()
    p = run(d, Observed(store=PUBLISHED, jobs=(job(d, active=1),), signer=SIGNER))
    assert p.status.phase == "Computing" and ready_condition(p).reason == "Publishing"
    assert SignVersion not in kinds(p)
