"""Kopf handlers for ModelDeployment: read, measure what is due, plan, apply.

Every trigger converges on :func:`reconcile` (level-triggered, idempotent, one at a time per
ModelDeployment), and only these do; an idle operator makes no request:

- the ModelDeployment is created, changed (spec.version from GitOps, or a promote/abort/retry
  annotation from ``kubectl deltaroll``), or found at start-up;
- a selected pod changes (its agent reports): an index of ModelDeployment selectors maps the
  pod to the deployments that choose it (and those that chose it before its labels changed);
  an event that shows a deployment's last reconcile nothing new of the pod (the operator's start
  lists every pod, which each deployment's own first reconcile just read) starts none;
- one of its analysis Jobs finishes (or goes), so a measurement is taken when its Job ends;
- a ModelDelta publishing its spec.version changes (it becomes Ready, or Failed);
- an older ModelDeployment it yields pods to goes away or changes its selector;
- the time the planner asked to look again comes (``Plan.wake_at``: a pause ends, a measurement
  falls due, a progress deadline passes): :mod:`~.wakeups`, started and stopped with Kopf.

No handler here needs a finalizer (Kopf adds one only for timers, daemons and mandatory delete
handlers), so a ModelDeployment can be deleted while the operator is down. The finalizer that
the operator's earlier timer made Kopf put on every ModelDeployment (``deltaroll.dev/cleanup``,
still the name ModelDeltas with ``deletionPolicy: Delete`` get) is removed by Kopf the first
time it sees the object, as no handler requires it any more.

Two ModelDeployments selecting one pod do not fight over it: the older keeps it and the younger
changes no pod until the overlap ends (:mod:`deltaroll.controllers.modeldeployment.overlap`).

The admin's policy is checked first: a ModelDeployment asking for a store, an analysis image,
ServiceAccount or Prometheus address its namespace may not use is refused (PolicyDenied) and
changes no pod. Its store is opened with its secretRef credentials (:mod:`..store_access`).

The rollout itself is :func:`deltaroll.controllers.modeldeployment.planner.plan`, a pure function.
With ``spec.verification``, spec.version must carry an accepted signature
(:mod:`deltaroll.controllers.modeldeployment.signature`) before any pod moves, and every pod
carries the accepted keys for its agent.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, cast

import kopf
import structlog

from deltaroll.api import ModelDeployment
from deltaroll.api.annotations import POD_SEED_AMONG, POD_VERIFY_KEYS, POD_VERSION
from deltaroll.api.common import GROUP, VERSION
from deltaroll.api.conditions import rfc3339
from deltaroll.api.modeldelta import PLURAL as MODELDELTAS
from deltaroll.api.modeldeployment import KIND, PLURAL, ModelDeploymentStatus
from deltaroll.api.peers import parse_seed_among
from deltaroll.api.policy import NamespacePolicy
from deltaroll.controllers import kube
from deltaroll.controllers.admission import REASON as POLICY_DENIED
from deltaroll.controllers.admission import modeldeployment_refusals
from deltaroll.controllers.analysis.job import (
    ANALYSIS_COMPONENT,
    LABEL_MODELDEPLOYMENT,
    job_outcome,
)
from deltaroll.controllers.analysis.measure import Context, take
from deltaroll.controllers.analysis.runs import is_due, record
from deltaroll.controllers.disclosure import post_event, scrubbed_status
from deltaroll.controllers.invalid import mark_refused, parse_or_mark
from deltaroll.controllers.job_defaults import JobDefaults
from deltaroll.controllers.keyed_locks import KeyedLocks
from deltaroll.controllers.modeldelta.jobs import LABEL_COMPONENT
from deltaroll.controllers.modeldeployment import routing, signature, writes
from deltaroll.controllers.modeldeployment.overlap import claimant, older_claims
from deltaroll.controllers.modeldeployment.planner import Observed, Plan, invalid_spec_status, plan
from deltaroll.controllers.modeldeployment.pods import (
    POD_VERSION_SET_AT,
    PodView,
    VersionAliases,
    read_state,
    serves,
    view_pod,
)
from deltaroll.controllers.modeldeployment.routing import Lookups, PodRoutes
from deltaroll.controllers.modeldeployment.target import StoreIdentity
from deltaroll.controllers.modeldeployment.target import look_up as look_up_target
from deltaroll.controllers.modeldeployment.wakeups import Wakeups
from deltaroll.controllers.policy import namespace_policy, operator_image
from deltaroll.controllers.store_access import store_credentials

RESOURCE: Final = (GROUP, VERSION, PLURAL)

log = structlog.get_logger("deltaroll.controllers.modeldeployment")
_locks: Final = KeyedLocks()
WAKEUPS: Final = Wakeups()
"""The operator's one schedule of ModelDeployments waiting for time."""
POD_ROUTES: Final = PodRoutes()
_pods_read: dict[tuple[str, str], dict[str, int]] = {}
"""Per ModelDeployment, :func:`~.pods.read_state` of each pod its last finished reconcile read."""


# ---------------------------------------------------------------------- indexes (routing)


@kopf.index(*RESOURCE)
def deployment_selectors(namespace: str | None, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    """Where pods look up the ModelDeployments that may select them."""
    return routing.selector_index(str(namespace), body)


@kopf.index(*RESOURCE)
def deployment_rollouts(namespace: str | None, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    """Which ModelDeployments roll out which version of which model and store."""
    return routing.rollout_index(str(namespace), body)


@kopf.index(*RESOURCE)
def deployments_yielding(namespace: str | None, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    """The ModelDeployments that yield pods to an older one, per namespace."""
    return routing.yielding_index(str(namespace), body)


@kopf.index(GROUP, VERSION, MODELDELTAS)
def modeldelta_versions(namespace: str | None, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    """What spec.version's lookup reads of each ModelDelta, per model and store."""
    return routing.modeldelta_index(str(namespace), body)


def _lookups(kwargs: Mapping[str, Any]) -> Lookups:
    """The indexes from a handler's keyword arguments (Kopf passes every index by its name)."""
    return Lookups(
        selectors=kwargs["deployment_selectors"],
        rollouts=kwargs["deployment_rollouts"],
        yielding=kwargs["deployments_yielding"],
        modeldeltas=kwargs["modeldelta_versions"],
    )


# ---------------------------------------------------------------------- triggers


@kopf.on.startup()
def start_wakeups(**kwargs: Any) -> None:
    """Wake ModelDeployments at the times their plans asked for, reading the live indexes."""
    lookups = _lookups(kwargs)

    def woken(key: Hashable) -> None:
        namespace, name = cast(tuple[str, str], key)
        _reconcile_or_retry(namespace, name, lookups)

    WAKEUPS.start(woken)


@kopf.on.cleanup()
def stop_wakeups(**_: Any) -> None:
    WAKEUPS.stop()


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE)
def modeldeployment_changed(
    namespace: str | None, name: str, diff: kopf.Diff, **kwargs: Any
) -> None:
    """New, changed (spec or a request annotation), or found at start-up: reconcile. A new
    selector may free pods that younger ModelDeployments yield to this one: wake them too."""
    lookups = _lookups(kwargs)
    reconcile(str(namespace), name, lookups=lookups)
    if any(tuple(change[1][:2]) == ("spec", "selector") for change in diff):
        _wake_yielders(str(namespace), lookups)


@kopf.on.event(*RESOURCE)
def modeldeployment_event(
    event: Mapping[str, Any], namespace: str | None, body: kopf.Body, name: str, **kwargs: Any
) -> None:
    """A ModelDeployment that goes frees the pods younger ones yield to it, and leaves nothing of
    itself in the operator's memory."""
    if event.get("type") == "DELETED" or body.get("metadata", {}).get("deletionTimestamp"):
        key = (str(namespace), name)
        with _locks.hold(key):  # after a reconcile under way, which would file it again
            WAKEUPS.at(key, None)
            _pods_read.pop(key, None)
        _wake_yielders(str(namespace), _lookups(kwargs))


@kopf.on.event("", "v1", "pods")
def pod_changed(
    event: Mapping[str, Any],
    body: kopf.Body,
    labels: Mapping[str, str],
    namespace: str | None,
    name: str,
    **kwargs: Any,
) -> None:
    """A pod changed: reconcile the ModelDeployments whose selector chooses it, and those that
    chose it before its labels changed, unless their last reconcile read the pod as it is now."""
    lookups = _lookups(kwargs)
    selecting = [c.name for c in lookups.claimants(str(namespace), labels)]
    gone = event.get("type") == "DELETED"
    seen = None if gone else (name, read_state(body))
    for deployment in POD_ROUTES.route(str(namespace), name, selecting, gone=gone):
        _reconcile_or_retry(str(namespace), deployment, lookups, seen)


@kopf.on.event(
    "batch",
    "v1",
    "jobs",
    labels={LABEL_COMPONENT: ANALYSIS_COMPONENT, LABEL_MODELDEPLOYMENT: kopf.PRESENT},
)
def analysis_job_changed(
    event: Mapping[str, Any], body: kopf.Body, namespace: str | None, **kwargs: Any
) -> None:
    """An analysis Job finished (or went): its measurement is taken now, not at a later look."""
    owner = kube.controller_owner(dict(body))
    if owner is None or owner.get("kind") != KIND:
        return
    if event.get("type") == "DELETED" or job_outcome(body) is not None:
        _reconcile_or_retry(str(namespace), str(owner["name"]), _lookups(kwargs))


@kopf.on.event(GROUP, VERSION, MODELDELTAS)
def modeldelta_changed(body: kopf.Body, namespace: str | None, **kwargs: Any) -> None:
    """A ModelDelta changed: the ModelDeployments waiting for its version look again."""
    lookups = _lookups(kwargs)
    for name in lookups.waiting_for(str(namespace), body):
        _reconcile_or_retry(str(namespace), name, lookups)


def _wake_yielders(namespace: str, lookups: Lookups) -> None:
    now = datetime.now(UTC)
    for name in lookups.yielders(namespace):
        WAKEUPS.at((namespace, name), now)


def _reconcile_or_retry(
    namespace: str, name: str, lookups: Lookups, pod: tuple[str, int] | None = None
) -> None:
    """Reconcile; on a failure, try again after a backoff (Kopf retries only its own handlers,
    not event handlers)."""
    try:
        reconcile(namespace, name, lookups=lookups, pod=pod)
    except Exception as exc:
        delay = WAKEUPS.retry((namespace, name))
        log.warning(
            "modeldeployment.reconcile_failed",
            namespace=namespace,
            name=name,
            error=str(exc),
            retry_in_s=delay,
        )


# ---------------------------------------------------------------------- reconcile


def reconcile(
    namespace: str,
    name: str,
    now: datetime | None = None,
    lookups: Lookups | None = None,
    pod: tuple[str, int] | None = None,
) -> Plan | None:
    """Bring one ModelDeployment's pods and status one step closer to its spec, and say when to
    look again. ``pod``: the name and :func:`~.pods.read_state` of the pod whose event asks; if
    the last finished reconcile read that pod so, it did all the event asks: None, no request."""
    lookups = lookups or Lookups()
    key = (namespace, name)
    with _locks.hold(key):
        if pod is not None and _pods_read.get(key, {}).get(pod[0]) == pod[1]:
            return None
        _pods_read.pop(key, None)  # until this reconcile finishes
        body = writes.get_modeldeployment(namespace, name)
        deployment = None
        if body is not None and not body["metadata"].get("deletionTimestamp"):
            deployment = _parse(body)
        if body is None or deployment is None:
            WAKEUPS.at(key, None)
            return None
        policy = namespace_policy(namespace)
        if refusals := modeldeployment_refusals(deployment, policy, default_image=operator_image()):
            message = "; ".join(refusals)
            mark_refused(body, invalid_spec_status, writes.patch_status, POLICY_DENIED, message)
            log.warning("modeldeployment.policy_denied", namespace=namespace, name=name)
            WAKEUPS.at(key, None)  # refused until its spec changes: nothing to wake it for
            return None
        now = now or datetime.now(UTC).replace(microsecond=0)
        spec = deployment.spec
        who = StoreIdentity(namespace, lambda: store_credentials(namespace, spec.store, policy))
        pod_bodies = writes.list_pods(namespace, spec.selector)
        views = [v for v in (view_pod(p) for p in pod_bodies) if v is not None]
        # Before anything is written: an older ModelDeployment selecting our pods keeps them.
        overlap = older_claims(
            claimant(body), lookups.claimants_of(namespace, pod_bodies), pod_bodies
        )
        modeldeltas = lookups.modeldeltas_of(namespace, spec.model, spec.store.uri)
        target = look_up_target(modeldeltas, spec, spec.version, who)
        if spec.verification is not None and overlap is None:
            target = signature.check(spec, target, who)
        status = deployment.status or ModelDeploymentStatus()
        ids = _version_ids(modeldeltas, deployment, target.version_id, who)
        measured: frozenset[tuple[str, int | None]] = frozenset()
        if overlap is None:  # a yielding deployment does not judge pods it does not drive
            status, measured = _measure(
                body, deployment, status, (pod_bodies, views), VersionAliases(ids), now, policy
            )
        observed = Observed(
            generation=int(body["metadata"].get("generation") or 0),
            pods=tuple(views),
            annotations=dict(body["metadata"].get("annotations") or {}),
            target=target,
            version_ids=ids,
            overlap=overlap,
            measured=measured,
        )
        outcome = plan(spec, status, observed, now)
        _apply(body, outcome, now)
        WAKEUPS.at(key, outcome.wake_at)
        _pods_read[key] = {str(p["metadata"]["name"]): read_state(p) for p in pod_bodies}
        return outcome


def _parse(body: dict[str, Any]) -> ModelDeployment | None:
    """The typed ModelDeployment; an invalid one is marked Degraded with the fields to fix."""
    parsed = parse_or_mark(body, invalid_spec_status, writes.patch_status)
    assert parsed is None or isinstance(parsed, ModelDeployment)
    return parsed


def _version_ids(
    modeldeltas: Sequence[Mapping[str, Any]],
    deployment: ModelDeployment,
    target_id: str | None,
    who: StoreIdentity,
) -> dict[str, str]:
    """Name -> content id of spec.version, the stable version and a superseded canary (agents
    report ids; the operator writes what spec.version says)."""
    spec, status = deployment.spec, deployment.status
    ids = {spec.version: target_id} if target_id else {}
    others = (status.stable_version, status.canary_version) if status else ()
    for ref in others:
        if ref and ref not in ids:
            known = look_up_target(modeldeltas, spec, ref, who)
            if known.version_id:
                ids[ref] = known.version_id
    return ids


def _measure(
    body: dict[str, Any],
    deployment: ModelDeployment,
    status: ModelDeploymentStatus,
    pods: tuple[Sequence[dict[str, Any]], Sequence[PodView]],
    aliases: VersionAliases,
    now: datetime,
    policy: NamespacePolicy,
) -> tuple[ModelDeploymentStatus, frozenset[tuple[str, int | None]]]:
    """Take the measurements that are due, before planning, and record them in the runs (pods:
    the selected pods' bodies and views); the runs measured (template name, step index)."""
    pod_bodies, views = pods
    templates = {t.name: t for t in deployment.spec.analysis_templates or []}
    runs = list(status.analysis_results or [])
    due = [
        i
        for i, run in enumerate(runs)
        if run.template_name in templates
        and run.version == status.canary_version
        and not status.abort
        and is_due(run, templates[run.template_name], now)
    ]
    if not due:
        return status, frozenset()
    by_name = {str(p["metadata"]["name"]): p for p in pod_bodies}
    canary, stable = status.canary_version, status.stable_version
    context = Context(
        engine=deployment.spec.engine,
        canary_version=str(canary),
        stable_version=str(stable),
        canary_pods=[
            by_name[v.name] for v in views if v.wanted == canary and serves(v, canary, aliases)
        ],
        stable_pods=[
            by_name[v.name] for v in views if v.wanted == stable and serves(v, stable, aliases)
        ],
        owner=body,
        ensure_job=writes.ensure_job,
        job_defaults=JobDefaults.of("analysis", policy.analysis, operator_image()),
        policy=policy,
    )
    measured: set[tuple[str, int | None]] = set()
    for index in due:
        run = runs[index]
        template = templates[run.template_name]
        measurement = take(template, run, context)
        if measurement is None:
            continue
        runs[index] = record(run, template, measurement, now)
        measured.add((run.template_name, run.step_index))
        log.info(
            "modeldeployment.measured",
            namespace=body["metadata"]["namespace"],
            name=body["metadata"]["name"],
            template=run.template_name,
            verdict=measurement.verdict,
            value=measurement.value,
        )
    return status.model_copy(update={"analysis_results": runs}), frozenset(measured)


def _apply(body: dict[str, Any], outcome: Plan, now: datetime) -> None:
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    bound = log.bind(namespace=namespace, name=name)
    patches: dict[str, dict[str, str | None]] = {}
    # the pods named to fetch the versions' objects from the bucket are told first: at 64 pods
    # the patches take seconds, and every other pod's pull waits for a seeder's download
    seeders = {name for value in outcome.seed_among.values() for name in parse_seed_among(value)}
    for pod in sorted(
        outcome.pod_versions.keys() | outcome.pod_keys.keys(),
        key=lambda pod: (pod not in seeders, pod),
    ):
        # One patch: an agent never sees a new version without the keys it must check it with.
        annotations: dict[str, str | None] = {}
        if pod in outcome.pod_keys:
            annotations[POD_VERIFY_KEYS] = outcome.pod_keys[pod]
        if (version := outcome.pod_versions.get(pod)) is not None:
            annotations.update(
                {
                    POD_VERSION: version,
                    POD_VERSION_SET_AT: rfc3339(now),
                    POD_SEED_AMONG: outcome.seed_among.get(version, ""),
                }
            )
            bound.info("modeldeployment.pod_version", pod=pod, version=version)
        patches[pod] = annotations
    writes.annotate_pods(namespace, patches)  # every pod patched before the status says so
    before = body.get("status") or {}
    after = scrubbed_status(outcome.status.to_wire())
    if after != before:
        cleared = {key: None for key in before if key not in after}
        writes.patch_status(namespace, name, {**after, **cleared})
    if outcome.handled_requests:
        writes.remove_annotations(namespace, name, outcome.handled_requests)
    for event in outcome.events:
        post_event(body, event.type, event.reason, event.message)
        bound.info("modeldeployment.event", reason=event.reason, message=event.message)
    if outcome.status.phase != before.get("phase"):
        bound.info("modeldeployment.phase", phase=outcome.status.phase, was=before.get("phase"))


__all__ = [
    "WAKEUPS",
    "analysis_job_changed",
    "modeldelta_changed",
    "modeldeployment_changed",
    "modeldeployment_event",
    "pod_changed",
    "reconcile",
]
