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
