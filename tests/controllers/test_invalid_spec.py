"""A ModelDeployment whose spec stops parsing is reported broken to kstatus, not left Ready."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from controllers.rollout_world import World, canary, make_spec
from deltaroll.api.conditions import find_condition
from deltaroll.api.modeldeployment import ModelDeploymentStatus
from deltaroll.controllers.modeldeployment import handlers, writes
from deltaroll.controllers.modeldeployment.planner import invalid_spec_status

T1 = "2026-01-01T12:00:30Z"


@pytest.fixture
def stored(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A Healthy ModelDeployment whose generation 2 has lost spec.model; status patches merge
    into its status as the API server would, and Warning Events are recorded."""
    healthy = World.on("v1", 2, make_spec(version="v1")).until("Healthy").status
    assert find_condition(healthy.conditions, "Ready").status == "True"  # type: ignore[union-attr]
    spec = make_spec(version="v2").to_wire()
    del spec["model"]
    body: dict[str, Any] = {
        "apiVersion": "deltaroll.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"namespace": "ml", "name": "qwen3", "generation": 2},
        "spec": spec,
        "status": healthy.to_wire(),
    }
    warnings: list[str] = []

    def patch_status(namespace: str, name: str, status: dict[str, Any]) -> None:
        body["status"] = {**body["status"], **status}

    monkeypatch.setattr(writes, "get_modeldeployment", lambda namespace, name: body)
    monkeypatch.setattr(writes, "patch_status", patch_status)
    monkeypatch.setattr(kopf, "warn", lambda obj, reason, message: warnings.append(reason))
    return {"body": body, "warnings": warnings}


def test_an_invalid_spec_sets_ready_false_and_stalled_true(stored: dict[str, Any]) -> None:
    assert handlers.reconcile("ml", "qwen3") is None
    status = ModelDeploymentStatus.model_validate(stored["body"]["status"])
    assert (status.phase, status.observed_generation) == ("Degraded", 2)
    assert status.message is not None and "spec.model: Field required" in status.message
    expected = {"Ready": "False", "Stalled": "True", "Degraded": "True", "Reconciling": "False"}
    for type_, value in expected.items():
        condition = find_condition(status.conditions, type_)
        assert condition is not None, type_
        assert (condition.status, condition.reason) == (value, "InvalidSpec"), type_
        assert condition.observed_generation == 2
        assert "spec.model: Field required" in condition.message
    assert status.stable_version == "v1"  # kept for when the spec is fixed
    assert stored["warnings"] == ["InvalidSpec"]


def test_an_invalid_spec_is_reported_once(stored: dict[str, Any]) -> None:
    stored["body"]["status"]["writtenByAnOlderOperator"] = 1  # kept by merge patches
    handlers.reconcile("ml", "qwen3")
    written = dict(stored["body"]["status"])
    handlers.reconcile("ml", "qwen3")
    assert stored["body"]["status"] == written
    assert stored["warnings"] == ["InvalidSpec"]


def invalid_then_fixed(world: World) -> ModelDeploymentStatus:
    """The World's status after generation 2 failed to parse and generation 3 fixed it."""
    assert world.status is not None
    world.status = invalid_spec_status(world.status.to_wire(), 2, "spec.model: missing", T1)
    world.generation = 3
    status = world.tick().status
    assert find_condition(status.conditions, "Stalled") is not None
    return status


def test_a_fixed_spec_is_healthy_again() -> None:
    world = World.on("v1", 2, make_spec(version="v1"))
    world.until("Healthy")
    status = invalid_then_fixed(world)
    ready, stalled = (find_condition(status.conditions, t) for t in ("Ready", "Stalled"))
    assert status.phase == "Healthy"
    assert (ready and ready.status, stalled and stalled.status) == ("True", "False")


def test_an_aborted_rollout_says_why_again_once_the_spec_parses() -> None:
    world = World.on("v1", 2, make_spec(strategy=canary({"setWeight": 50}, {"pause": {}})))
    world.until("Paused")
    world.annotations["deltaroll.dev/abort"] = "true"
    world.tick()
    status = invalid_then_fixed(world)
    degraded = find_condition(status.conditions, "Degraded")
    assert (status.phase, degraded and degraded.reason) == ("Degraded", "Aborted")
