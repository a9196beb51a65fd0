"""Kopf handlers for ModelDelta. Each one reads, calls the pure planner, applies its actions.

Triggers, all converging on :func:`reconcile` (level-triggered, idempotent):

- the ModelDelta is created, its spec changes, or the operator starts (``resume``: an operator
  restarted mid-Job picks up the running Job);
- one of its Jobs changes (the Job is labelled and owned by it);
- its parent ModelDelta becomes Ready (children waiting for it are reconciled).

The admin's policy is checked first: a ModelDelta asking for a store, image or ServiceAccount
its namespace may not use is refused (PolicyDenied) before any store is opened or Job created.
Stores are opened with the tenant's secretRef credentials (:mod:`..store_access`).

With the operator's signing key (:mod:`deltaroll.controllers.modeldelta.signer`), what a Job
published is checked and signed before the ModelDelta turns Ready.

Store hiccups raise :class:`kopf.TemporaryError`, so Kopf retries with backoff. Deleting a
ModelDelta with ``deletionPolicy: Delete`` removes the version its own Job created from the
store (the only case with a finalizer), never one that was there before; its Jobs go with it by
ownerReference in every case.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import kopf
import structlog

from deltaroll.api import ModelDelta
from deltaroll.api.common import GROUP, VERSION
from deltaroll.api.conditions import now_rfc3339, parse_rfc3339
from deltaroll.api.modeldelta import PLURAL, ModelDeltaStatus, publishes
from deltaroll.api.policy import NamespacePolicy
from deltaroll.controllers import kube, metrics
from deltaroll.controllers.admission import REASON as POLICY_DENIED
from deltaroll.controllers.admission import modeldelta_refusals
from deltaroll.controllers.disclosure import post_event, scrubbed_status
from deltaroll.controllers.errors import SecretNotFoundError
from deltaroll.controllers.invalid import mark_refused, parse_or_mark
from deltaroll.controllers.job_defaults import JobDefaults
from deltaroll.controllers.keyed_locks import KeyedLocks
from deltaroll.controllers.modeldelta import signer
from deltaroll.controllers.modeldelta.jobs import LABEL_MANAGED_BY, MANAGED_BY, job_selector
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
    invalid_spec_status,
    plan,
)
from deltaroll.controllers.modeldelta.retention import blocking_use, uses_of
from deltaroll.controllers.modeldelta.storeview import look_up
from deltaroll.controllers.policy import namespace_policy, operator_image, worker_env
from deltaroll.controllers.store_access import store_credentials

if TYPE_CHECKING:
    from deltaroll.store import Store

GROUP_VERSION_PLURAL: Final = (GROUP, VERSION, PLURAL)
INPUTS_ANNOTATION: Final = "deltaroll.dev/published-inputs"
RETRY_DELAY_S: Final = 30

log = structlog.get_logger("deltaroll.controllers.modeldelta")
_locks: Final = KeyedLocks()


@kopf.on.resume(*GROUP_VERSION_PLURAL)
@kopf.on.create(*GROUP_VERSION_PLURAL)
@kopf.on.update(*GROUP_VERSION_PLURAL, field="spec")
def modeldelta_changed(namespace: str | None, name: str, **_: Any) -> None:
    """The ModelDelta is new, changed, or found at start-up: reconcile it."""
    outcome = reconcile(_namespaced(namespace), name)
    if outcome is not None and outcome.status.phase == "Pending":
        # Waiting on the store or a parent: Kopf calls again after the delay.
        raise kopf.TemporaryError(outcome.status.message or "pending", delay=RETRY_DELAY_S)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY})
def job_changed(body: kopf.Body, namespace: str | None, **_: Any) -> None:
    """A worker Job changed (progress, success, failure, deletion): reconcile its owner."""
    owner = kube.controller_owner(dict(body))
    if owner is not None and owner.get("kind") == "ModelDelta":
        reconcile(_namespaced(namespace), str(owner["name"]))


def _deletes_version(spec: kopf.Spec, **_: Any) -> bool:
    return spec.get("deletionPolicy") == "Delete"


@kopf.on.delete(*GROUP_VERSION_PLURAL, when=_deletes_version)
def delete_version(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> None:
    """Remove the version this ModelDelta's own Job created, unless a ModelDeployment (or a
    child) still needs it. A version that was in the store before (``status.createdVersionId``
    is not it) is never deleted: a tenant naming another team's version must not remove it.

    The store is opened with its secretRef Secret's credentials, as the Jobs are, and only if
    the policy still allows it. A store that refuses access (or whose Secret is gone) gets a
    Warning Event naming the version to remove by hand instead of a finalizer that never goes;
    a store that is briefly unavailable is retried by Kopf."""
    from deltaroll.store import InvalidStoreUriError, Store, StoreAccessError

    delta = _parse(dict(body))
    status = delta.status if delta is not None else None
    if delta is None or status is None or status.version_id is None:
        return  # nothing was published by this ModelDelta
    version_id = status.version_id
    jobs = _own_jobs(dict(body)["metadata"])
    claimed = status.created_version_id == version_id or any(
        job.succeeded and job.created_version == version_id for job in jobs
    )
    if not claimed and any(not (job.succeeded or job.failed) for job in jobs):
        # Published before its Job reported: wait for the worker's word (the finalizer holds).
        raise kopf.TemporaryError("waiting for the Job to report what it created", delay=5)
    kept = f"kept {version_id}: not created by this ModelDelta's Job (it was in the store already)"
    if not claimed:
        post_event(body, "Normal", "VersionKept", kept)
        return
    bound = log.bind(namespace=namespace, name=name, version=version_id)
    uri = delta.spec.store.uri
    manual = f"remove {version_id} by hand: deltaroll gc {uri} {delta.spec.model} --keep ..."
    policy = namespace_policy(_namespaced(namespace))
    if refusals := modeldelta_refusals(delta, policy, default_image=operator_image()):
        post_event(body, "Warning", "VersionNotDeleted", f"{'; '.join(refusals)}; {manual}")
        return
    try:
        credentials = store_credentials(_namespaced(namespace), delta.spec.store, policy)
        store = Store(uri, credentials=credentials, cache_dir=_cache_dir())
        verified = status.created_version_id == version_id
        if not verified and not _job_created(store, delta.spec.model, version_id, jobs):
            post_event(body, "Normal", "VersionKept", kept)
            return
        reason, message = _delete_unless_used(delta, store, version_id, _namespaced(namespace))
    except (StoreAccessError, InvalidStoreUriError, SecretNotFoundError) as exc:
        post_event(body, "Warning", "VersionNotDeleted", f"{exc}; {manual}")
        bound.warning("modeldelta.version_not_deleted", error=str(exc))
        return
    post_event(body, "Normal", reason, message)
    bound.info("modeldelta.version_retention", reason=reason)


def _job_created(store: Store, model: str, version_id: str, jobs: tuple[JobView, ...]) -> bool:
    """Whether one of ``jobs`` created ``version_id``, checked against the store: a worker's
    report alone is the word of whoever could create a pod in the namespace."""
    from deltaroll.store import VersionNotFoundError
    from deltaroll.store.facts import version_facts

    try:
        facts = version_facts(store, model, version_id)
    except VersionNotFoundError:
        return False  # gone already: nothing of this ModelDelta's to delete
    return any(job.verified_create(facts) for job in jobs)


def _delete_unless_used(
    delta: ModelDelta, store: Store, version_id: str, namespace: str
) -> tuple[str, str]:
    """(Event reason, message) after deleting ``version_id`` or deciding to keep it."""
    uri, model = delta.spec.store.uri, delta.spec.model
    uses = uses_of(kube.list_visible_modeldeployments(namespace), model, uri)
    resolved = {use.ref: _resolve_or_none(store, model, use.ref) for use in uses}
    if use := blocking_use(version_id, resolved, uses):
        return "VersionKept", (
            f"kept {version_id} in {uri}: ModelDeployment {use.deployment} uses it "
            f"({use.field}={use.ref})"
        )
    jobs = kube.job_names(namespace, f"{LABEL_MANAGED_BY}={MANAGED_BY}")
    # Every version but this one, as gc reads them under its lease (a version published since
    # this handler started is kept); staged parts are kept while their Job exists.
    result = store.gc(model, keep=None, drop=[version_id], live_jobs={namespace: jobs})
    if version_id not in result.deleted_versions:
        return "VersionKept", f"kept {version_id} in {uri}: a remaining version is built on it"
    return "VersionDeleted", f"deleted {version_id} from {uri}"


def reconcile(namespace: str, name: str) -> Plan | None:
    """Bring one ModelDelta's status and Jobs in line with its spec; the plan applied."""
    with _locks.hold((namespace, name)):
        body = kube.get_modeldelta(namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        bound = log.bind(namespace=namespace, name=name)
        delta = _parse(body)
        if delta is None:
            return None
        policy = namespace_policy(namespace)
        if refusals := modeldelta_refusals(delta, policy, default_image=operator_image()):
            message = "; ".join(refusals)
            mark_refused(body, invalid_spec_status, kube.patch_status, POLICY_DENIED, message)
            bound.warning("modeldelta.policy_denied", refusals=refusals)
            return None
        try:
            outcome = _sign(delta, _observe(delta, body, policy), policy)
            _apply(body, outcome)
        except Exception:
            metrics.RECONCILE_ERRORS.labels("ModelDelta").inc()
            raise
        metrics.RECONCILES.labels("ModelDelta", outcome.status.phase).inc()
        bound.debug("modeldelta.reconciled", phase=outcome.status.phase)
    if _became(body, outcome, "Ready"):
        _wake_children(namespace, delta)
    return outcome


def _sign(delta: ModelDelta, observed: Observed, policy: NamespacePolicy) -> Plan:
    """The plan, after signing the version it asks to sign; planned again as refused when the
    store's records did not pass the checks (signing comes before the status says Ready). The
    checks read the store as the tenant (its secretRef, under the admin's policy), as
    :func:`_observe` does: a tenant cannot have the operator vouch for what it cannot read."""
    outcome = _plan(delta, observed, policy)
    for action in outcome.actions:
        if isinstance(action, SignVersion):
            namespace = _namespaced(delta.metadata.get("namespace"))
            credentials = store_credentials(namespace, delta.spec.store, policy)
            refused = signer.sign(delta, action, credentials=credentials, cache_dir=_cache_dir())
            if refused is not None:
                return _plan(delta, dataclasses.replace(observed, sign_refused=refused), policy)
    return outcome


def _plan(delta: ModelDelta, observed: Observed, policy: NamespacePolicy) -> Plan:
    return plan(
        delta,
        observed,
        now=now_rfc3339(),
        defaults=JobDefaults.of(
            "worker", policy.worker, operator_image(), worker_env(delta.spec.store, policy)
        ),
    )


def _namespaced(namespace: str | None) -> str:
    if namespace is None:  # ModelDeltas are namespaced; the CRD says so
        raise kopf.PermanentError("a ModelDelta without a namespace cannot be reconciled")
    return namespace


def _parse(body: dict[str, Any]) -> ModelDelta | None:
    """The typed ModelDelta; an invalid one is marked Failed with the fields to fix."""
    parsed = parse_or_mark(body, invalid_spec_status, kube.patch_status)
    assert parsed is None or isinstance(parsed, ModelDelta)
    return parsed


def _observe(delta: ModelDelta, body: dict[str, Any], policy: NamespacePolicy) -> Observed:
    meta, spec = body["metadata"], delta.spec
    namespace = meta["namespace"]
    key = signer.key()
    try:
        credentials = store_credentials(namespace, spec.store, policy)
    except SecretNotFoundError:
        secret_missing, store = True, StoreView()
    else:
        secret_missing = False
        store = look_up(
            delta,
            cache_dir=_cache_dir(),
            credentials=credentials,
            signer=key.public if key is not None else None,
        )
    parent_phase = None
    if spec.parent is not None and store.parent_id is None and store.problem is None:
        parent_phase = _parent_phase(namespace, delta)
    jobs = _own_jobs(meta)
    return Observed(
        store=store,
        secret_missing=secret_missing,
        parent_phase=parent_phase,
        jobs=jobs,
        published_inputs=(meta.get("annotations") or {}).get(INPUTS_ANNOTATION),
        signer=key.public.key_id if key is not None else None,
    )


def _own_jobs(meta: Mapping[str, Any]) -> tuple[JobView, ...]:
    """This ModelDelta's Jobs (by label and controller ownerReference), with their pods."""
    found = kube.owned_jobs(meta["namespace"], job_selector(meta["name"]), meta["uid"])
    return tuple(view_job(job, pods) for job, pods in found)


def _parent_phase(namespace: str, delta: ModelDelta) -> str | None:
    """Phase of the ModelDelta (same namespace, model and store) that publishes spec.parent."""
    for body in kube.list_modeldeltas(namespace):
        if delta.spec.parent is not None and publishes(
            body, delta.spec.model, delta.spec.store.uri, delta.spec.parent
        ):
            return str((body.get("status") or {}).get("phase") or "Pending")
    return None


def _apply(body: dict[str, Any], outcome: Plan) -> None:
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    bound = log.bind(namespace=namespace, name=name)
    for action in outcome.actions:
        if isinstance(action, CreateJob):
            kube.create_job(action.manifest)
            metrics.JOBS_CREATED.inc()
            bound.info("modeldelta.job_created", job=action.manifest["metadata"]["name"])  # type: ignore[index]
        elif isinstance(action, DeleteJob):
            kube.delete_job(namespace, action.name)
            bound.info("modeldelta.job_replaced", job=action.name)
        elif isinstance(action, RecordInputs):
            kube.patch_annotations(namespace, name, {INPUTS_ANNOTATION: action.digest})
    before = body.get("status") or {}
    after = scrubbed_status(outcome.status.to_wire())
    if after != before:
        cleared = {key: None for key in before if key not in after}
        kube.patch_status(namespace, name, {**after, **cleared})
    for action in outcome.actions:
        if isinstance(action, PostEvent):
            post_event(body, action.type, action.reason, action.message)
            metrics.TRANSITIONS.labels(outcome.status.phase, action.reason).inc()
            bound.info(
                "modeldelta.transition",
                phase=outcome.status.phase,
                reason=action.reason,
                message=action.message,
            )
    if _became(body, outcome, "Ready") or _became(body, outcome, "Failed"):
        _observe_finish(before, outcome.status)


def _observe_finish(before: dict[str, Any], status: ModelDeltaStatus) -> None:
    result = "ready" if status.phase == "Ready" else "failed"
    if status.start_time and status.completion_time:
        elapsed = _seconds(status.start_time, status.completion_time)
        metrics.JOB_DURATION.labels(result).observe(max(0.0, elapsed))
    if status.phase == "Ready" and status.delta_bytes:
        metrics.PUBLISHED_BYTES.inc(status.delta_bytes)


def _became(body: dict[str, Any], outcome: Plan, phase: str) -> bool:
    return outcome.status.phase == phase and (body.get("status") or {}).get("phase") != phase


def _wake_children(namespace: str, parent: ModelDelta) -> None:
    """Reconcile the ModelDeltas that were waiting for ``parent`` to publish."""
    name = parent.version_name
    for body in kube.list_modeldeltas(namespace):
        spec, status = body.get("spec") or {}, body.get("status") or {}
        if spec.get("parent") == name and status.get("phase") in (None, "Pending"):
            reconcile(namespace, body["metadata"]["name"])


def _resolve_or_none(store: Any, model: str, ref: str) -> str | None:
    from deltaroll.store import StoreError

    try:
        return str(store.resolve(model, ref))
    except StoreError:
        return None


def _seconds(start: str, end: str) -> float:
    return (parse_rfc3339(end) - parse_rfc3339(start)).total_seconds()


def _cache_dir() -> Path:
    """Scratch for the store client (the operator reads manifests only, never objects)."""
    return Path(tempfile.gettempdir()) / "deltaroll-operator"


__all__ = ["StoreView", "delete_version", "job_changed", "modeldelta_changed", "reconcile"]
