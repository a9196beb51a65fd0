"""The end of the demo: check each fact of the story against what the cluster and the store say,
print the numbers (bytes shipped per pod per version against the full checkpoint, each pod's
engine pause per version, time per step) and where to look around, and build the final JSON
line."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from deltaroll.api.modeldelta import as_percent
from deltaroll_demo.manifests import DEPLOYMENT, MODEL
from deltaroll_demo.observe import Received
from deltaroll_demo.story import Record

LABELS = ("v1", "v2", "v3")


def _name(record: Record, version: str | None) -> str | None:
    """v1/v2/v3 for a version id or name; other values as they are."""
    by_id = {v: k for k, v in record.ids.items()}
    return by_id.get(version or "", version)


def _analysis(record: Record, label: str) -> list[dict[str, Any]]:
    results = (record.after.get(label) or {}).get("analysisResults") or []
    return [r for r in results if _name(record, r.get("version")) == label]


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


def received_per_pod_per_version(record: Record) -> dict[str, dict[str, Received]]:
    """What each pod's agent received while the fleet moved to each version (its /metrics)."""
    table: dict[str, dict[str, Received]] = {}
    previous: dict[str, Received] = {}
    for label in LABELS:
        for pod, total in (record.received_after.get(label) or {}).items():
            table.setdefault(pod, {})[label] = total - previous.get(pod, Received(0, 0))
            previous[pod] = total
    return table


def pause_per_pod_per_version(record: Record) -> dict[str, dict[str, dict[str, Any]]]:
    """Each pod's last version change after each step, as its agent reported it: the pause,
    how (in-memory or a reload from disk) and the bytes written into the engine's memory."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for label in LABELS:
        for pod in record.pods_after.get(label) or []:
            change = pod.last_change
            if change is None:
                continue
            table.setdefault(pod.name, {})[label] = {
                "version": _name(record, change.version),
                "method": change.method,
                "pause_s": change.pause_s,
                "bytes_applied": change.bytes_applied,
            }
    return table


def checks(record: Record, store_uri: str, cache_dir: Any) -> dict[str, bool]:
    """Each fact of the story, read back from the API and the store."""
    from deltaroll.store import Store, StoreError

    store = Store(store_uri, cache_dir=cache_dir)
    try:
        in_store = all(str(store.resolve(MODEL, k)) == record.ids[k] for k in LABELS)
    except StoreError:
        in_store = False
    v2, v3 = record.after.get("v2") or {}, record.after.get("v3") or {}
    degraded = _condition(v3, "Degraded")
    history = [_name(record, h.get("version")) for h in v2.get("history") or []]
    return {
        "v1_served_by_every_pod": _all_on(record, "v1", "v1"),
        "versions_in_store": in_store,
        "deltas_computed_by_jobs": all(
            (record.deltas.get(k) or {}).get("phase") == "Ready"
            and record.deltas[k].get("versionId") == record.ids[k]
            and bool(record.deltas[k].get("jobRef"))
            for k in ("v2", "v3")
        ),
        "v2_canary_25_50_100": {1, 2, 4} <= record.wanted_counts.get("v2", set()),
        "v2_analysis_successful": any(
            r.get("phase") == "Successful" for r in _analysis(record, "v2")
        ),
        "v2_promoted": v2.get("phase") == "Healthy" and history[:1] == ["v2"],
        "v2_served_by_every_pod": _all_on(record, "v2", "v2"),
        "v2_patched_in_memory": _changed_in_memory(record, "v2"),
        "v3_only_on_the_canary": max(record.wanted_counts.get("v3", {0})) == 1,
        "v3_analysis_failed": any(r.get("phase") == "Failed" for r in _analysis(record, "v3")),
        "v3_rolled_back": v3.get("phase") == "Degraded"
        and degraded.get("status") == "True"
        and degraded.get("reason") == "AnalysisFailed"
        and _name(record, v3.get("stableVersion")) == "v2",
        "v2_served_by_every_pod_after_rollback": _all_on(record, "v3", "v2"),
    }


def _changed_in_memory(record: Record, label: str) -> bool:
    pods = record.pods_after.get(label) or []
    return bool(pods) and all(
        p.last_change is not None
        and p.last_change.version == record.ids[label]
        and p.last_change.method == "in-memory"
        for p in pods
    )


def _all_on(record: Record, after: str, label: str) -> bool:
    pods = record.pods_after.get(after) or []
    return bool(pods) and all(p.current == record.ids[label] and p.ready for p in pods)


def result(
    record: Record, seconds: dict[str, float], facts: dict[str, bool], failure: str | None
) -> dict[str, Any]:
    """The final JSON line."""
    received = received_per_pod_per_version(record)
    v2, v3 = record.after.get("v2") or {}, record.after.get("v3") or {}
    history = [_name(record, h.get("version")) for h in v2.get("history") or []]
    last_pods = next((record.pods_after[k] for k in reversed(LABELS) if k in record.pods_after), [])
    return {
        "demo": "rollout",
        "ok": failure is None and bool(facts) and all(facts.values()),
        "failure": failure,
        "promoted": list(reversed(history)),
        "rolled_back": ["v3"] if facts.get("v3_rolled_back") else [],
        "final_version_per_pod": {p.name: _name(record, p.current) for p in last_pods},
        "bytes_per_pod_per_version": {
            pod: {label: got.total for label, got in per_version.items()}
            for pod, per_version in received.items()
        },
        "peer_bytes_per_pod_per_version": {
            pod: {label: got.peers for label, got in per_version.items()}
            for pod, per_version in received.items()
        },
        "pause_per_pod_per_version": pause_per_pod_per_version(record),
        "full_checkpoint_bytes": record.full_checkpoint_bytes,
        "delta_bytes": {k: (record.deltas.get(k) or {}).get("deltaBytes") for k in ("v2", "v3")},
        "parameters": record.parameters,
        "degraded": {k: _condition(v3, "Degraded").get(k) for k in ("status", "reason", "message")},
        "analysis": {
            k: [
                {f: r.get(f) for f in ("phase", "successful", "failed", "lastValue")}
                for r in _analysis(record, k)
            ]
            for k in ("v2", "v3")
        },
        "checks": facts,
        "events": sorted(set(record.events)),
        "step_seconds": seconds,
        "version_ids": record.ids,
    }


def print_summary(console: Console, outcome: dict[str, Any], kubeconfig: str, keep: bool) -> None:
    full = outcome["full_checkpoint_bytes"]
    # Bytes over their share of the checkpoint, on two lines: a pod name and three versions fit
    # 80 columns whole.
    peers = outcome.get("peer_bytes_per_pod_per_version") or {}
    table = Table(
        title=f"bytes shipped per pod (full checkpoint: {full:,} bytes), the share from peers "
        "(the rest from the bucket)"
    )
    table.add_column("pod", overflow="fold")
    for label in LABELS:
        table.add_column(label, justify="right", no_wrap=True)
    for pod, per_version in outcome["bytes_per_pod_per_version"].items():
        cells = []
        for label in LABELS:
            shipped = per_version.get(label)
            from_peers = peers.get(pod, {}).get(label, 0)
            cells.append(
                "-"
                if shipped is None
                else f"{shipped:,}\n{as_percent(shipped / full)}\n"
                + (f"peers {as_percent(from_peers / shipped)}" if shipped else "")
            )
        table.add_row(pod, *cells)
    console.print(table)
    pauses = outcome.get("pause_per_pod_per_version") or {}
    if pauses:
        console.print(_pause_table(pauses))
    steps = Table(title="time per step")
    steps.add_column("step")
    steps.add_column("seconds", justify="right")
    for step, seconds in outcome["step_seconds"].items():
        steps.add_row(step, f"{seconds:.1f}")
    console.print(steps)
    for name, ok in outcome["checks"].items():
        console.print(f"  {'ok  ' if ok else 'FAIL'} {name}")
    if outcome["failure"]:
        console.print(f"error: {outcome['failure']}", soft_wrap=True)
    how = "still running (Ctrl-C stops it)" if keep else "stopped; rerun with --keep to keep it"
    console.print(f"\nThe sandbox is {how}. Look around with:", soft_wrap=True)
    for command in (
        f"export KUBECONFIG={kubeconfig}",
        "kubectl get modeldeployments,modeldeltas,jobs,pods",
        f"kubectl describe modeldeployment {DEPLOYMENT}",
        f"kubectl deltaroll status {DEPLOYMENT}",
        f"kubectl get events --field-selector involvedObject.name={DEPLOYMENT}",
    ):
        console.print(f"  {command}", soft_wrap=True, highlight=False)


def _pause_table(pauses: dict[str, dict[str, dict[str, Any]]]) -> Table:
    """Each pod's engine pause per version: milliseconds and how (in memory, or a reload)."""
    table = Table(title="engine pause per pod per version (last change after each step)")
    table.add_column("pod", overflow="fold")
    for label in LABELS:
        table.add_column(label, justify="right", no_wrap=True)
    for pod, per_version in pauses.items():
        cells = []
        for label in LABELS:
            change = per_version.get(label)
            cells.append(
                "-"
                if change is None
                else f"{change['pause_s'] * 1000:,.1f} ms\n{change['method']} {change['version']}"
            )
        table.add_row(pod, *cells)
    return table
