"""The pods Table against pod objects: READY, STATUS and RESTARTS as kube-apiserver's printPod
(pkg/printers/internalversion/printers.go) computes them, native sidecars included."""

from __future__ import annotations

import datetime
from types import SimpleNamespace
from typing import Any

import pytest

from deltaroll_sandbox.apiserver import ages
from deltaroll_sandbox.apiserver.resources import ResourceType
from deltaroll_sandbox.apiserver.tables import table

PODS = ResourceType(group="", version="v1", plural="pods", kind="Pod", namespaced=True)
SIDECAR = {"name": "agent", "restartPolicy": "Always"}
RUNNING = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
WAITING = {"waiting": {"reason": "PodInitializing"}}


#: The bodies below are built when the module is collected; their ages are read as of then.
COLLECTED_AT = datetime.datetime.now(datetime.UTC).replace(microsecond=0)


class _Collected(datetime.datetime):
    @classmethod
    def now(cls, tz: datetime.tzinfo | None = None) -> _Collected:
        return cls.fromtimestamp(COLLECTED_AT.timestamp(), tz)


@pytest.fixture(autouse=True)
def _ages_as_of_collection(monkeypatch: pytest.MonkeyPatch) -> None:
    """A full run reaches these tests many minutes after collecting them."""
    monkeypatch.setattr(ages, "datetime", SimpleNamespace(datetime=_Collected, UTC=datetime.UTC))


def ago(seconds: int) -> str:
    """A timestamp ``seconds`` before the module was collected."""
    moment = COLLECTED_AT - datetime.timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def pod(
    *,
    init: list[dict[str, Any]] | None = None,
    init_statuses: list[dict[str, Any]] | None = None,
    statuses: list[dict[str, Any]] | None = None,
    phase: str = "Running",
    initialized: bool = True,
    ready: bool = True,
    deleting: bool = False,
) -> dict[str, Any]:
    conditions = [
        {"type": "Initialized", "status": str(initialized)},
        {"type": "Ready", "status": str(ready)},
    ]
    body: dict[str, Any] = {
        "metadata": {"name": "p", "creationTimestamp": ago(60)},
        "spec": {"containers": [{"name": "main"}], "initContainers": init or []},
        "status": {
            "phase": phase,
            "conditions": conditions,
            "initContainerStatuses": init_statuses or [],
            "containerStatuses": statuses or [],
        },
    }
    if deleting:
        body["metadata"]["deletionTimestamp"] = ago(0)
    return body


def status(name: str = "main", *, ready: bool = True, state: Any = None, **more: Any) -> dict:
    return {"name": name, "ready": ready, "restartCount": 0, "state": state or RUNNING, **more}


def initializing(init: list[dict[str, Any]], init_statuses: list[dict[str, Any]]) -> dict:
    """A pending pod whose init containers have not all started; its main one waits."""
    return pod(
        init=init,
        init_statuses=init_statuses,
        statuses=[status(state=WAITING, ready=False)],
        phase="Pending",
        initialized=False,
        ready=False,
    )


def cells(body: dict[str, Any]) -> list[Any]:
    """READY, STATUS, RESTARTS of the one row (NAME and AGE around them)."""
    shown = table(PODS, [body], 1, "None")
    names = [c["name"] for c in shown["columnDefinitions"]]
    row = dict(zip(names, shown["rows"][0]["cells"], strict=True))
    return [row["Ready"], row["Status"], row["Restarts"]]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(pod(statuses=[status()]), ["1/1", "Running", "0"], id="plain-ready"),
        pytest.param(
            pod(statuses=[status(ready=False)], ready=False),
            ["0/1", "Running", "0"],
            id="plain-not-ready",
        ),
        pytest.param(
            pod(
                init=[SIDECAR],
                init_statuses=[status("agent", started=True)],
                statuses=[status()],
            ),
            ["2/2", "Running", "0"],
            id="sidecar-ready",
        ),
        pytest.param(
            pod(
                init=[SIDECAR],
                init_statuses=[status("agent", ready=False, started=True)],
                statuses=[status()],
                ready=False,
            ),
            ["1/2", "Running", "0"],
            id="sidecar-started-not-ready",
        ),
        pytest.param(
            initializing([SIDECAR], [status("agent", ready=False, started=False)]),
            ["0/2", "Init:0/1", "0"],
            id="sidecar-not-started",
        ),
        pytest.param(
            initializing(
                [{"name": "fetch"}, SIDECAR],
                [
                    status(
                        "fetch",
                        ready=False,
                        state={"waiting": {"reason": "CrashLoopBackOff"}},
                        restartCount=3,
                        lastState={"terminated": {"exitCode": 1, "finishedAt": ago(30 * 60 + 5)}},
                    ),
                    status("agent", ready=False, state=WAITING),
                ],
            ),
            ["0/2", "Init:CrashLoopBackOff", "3 (30m ago)"],
            id="init-container-crashing",
        ),
        pytest.param(
            pod(
                init=[{"name": "fetch"}, SIDECAR],
                init_statuses=[
                    status("fetch", ready=False, state={"terminated": {"exitCode": 0}}),
                    status(
                        "agent",
                        started=True,
                        restartCount=1,
                        lastState={"terminated": {"exitCode": 2, "finishedAt": ago(40 * 60 + 5)}},
                    ),
                ],
                statuses=[
                    status(
                        restartCount=2,
                        lastState={"terminated": {"exitCode": 1, "finishedAt": ago(20 * 60 + 5)}},
                    )
                ],
            ),
            ["2/2", "Running", "3 (20m ago)"],
            id="restarts-of-sidecar-and-main",
        ),
        pytest.param(
            pod(
                init=[SIDECAR],
                init_statuses=[status("agent", started=True)],
                statuses=[
                    status(
                        ready=False, state={"terminated": {"exitCode": 0, "reason": "Completed"}}
                    )
                ],
                phase="Succeeded",
                ready=False,
            ),
            ["1/2", "Completed", "0"],
            id="main-exited-sidecar-running",
        ),
        pytest.param(
            pod(statuses=[status()], deleting=True), ["1/1", "Terminating", "0"], id="terminating"
        ),
    ],
)
def test_pod_row_follows_print_pod(body: dict[str, Any], expected: list[Any]) -> None:
    assert cells(body) == expected


def test_restarts_is_a_string_column() -> None:
    """kube-apiserver types RESTARTS as a string: it may carry "(5m ago)"."""
    columns = {c["name"]: c["type"] for c in table(PODS, [], 1, "None")["columnDefinitions"]}
    assert columns["Restarts"] == "string"
