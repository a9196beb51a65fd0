"""What ``kubectl deltaroll status`` shows, from a ModelDeployment and its pods as the API has them.

Pure: objects in, a summary (the ``--json`` object) and its text out, so ``--watch`` renders each
change the same way as a single ``status``. Each pod row says what the operator asked it to
serve (WANTS, a name), what its agent verified and serves (SERVES, a content id, shortened like a
git hash), the agent's state, the pod's Ready condition, and for a pod whose weights-ready gate is
closed how long it has been out of service so far (PAUSED), and the pod's last version change
as its agent reported it (LAST CHANGE: the pause, how the engine got the version, in memory or
by a reload from disk, and the bytes written into its memory).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from deltaroll.api.annotations import POD_LAST_CHANGE, WEIGHTS_READY_CONDITION
from deltaroll.api.conditions import parse_rfc3339
from deltaroll.api.weight_change import parse_weight_change
from deltaroll.controllers.modeldeployment.pods import view_pod

_CONTENT_ID = re.compile(r"[0-9a-f]{32}")
_SHORT_ID = 12


def summarize(
    body: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], now: datetime
) -> dict[str, Any]:
    """The ``--json`` object: the rollout's status fields and one row per selected pod."""
    meta, spec, state = body["metadata"], body.get("spec") or {}, body.get("status") or {}
    steps = ((spec.get("strategy") or {}).get("canary") or {}).get("steps") or []
    rows = [row for row in (_pod_row(pod, now) for pod in pods) if row is not None]
    return {
        "name": meta["name"],
        "namespace": meta.get("namespace"),
        "specVersion": spec.get("version"),
        "phase": state.get("phase"),
        "message": state.get("message"),
        "stableVersion": state.get("stableVersion"),
        "canaryVersion": state.get("canaryVersion"),
        "currentStepIndex": state.get("currentStepIndex"),
        "steps": len(steps),
        "totalPods": state.get("totalPods", 0),
        "updatedPods": state.get("updatedPods", 0),
        "readyPods": state.get("readyPods", 0),
        "abort": state.get("abort", False),
        "analysisResults": state.get("analysisResults") or [],
        "conditions": state.get("conditions") or [],
        "upToDate": state.get("observedGeneration") == meta.get("generation"),
        "pods": sorted(rows, key=lambda row: row["name"]),
    }


def _pod_row(pod: Mapping[str, Any], now: datetime) -> dict[str, Any] | None:
    """One pod as a row; None for a pod being deleted (the totals leave it out too)."""
    view = view_pod(pod)
    if view is None:
        return None
    conditions = (pod.get("status") or {}).get("conditions") or []
    gate = next((c for c in conditions if c.get("type") == WEIGHTS_READY_CONDITION), None)
    paused = None
    if gate is not None and gate.get("status") == "False" and gate.get("lastTransitionTime"):
        since = parse_rfc3339(gate["lastTransitionTime"])
        paused = max(0, int((now - since).total_seconds()))
    return {
        "name": view.name,
        "wants": view.wanted,
        "serves": view.current,
        "agentState": view.agent_state.value if view.agent_state is not None else None,
        "agentMessage": view.agent_message,
        "ready": view.ready,
        "pausedSeconds": paused,
        "lastChange": _last_change(pod),
    }


def _last_change(pod: Mapping[str, Any]) -> dict[str, Any] | None:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    change = parse_weight_change(annotations.get(POD_LAST_CHANGE))
    if change is None:
        return None
    return {
        "version": change.version,
        "method": change.method,
        "bytesApplied": change.bytes_applied,
        "pauseSeconds": change.pause_s,
        "drainSeconds": change.drain_s,
        "reason": change.reason,
    }


def render(s: Mapping[str, Any]) -> str:
    """The summary for people: the rollout, then a table of its pods."""
    step = "-" if s["currentStepIndex"] is None else f"{s['currentStepIndex']}/{s['steps']}"
    lines = [
        f"Name:         {s['namespace']}/{s['name']}",
        f"Status:       {s['phase'] or 'Unknown'}"
        + ("" if s["upToDate"] else " (not observed yet)"),
        f"Message:      {s['message'] or ''}",
        f"Spec version: {s['specVersion']}",
        f"Stable:       {s['stableVersion'] or '-'}",
        f"Canary:       {s['canaryVersion'] or '-'}",
        f"Step:         {step}",
        f"Pods:         {s['totalPods']} total, {s['updatedPods']} updated, {s['readyPods']} ready",
    ]
    for run in s["analysisResults"]:
        where = "background" if run.get("stepIndex") is None else f"step {run['stepIndex']}"
        lines.append(
            f"Analysis:     {run.get('templateName')} ({where}) {run.get('phase')}: "
            f"{run.get('successful', 0)} ok, {run.get('failed', 0)} failed, "
            f"{run.get('errors', 0)} errors, last {run.get('lastValue', '-')}"
        )
    for condition in s["conditions"]:
        lines.append(
            f"Condition:    {condition.get('type')}={condition.get('status')} "
            f"({condition.get('reason')})"
        )
    if s["pods"]:
        lines += ["", *_pod_table(s["pods"])]
    return "\n".join(lines)


def _pod_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Aligned columns as ``kubectl get`` prints them, then the message of each failed agent."""
    header = ("POD", "WANTS", "SERVES", "AGENT", "READY", "PAUSED", "LAST CHANGE")
    cells = [header] + [
        (
            row["name"],
            row["wants"] or "-",
            _short_version(row["serves"]),
            row["agentState"] or "-",
            "yes" if row["ready"] else "no",
            "-" if row["pausedSeconds"] is None else _duration(row["pausedSeconds"]),
            _change_cell(row.get("lastChange")),
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    lines = ["   ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
             for line in cells]  # fmt: skip
    failed = [row for row in rows if row["agentState"] == "Failed" and row["agentMessage"]]
    return lines + [f"{row['name']}: {row['agentMessage']}" for row in failed]


def _change_cell(change: Mapping[str, Any] | None) -> str:
    """``in-memory 12ms 184kB``: the last change's pause, method and bytes applied."""
    if not change:
        return "-"
    pause = float(change["pauseSeconds"])
    shown = f"{pause * 1000:.0f}ms" if pause < 10 else _duration(int(pause))
    return f"{change['method']} {shown} {_bytes(int(change['bytesApplied']))}"


def _bytes(count: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000:
            return f"{count}{unit}"
        count //= 1000
    return f"{count}TB"


def _short_version(version: str | None) -> str:
    if version is None:
        return "-"
    return version[:_SHORT_ID] if _CONTENT_ID.fullmatch(version) else version


def _duration(seconds: int) -> str:
    """42s, 3m7s, 2h5m: whole units, largest two."""
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes}m"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"
