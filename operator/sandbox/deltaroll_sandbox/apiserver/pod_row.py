"""A pod's READY, STATUS and RESTARTS cells, computed as kube-apiserver's ``printPod`` does.

Mirrors pkg/printers/internalversion/printers.go so ``kubectl get pods`` reads the same as on a
cluster: a native sidecar (an init container with ``restartPolicy: Always``) counts in READY's
total, and once started in its ready count; an init container that has not finished shows as
``Init:...``; RESTARTS says when the last restart was. Timestamps compare as strings: the API
writes them all in one RFC 3339 form.
"""

from __future__ import annotations

from typing import Any

from deltaroll_sandbox.apiserver.ages import age

_TERMINAL = ("Succeeded", "Failed")
_NODE_UNREACHABLE = "NodeLost"


def _is_sidecar(container: dict[str, Any] | None) -> bool:
    return container is not None and container.get("restartPolicy") == "Always"


def _finished_at(status: dict[str, Any]) -> str:
    """When the container's previous run ended ("" when it never restarted)."""
    terminated = (status.get("lastState") or {}).get("terminated")
    return str(terminated.get("finishedAt") or "") if terminated else ""


def _condition_true(pod: dict[str, Any], kind: str) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


def _exit_reason(terminated: dict[str, Any], prefix: str) -> str:
    """A terminated container without a reason: its signal, else its exit code."""
    if terminated.get("signal"):
        return f"{prefix}Signal:{terminated['signal']}"
    return f"{prefix}ExitCode:{terminated.get('exitCode', 0)}"


def pod_cells(pod: dict[str, Any]) -> list[str]:
    """``[ready, status, restarts]`` for one pod."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    phase = status.get("phase", "")
    reason = status.get("reason") or phase
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"
    init_specs = spec.get("initContainers") or []
    by_name = {c.get("name"): c for c in init_specs}
    total = len(spec.get("containers") or []) + sum(1 for c in init_specs if _is_sidecar(c))
    ready = restarts = sidecar_restarts = 0
    last_restart = last_sidecar_restart = ""
    initializing = False
    for index, container in enumerate(status.get("initContainerStatuses") or []):
        sidecar = _is_sidecar(by_name.get(container.get("name")))
        restarts += int(container.get("restartCount", 0))
        last_restart = max(last_restart, _finished_at(container))
        if sidecar:
            sidecar_restarts += int(container.get("restartCount", 0))
            last_sidecar_restart = max(last_sidecar_restart, _finished_at(container))
        state = container.get("state") or {}
        terminated, waiting = state.get("terminated"), state.get("waiting")
        if terminated is not None and terminated.get("exitCode", 0) == 0:
            continue
        if sidecar and container.get("started"):
            ready += 1 if container.get("ready") else 0
            continue
        if terminated is not None:
            reason = (
                f"Init:{terminated['reason']}"
                if terminated.get("reason")
                else _exit_reason(terminated, "Init:")
            )
        elif waiting is not None and waiting.get("reason") not in (None, "", "PodInitializing"):
            reason = f"Init:{waiting['reason']}"
        else:
            reason = f"Init:{index}/{len(init_specs)}"
        initializing = True
        break
    if not initializing or _condition_true(pod, "Initialized"):
        restarts, last_restart = sidecar_restarts, last_sidecar_restart
        running = False
        for container in reversed(status.get("containerStatuses") or []):
            restarts += int(container.get("restartCount", 0))
            last_restart = max(last_restart, _finished_at(container))
            state = container.get("state") or {}
            terminated, waiting = state.get("terminated"), state.get("waiting")
            if waiting is not None and waiting.get("reason"):
                reason = waiting["reason"]
            elif terminated is not None:
                reason = terminated.get("reason") or _exit_reason(terminated, "")
            elif container.get("ready") and state.get("running") is not None:
                running = True
                ready += 1
        if reason == "Completed" and running:
            reason = "Running" if _condition_true(pod, "Ready") else "NotReady"
    if pod["metadata"].get("deletionTimestamp"):
        if status.get("reason") == _NODE_UNREACHABLE:
            reason = "Unknown"
        elif phase not in _TERMINAL:
            reason = "Terminating"
    shown_restarts = str(restarts)
    if restarts and last_restart:
        shown_restarts = f"{restarts} ({age(last_restart)} ago)"
    return [f"{ready}/{total}", reason, shown_restarts]
