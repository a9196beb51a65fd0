"""A rollout step patches its pods at once, not one round trip after another."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from deltaroll.controllers.modeldeployment import writes


class _PodsApi:
    """The one call annotate_pod makes, recording what was patched and how many at once."""

    def __init__(self, fail: frozenset[str] = frozenset(), meet: int = 0) -> None:
        self.patched: dict[str, Any] = {}
        self.fail = fail
        self.together = threading.Barrier(meet) if meet else None
        self.lock = threading.Lock()

    def patch_namespaced_pod(self, name: str, namespace: str, body: Any) -> None:
        if self.together is not None:
            self.together.wait(timeout=10)  # BrokenBarrierError if patches go one by one
        if name in self.fail:
            raise ApiException(status=500, reason="boom")
        with self.lock:
            self.patched[name] = (namespace, body)


def _patches(count: int) -> dict[str, dict[str, str | None]]:
    return {f"pod-{i:02d}": {"deltaroll.dev/version": "v2"} for i in range(count)}


def test_the_pods_of_a_step_are_patched_together(monkeypatch: pytest.MonkeyPatch) -> None:
    api = _PodsApi(meet=writes.POD_PATCHES_IN_FLIGHT)
    monkeypatch.setattr(writes, "core_api", lambda: api)
    writes.annotate_pods("tenant", _patches(2 * writes.POD_PATCHES_IN_FLIGHT))
    assert sorted(api.patched) == sorted(_patches(2 * writes.POD_PATCHES_IN_FLIGHT))
    assert api.patched["pod-00"] == (
        "tenant",
        {"metadata": {"annotations": {"deltaroll.dev/version": "v2"}}},
    )


def test_a_failed_patch_is_raised_after_every_other_pod_was_tried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = _PodsApi(fail=frozenset({"pod-03"}))
    monkeypatch.setattr(writes, "core_api", lambda: api)
    with pytest.raises(ApiException, match="boom"):
        writes.annotate_pods("tenant", _patches(12))
    assert len(api.patched) == 11 and "pod-03" not in api.patched


def test_a_rollout_names_the_same_few_seeders_to_every_pod_it_moves_to_a_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Agents that list the pods while the operator is still patching the others each saw
    themselves first among the few told so far and fetched the version's objects too: the
    operator names, with the version, the pods its objects' seeders are ranked among: every
    pod told that version that does not hold it yet, this round's and earlier ones'."""
    from datetime import UTC, datetime

    from deltaroll.api.annotations import POD_SEED_AMONG, POD_VERSION
    from deltaroll.api.modeldeployment import ModelDeploymentStatus
    from deltaroll.api.peers import SEED_CANDIDATES, parse_seed_among
    from deltaroll.controllers.modeldeployment import handlers
    from deltaroll.controllers.modeldeployment.planner import Plan
    from deltaroll.controllers.modeldeployment.pods import (
        PodView,
        VersionAliases,
        seed_candidates,
    )

    pods = [PodView(f"new-{i:02d}", "v1", "v1") for i in range(12)]  # moved now
    pods += [PodView(f"late-{i}", "v2", "v1") for i in range(4)]  # told before, pulling
    pods += [PodView(f"done-{i}", "v2", "v2") for i in range(2)]  # hold it: never named
    pods += [PodView("back-0", "v2", "v2"), PodView("back-1", "v2", "v1")]  # moved to v1
    moved = {f"new-{i:02d}": "v2" for i in range(12)} | {"back-0": "v1", "back-1": "v1"}
    aliases = VersionAliases({})
    named = seed_candidates(pods, moved, aliases)
    v2 = parse_seed_among(named["v2"])
    assert len(v2) == SEED_CANDIDATES and set(v2) <= {p.name for p in pods[:16]}
    assert parse_seed_among(named["v1"]) == ("back-0",)  # back-1 holds v1
    # a pod moved on its own (new, or late to its turn) is ranked with the others, not alone
    alone = seed_candidates(pods[12:18] + [PodView("x", None, None)], {"x": "v2"}, aliases)
    assert set(parse_seed_among(alone["v2"])) == {"late-0", "late-1", "late-2", "late-3", "x"}

    patched: dict[str, Any] = {}
    monkeypatch.setattr(writes, "annotate_pods", lambda _ns, patches: patched.update(patches))
    monkeypatch.setattr(writes, "patch_status", lambda *_: None)
    outcome = Plan(ModelDeploymentStatus(), moved, (), (), seed_among=named)
    body = {"metadata": {"namespace": "tenant", "name": "llm"}, "status": {}}
    handlers._apply(body, outcome, datetime.now(UTC))
    assert {pod: a[POD_VERSION] for pod, a in patched.items()} == moved
    assert {pod: a[POD_SEED_AMONG] for pod, a in patched.items()} == {
        pod: named[version] for pod, version in moved.items()
    }  # in the patch that tells the version: an agent never reads one without the other
    # and the named pods are patched first: every other pod's pull waits for a seeder
    seeders_moved = {pod for value in named.values() for pod in parse_seed_among(value)} & set(
        moved
    )
    assert len(seeders_moved) > 1
    assert set(list(patched)[: len(seeders_moved)]) == seeders_moved
