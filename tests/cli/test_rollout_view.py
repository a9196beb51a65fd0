"""``kubectl deltaroll status`` rendered from objects: the rollout, then one row per pod with the
version it wants and serves, its agent's state, Ready, and how long a closed gate has held it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from deltaroll.api.annotations import (
    POD_AGENT_STATE,
    POD_CURRENT_VERSION,
    POD_LAST_CHANGE,
    POD_VERSION,
    WEIGHTS_READY_CONDITION,
)
from deltaroll.api.weight_change import WeightChange
from deltaroll.cli.rollout_view import render, summarize

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
V2_ID = "0123456789abcdef0123456789abcdef"
IN_MEMORY = WeightChange(
    version=V2_ID, method="in-memory", bytes_applied=184_266, pause_s=0.0123, drain_s=0.004
)
DEPLOYMENT = {
    "metadata": {"name": "qwen3", "namespace": "ml", "generation": 2},
    "spec": {
        "version": "v2", "strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}},
    },
    "status": {
        "phase": "Progressing", "stableVersion": "v1", "canaryVersion": "v2",
        "currentStepIndex": 0, "totalPods": 3, "updatedPods": 1, "readyPods": 1,
        "observedGeneration": 2,
    },
}  # fmt: skip


def pod(
    name: str,
    annotations: dict[str, str],
    *,
    ready: bool,
    gate: tuple[str, str] | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    conditions = [{"type": "Ready", "status": str(ready)}]
    if gate is not None:
        status, since = gate
        conditions.append(
            {"type": WEIGHTS_READY_CONDITION, "status": status, "lastTransitionTime": since}
        )
    meta: dict[str, Any] = {"name": name, "annotations": annotations}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T11:59:00Z"
    return {"metadata": meta, "status": {"conditions": conditions}}


PODS = [
    pod("qwen3-c", {POD_VERSION: "v1", POD_AGENT_STATE: "Failed: store unreachable"}, ready=False),
    pod(
        "qwen3-b",
        {POD_VERSION: "v2", POD_CURRENT_VERSION: "v1", POD_AGENT_STATE: "Applying: 2 deltas"},
        ready=False,
        gate=("False", "2026-01-01T11:58:53Z"),
    ),
    pod(
        "qwen3-a",
        {
            POD_VERSION: "v2",
            POD_CURRENT_VERSION: V2_ID,
            POD_AGENT_STATE: "Ready",
            POD_LAST_CHANGE: IN_MEMORY.encode(),
        },  # fmt: skip
        ready=True,
        gate=("True", "2026-01-01T11:00:00Z"),
    ),
    pod("qwen3-old", {POD_VERSION: "v1", POD_AGENT_STATE: "Ready"}, ready=True, deleting=True),
]


def test_summary_has_a_row_per_live_pod() -> None:
    rows = summarize(DEPLOYMENT, PODS, NOW)["pods"]
    assert [row["name"] for row in rows] == ["qwen3-a", "qwen3-b", "qwen3-c"]
    assert rows[1] == {
        "name": "qwen3-b", "wants": "v2", "serves": "v1", "agentState": "Applying",
        "agentMessage": "2 deltas", "ready": False, "pausedSeconds": 67, "lastChange": None,
    }  # fmt: skip
    assert rows[0]["serves"] == V2_ID and rows[0]["pausedSeconds"] is None
    assert rows[0]["lastChange"] == {
        "version": V2_ID, "method": "in-memory", "bytesApplied": 184_266,
        "pauseSeconds": 0.0123, "drainSeconds": 0.004, "reason": "",
    }  # fmt: skip


def test_an_unreadable_last_change_shows_nothing() -> None:
    broken = pod("qwen3-x", {POD_VERSION: "v2", POD_LAST_CHANGE: '{"method": "teleport"}'},
                 ready=True)  # fmt: skip
    assert summarize(DEPLOYMENT, [broken], NOW)["pods"][0]["lastChange"] is None


def test_render_lists_the_pods_under_the_rollout() -> None:
    text = render(summarize(DEPLOYMENT, PODS, NOW))
    assert "Pods:         3 total, 1 updated, 1 ready" in text
    table = text.split("\n\n", 1)[1].splitlines()
    assert table == [
        "POD       WANTS   SERVES         AGENT      READY   PAUSED   LAST CHANGE",
        "qwen3-a   v2      0123456789ab   Ready      yes     -        in-memory 12ms 184kB",
        "qwen3-b   v2      v1             Applying   no      1m7s     -",
        "qwen3-c   v1      -              Failed     no      -        -",
        "qwen3-c: store unreachable",
    ]


def test_render_without_pods_has_no_table() -> None:
    assert "POD" not in render(summarize(DEPLOYMENT, [], NOW))
