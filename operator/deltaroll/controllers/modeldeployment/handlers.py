"""Kopf handlers for ModelDeployment: read, measure what is due, plan, apply.

Every trigger converges on :func:`reconcile` (level-triggered, idempotent, one at a time per
ModelDeployment):

- the ModelDeployment is created, changed (spec.version from GitOps, or a promote/abort/retry
  annotation from ``kubectl deltaroll``), or found at start-up;
- a timer every ``$DELTAROLL_ROLLOUT_INTERVAL_S`` seconds (default 5): pauses end, analysis
  measurements fall due, progress deadlines pass;
- a selected pod changes (its agent reports): an index of ModelDeployment selectors maps the
  pod to the deployments that choose it.

Two ModelDeployments selecting one pod do not fight over it: the older keeps it and the younger
changes no pod until the overlap ends (:mod:`deltaroll.controllers.modeldeployment.overlap`).

The rollout itself is :func:`deltaroll.controllers.modeldeployment.planner.plan`, a pure function.
With ``spec.verification``, spec.version must carry an accepted signature
(:mod:`deltaroll.controllers.modeldeployment.signature`) before any pod moves, and every pod
carries the accepted keys for its agent.
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, cast

import kopf
import structlog

from deltaroll.api import ModelDeployment
from deltaroll.api.annotations import POD_VERIFY_KEYS, POD_VERSION
from deltaroll.api.common import GROUP, VERSION
from deltaroll.api.conditions import rfc3339
from deltaroll.api.modeldeployment import PLURAL, ModelDeploymentSpec, ModelDeploymentStatus
from deltaroll.controllers import kube
from deltaroll.controllers.analysis.job import DEFAULT_IMAGE
from deltaroll.controllers.analysis.measure import Context, take
from deltaroll.controllers.analysis.runs import is_due, record
from deltaroll.controllers.invalid import parse_or_mark
from deltaroll.controllers.modeldeployment import signature, writes
from deltaroll.controllers.modeldeployment.overlap import older_claims, selects
from deltaroll.controllers.modeldeployment.planner import Observed, Plan, invalid_spec_status, plan
from deltaroll.controllers.modeldeployment.pods import (
    POD_VERSION_SET_AT,
    PodView,
    VersionAliases,
    serves,
    view_pod,
)
from deltaroll.controllers.modeldeployment.target import look_up as look_up_target

RESOURCE: Final = (GROUP, VERSION, PLURAL)
INTERVAL_S: Final = float(os.environ.get("DELTAROLL_ROLLOUT_INTERVAL_S", "5"))

log = structlog.get_logger("deltaroll.controllers.modeldeployment")
_locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE)
def modeldeployment_changed(namespace: str | None, name: str, **_: Any) -> None:
    """New, changed (spec or a request annotation), or found at start-up: reconcile."""
    reconcile(str(namespace), name)


@kopf.timer(*RESOURCE, interval=INTERVAL_S, sharp=False)
def modeldeployment_tick(namespace: str | None, name: str, **_: Any) -> None:
    """Time passes: pauses end, measurements fall due, deadlines pass."""
    reconcile(str(namespace), name)


@kopf.index(*RESOURCE)
def deployment_selectors(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[str, tuple[str, dict[str, Any]]]:
    """Namespace -> (name, selector) of every ModelDeployment, to route pod events."""
    return {str(namespace): (name, dict(spec.get("selector") or {}))}


@kopf.on.event("", "v1", "pods")
def pod_changed(labels: Mapping[str, str], namespace: str | None, **kwargs: Any) -> None:
    """A pod changed: reconcile the ModelDeployments whose selector chooses it."""
    index: kopf.Index[str, tuple[str, dict[str, Any]]] = kwargs["deployment_selectors"]
    # A snapshot: Kopf updates the index from other events while this handler runs.
    for name, selector in list(index.get(str(namespace), [])):
        if selects(selector, labels):
            reconcile(str(namespace), name)


def reconcile(namespace: str, name: str, now: datetime | None = None) -> Plan | None:
    """Bring one ModelDeployment's pods and status one step closer to its spec."""
    with _locks[(namespace, name)]:
        body = writes.get_modeldeployment(namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        deployment = _parse(body)
        if deployment is None:
            return None
        now = now or datetime.now(UTC).replace(microsecond=0)
        spec = deployment.spec
        pod_bodies = writes.list_pods(namespace, spec.selector)
        views = [v for v in (view_pod(p) for p in pod_bodies) if v is not None]
        # Before anything is written: an older ModelDeployment selecting our pods keeps them.
        overlap = older_claims(body, writes.list_modeldeployments(namespace), pod_bodies)
        modeldeltas = kube.list_modeldeltas(namespace)
        target = look_up_target(modeldeltas, spec, spec.version)
        if spec.verification is not None and overlap is None:
            target = signature.check(spec, target, _store_credentials(namespace, spec))
        status = deployment.status or ModelDeploymentStatus()
        ids = _version_ids(modeldeltas, deployment, target.version_id)
        if overlap is None:  # a yielding deployment does not judge pods it does not drive
            status = _measure(body, deployment, status, pod_bodies, views, VersionAliases(ids), now)
        observed = Observed(
            generation=int(body["metadata"].get("generation") or 0),
            pods=tuple(views),
            annotations=dict(body["metadata"].get("annotations") or {}),
            target=target,
            version_ids=ids,
            overlap=overlap,
        )
        outcome = plan(spec, status, observed, now)
        _apply(body, outcome, now)
        return outcome


def _parse(body: dict[str, Any]) -> ModelDeployment | None:
    """The typed ModelDeployment; an invalid one is marked Degraded with the fields to fix."""
    parsed = parse_or_mark(body, invalid_spec_status, writes.patch_status)
    assert parsed is None or isinstance(parsed, ModelDeployment)
    return parsed


def _store_credentials(namespace: str, spec: ModelDeploymentSpec) -> dict[str, str] | None:
    """The secretRef Secret's data, as the agents get it (None without one, or when it is
    missing: the store then answers for itself)."""
    ref = spec.store.secret_ref
    return kube.read_secret_data(namespace, ref.name) if ref is not None else None


def _version_ids(
    modeldeltas: Sequence[Mapping[str, Any]], deployment: ModelDeployment, target_id: str | None
) -> dict[str, str]:
    """Name -> content id of spec.version, the stable version and a superseded canary (agents
    report ids; the operator writes what spec.version says)."""
    spec, status = deployment.spec, deployment.status
    ids = {spec.version: target_id} if target_id else {}
    others = (status.stable_version, status.canary_version) if status else ()
    for ref in others:
        if ref and ref not in ids:
            known = look_up_target(modeldeltas, spec, ref)
            if known.version_id:
                ids[ref] = known.version_id
    return ids


def _measure(
    body: dict[str, Any],
    deployment: ModelDeployment,
    status: ModelDeploymentStatus,
    pod_bodies: Sequence[dict[str, Any]],
    views: Sequence[PodView],
    aliases: VersionAliases,
    now: datetime,
) -> ModelDeploymentStatus:
    """Take the measurements that are due, before planning, and record them in the runs."""
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
        return status
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
        default_image=os.environ.get("DELTAROLL_WORKER_IMAGE") or DEFAULT_IMAGE,
    )
    for index in due:
        run = runs[index]
        template = templates[run.template_name]
        measurement = take(template, run, context)
        if measurement is None:
            continue
        runs[index] = record(run, template, measurement, now)
        log.info(
            "modeldeployment.measured",
            namespace=body["metadata"]["namespace"],
            name=body["metadata"]["name"],
            template=run.template_name,
            verdict=measurement.verdict,
            value=measurement.value,
        )
    return status.model_copy(update={"analysis_results": runs})


def _apply(body: dict[str, Any], outcome: Plan, now: datetime) -> None:
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    bound = log.bind(namespace=namespace, name=name)
    for pod in sorted(outcome.pod_versions.keys() | outcome.pod_keys.keys()):
        # One patch: an agent never sees a new version without the keys it must check it with.
        annotations: dict[str, str | None] = {}
        if pod in outcome.pod_keys:
            annotations[POD_VERIFY_KEYS] = outcome.pod_keys[pod]
        if (version := outcome.pod_versions.get(pod)) is not None:
            annotations.update({POD_VERSION: version, POD_VERSION_SET_AT: rfc3339(now)})
            bound.info("modeldeployment.pod_version", pod=pod, version=version)
        writes.annotate_pod(namespace, pod, annotations)
    before = body.get("status") or {}
    after = outcome.status.to_wire()
    if after != before:
        cleared = {key: None for key in before if key not in after}
        writes.patch_status(namespace, name, {**after, **cleared})
    if outcome.handled_requests:
        writes.remove_annotations(namespace, name, outcome.handled_requests)
    for event in outcome.events:
        post = kopf.warn if event.type == "Warning" else kopf.info
        post(cast(kopf.Body, body), reason=event.reason, message=event.message)
        bound.info("modeldeployment.event", reason=event.reason, message=event.message)
    if outcome.status.phase != before.get("phase"):
        bound.info("modeldeployment.phase", phase=outcome.status.phase, was=before.get("phase"))


__all__ = ["modeldeployment_changed", "modeldeployment_tick", "pod_changed", "reconcile"]
