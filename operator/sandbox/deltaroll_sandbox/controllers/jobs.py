"""A minimal Job controller: creates pods, counts them, and sets Complete/Failed conditions.

Supported: ``completions``, ``parallelism``, ``backoffLimit`` (failed pods, plus container
restarts under ``restartPolicy: OnFailure``), ``podFailurePolicy`` (FailJob, Ignore, Count on
exit codes or pod conditions), ``activeDeadlineSeconds``, ``ttlSecondsAfterFinished``,
``suspend`` and ``completionMode: Indexed`` (pods get the
``batch.kubernetes.io/job-completion-index`` annotation and label, and ``JOB_COMPLETION_INDEX``
from it via a fieldRef, as on a cluster).
Pods are owned by their Job (controller ownerReference), so deleting the Job collects them.
A pod the API refuses (Pod Security, say) is a ``FailedCreate`` Warning Event on the Job
(``Error creating: <the API's message>``), tried again after 1 s, 2 s, 4 s... up to 60 s, as
kube-controller-manager's Job controller does.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
from typing import Any

from deltaroll_sandbox.apiserver.statuses import ApiError
from deltaroll_sandbox.apiserver.store import JOBS, PODS, Obj, Store, WatchEvent, now_rfc3339
from deltaroll_sandbox.controllers import events, informers

INDEX_KEY = "batch.kubernetes.io/job-completion-index"
TERMINAL = ("Succeeded", "Failed")
MAX_CREATE_BACKOFF_S = 60.0


def _elapsed_s(timestamp: str) -> float:
    then = datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    return (datetime.datetime.now(datetime.UTC) - then).total_seconds()


def _ranges(indexes: set[int]) -> str:
    """``{0,1,2,4}`` → ``"0-2,4"``, the format of ``status.completedIndexes``."""
    parts, ordered = [], sorted(indexes)
    start = prev = None
    for index in [*ordered, None]:
        if index is not None and prev is not None and index == prev + 1:
            prev = index
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = index
    return ",".join(parts)


def _finished(job: Obj) -> bool:
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


class JobController:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.jobs = informers.resource(store, "batch", "v1", "jobs")
        self.pods = informers.resource(store, "", "v1", "pods")
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._refused: dict[str, int] = {}  # Job uid -> pod creations refused in a row

    async def run(self) -> None:
        try:
            async for event in informers.events(self.store, {JOBS, PODS}):
                informers.guarded(self._on_event, event)
        finally:
            for timer in self._timers.values():
                timer.cancel()

    def _on_event(self, event: WatchEvent) -> None:
        informers.reconcile_owner(self.store, event, JOBS, self.jobs, self.reconcile)

    def reconcile(self, namespace: str, name: str) -> None:
        job = self.store.find(self.jobs, namespace, name)
        if job is None or job["metadata"].get("deletionTimestamp"):
            return
        if _finished(job):
            self._expire_after_ttl(job)
            return
        spec, status = job["spec"], dict(job.get("status") or {})
        uid = job["metadata"]["uid"]
        pods = [
            p
            for p in self.store.list_objects(self.pods, namespace)
            if informers.controller_uid(p) == uid
        ]
        active = [
            p
            for p in pods
            if p["status"].get("phase") not in TERMINAL
            and not p["metadata"].get("deletionTimestamp")
        ]
        succeeded = [p for p in pods if p["status"].get("phase") == "Succeeded"]
        failed_pods = [p for p in pods if p["status"].get("phase") == "Failed"]
        restarts = sum(
            s.get("restartCount", 0)
            for p in pods
            if p["spec"].get("restartPolicy") == "OnFailure"
            for s in p["status"].get("containerStatuses") or []
        )
        policy_failure: str | None = None
        counted = 0
        for pod in failed_pods:
            action, message = _failure_policy_action(spec.get("podFailurePolicy"), pod)
            if action == "FailJob" and policy_failure is None:
                policy_failure = message
            if action != "Ignore":
                counted += 1
        failures = counted + restarts
        indexed = spec.get("completionMode") == "Indexed"
        completions = int(spec.get("completions") or 1)
        parallelism = int(spec.get("parallelism", 1))
        done_indexes = {int(p["metadata"]["annotations"][INDEX_KEY]) for p in succeeded if indexed}

        status.setdefault("startTime", now_rfc3339())
        status.update(
            active=len(active),
            succeeded=len(done_indexes) if indexed else len(succeeded),
            failed=failures,
            ready=sum(1 for p in active if _pod_ready(p)),
            terminating=0,
            uncountedTerminatedPods={},
        )
        if indexed:
            status["completedIndexes"] = _ranges(done_indexes)

        deadline = spec.get("activeDeadlineSeconds")
        finished_reason: tuple[str, str, str] | None = None
        if (indexed and len(done_indexes) >= completions) or (
            not indexed and len(succeeded) >= completions
        ):
            finished_reason = (
                "Complete",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            )
        elif policy_failure is not None:
            finished_reason = ("Failed", "PodFailurePolicy", policy_failure)
        elif failures > int(spec.get("backoffLimit", 6)):
            finished_reason = (
                "Failed",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            )
        elif deadline is not None and _elapsed_s(status["startTime"]) >= float(deadline):
            finished_reason = (
                "Failed",
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            )

        if finished_reason is not None:
            kind, reason, message = finished_reason
            for pod in active:
                self.store.delete(self.pods, namespace, pod["metadata"]["name"], "Background")
            status["active"], status["ready"] = 0, 0
            now = now_rfc3339()
            interim = "SuccessCriteriaMet" if kind == "Complete" else "FailureTarget"
            status["conditions"] = [
                *(status.get("conditions") or []),
                {
                    "type": interim,
                    "status": "True",
                    "reason": reason,
                    "message": message,
                    "lastProbeTime": now,
                    "lastTransitionTime": now,
                },
                {
                    "type": kind,
                    "status": "True",
                    "reason": reason,
                    "message": message,
                    "lastProbeTime": now,
                    "lastTransitionTime": now,
                },
            ]
            if kind == "Complete":
                status["completionTime"] = now
            self._write_status(namespace, name, status)
            return

        self._write_status(namespace, name, status)
        if spec.get("suspend"):
            return
        if indexed:
            busy = done_indexes | {int(p["metadata"]["annotations"][INDEX_KEY]) for p in active}
            pending = [i for i in range(completions) if i not in busy]
            for index in pending[: max(0, parallelism - len(active))]:
                if not self._create_pod(job, index):
                    break
        else:
            wanted = min(parallelism, completions - len(succeeded)) - len(active)
            for _ in range(max(0, wanted)):
                if not self._create_pod(job, None):
                    break
        if deadline is not None:
            self._wake_at_deadline(job, float(deadline) - _elapsed_s(status["startTime"]))

    def _expire_after_ttl(self, job: Obj) -> None:
        """``ttlSecondsAfterFinished``: delete a finished Job (and its pods) once the TTL is up."""
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        key = f"ttl/{job['metadata']['uid']}"
        if ttl is None or key in self._timers:
            return
        finished_at = max(
            c.get("lastTransitionTime", "")
            for c in job["status"]["conditions"]
            if c.get("type") in ("Complete", "Failed")
        )
        meta = job["metadata"]

        def expire() -> None:
            self._timers.pop(key, None)
            current = self.store.find(self.jobs, meta["namespace"], meta["name"])
            if current is not None and current["metadata"]["uid"] == meta["uid"]:
                self.store.delete(self.jobs, meta["namespace"], meta["name"], "Background")

        delay = max(0.0, float(ttl) - _elapsed_s(finished_at))
        self._timers[key] = asyncio.get_running_loop().call_later(delay, expire)

    def _write_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        def apply(job: Obj) -> None:
            job["status"] = status

        self.store.mutate(self.jobs, namespace, name, apply, subresource="status")

    def _wake_at_deadline(self, job: Obj, delay_s: float) -> None:
        uid = job["metadata"]["uid"]
        if uid in self._timers:
            return
        meta = job["metadata"]

        def wake() -> None:
            self._timers.pop(uid, None)
            self.reconcile(meta["namespace"], meta["name"])

        self._timers[uid] = asyncio.get_running_loop().call_later(max(0.0, delay_s) + 0.05, wake)

    def _create_pod(self, job: Obj, index: int | None) -> bool:
        """Create one pod of ``job``; False (an Event, a retry later) if the API refuses it."""
        meta = job["metadata"]
        template = copy.deepcopy(job["spec"]["template"])
        pod_meta = template.get("metadata") or {}
        pod_meta["generateName"] = (
            f"{meta['name']}-" if index is None else f"{meta['name']}-{index}-"
        )
        pod_meta["ownerReferences"] = [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": meta["name"],
                "uid": meta["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        if index is not None:
            pod_meta.setdefault("annotations", {})[INDEX_KEY] = str(index)
            pod_meta.setdefault("labels", {})[INDEX_KEY] = str(index)
            for container in template["spec"]["containers"] + (
                template["spec"].get("initContainers") or []
            ):
                container.setdefault("env", []).append(
                    {
                        "name": "JOB_COMPLETION_INDEX",
                        "valueFrom": {
                            "fieldRef": {"fieldPath": f"metadata.annotations['{INDEX_KEY}']"}
                        },
                    }
                )
        pod_meta.pop("name", None)
        template["metadata"] = pod_meta
        try:
            self.store.create(
                self.pods, meta["namespace"], {"apiVersion": "v1", "kind": "Pod", **template}
            )
        except ApiError as refused:
            message = f"Error creating: {refused.message}"
            events.record(
                self.store, job, "FailedCreate", message, "Warning", component="job-controller"
            )
            self._retry_later(job)
            return False
        self._refused.pop(meta["uid"], None)
        return True

    def _retry_later(self, job: Obj) -> None:
        meta = job["metadata"]
        key = f"create/{meta['uid']}"
        if key in self._timers:
            return
        refused = self._refused[meta["uid"]] = self._refused.get(meta["uid"], 0) + 1
        delay = min(MAX_CREATE_BACKOFF_S, 2.0 ** (refused - 1))

        def retry() -> None:
            self._timers.pop(key, None)
            self.reconcile(meta["namespace"], meta["name"])

        self._timers[key] = asyncio.get_running_loop().call_later(delay, retry)


def _failure_policy_action(policy: dict[str, Any] | None, pod: Obj) -> tuple[str, str]:
    """The action of the first ``podFailurePolicy`` rule a failed pod matches (``Count`` when
    none does), with the message a real Job controller writes for FailJob."""
    meta = pod["metadata"]
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    conditions = {
        c.get("type"): c.get("status") for c in (pod.get("status") or {}).get("conditions") or []
    }
    for index, rule in enumerate((policy or {}).get("rules") or []):
        on_codes = rule.get("onExitCodes")
        if on_codes is not None:
            values = set(on_codes.get("values") or [])
            for status in statuses:
                if on_codes.get("containerName") not in (None, status.get("name")):
                    continue
                code = ((status.get("state") or {}).get("terminated") or {}).get("exitCode")
                if code is None or code == 0:
                    continue
                if (code in values) == (on_codes.get("operator", "In") == "In"):
                    return rule["action"], (
                        f"Container {status['name']} for pod {meta['namespace']}/{meta['name']} "
                        f"failed with exit code {code} matching {rule['action']} rule "
                        f"at index {index}"
                    )
        for wanted in rule.get("onPodConditions") or []:
            if conditions.get(wanted.get("type")) == wanted.get("status", "True"):
                return rule["action"], (
                    f"Pod {meta['namespace']}/{meta['name']} has condition {wanted.get('type')} "
                    f"matching {rule['action']} rule at index {index}"
                )
    return "Count", ""


def _pod_ready(pod: Obj) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )
