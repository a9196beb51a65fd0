"""An event that shows an object as the last finished reconcile read it starts no reconcile;
any change in what a reconcile reads does (news.LastRead, pods.read_state)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from deltaroll.api.annotations import KOPF_PREFIX, POD_AGENT_STATE, PROMOTE
from deltaroll.controllers.modeldeployment.news import LastRead, deployment_state
from deltaroll.controllers.modeldeployment.pods import read_state

KEY = ("team", "chat")
DEPLOYMENT: dict[str, Any] = {
    "metadata": {"name": "chat", "namespace": "team", "generation": 3, "annotations": {}},
    "spec": {"version": "v2"},
    "status": {"phase": "Healthy"},
}
POD: dict[str, Any] = {
    "metadata": {"name": "chat-0", "labels": {"app": "chat"}, "annotations": {}},
    "spec": {"containers": [{"name": "engine"}]},
    "status": {"podIP": "10.0.0.7", "conditions": [{"type": "Ready", "status": "True"}]},
}


def _read() -> LastRead:
    last = LastRead()
    last.record(KEY, DEPLOYMENT, [POD])
    return last


def _changed(body: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(body)
    node = changed
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return changed


def test_objects_as_read_are_no_news_and_nothing_is_read_before_a_reconcile_finished() -> None:
    last = _read()
    assert last.already_read(KEY, (None, deployment_state(DEPLOYMENT)))
    assert last.already_read(KEY, ("chat-0", read_state(POD)))
    assert not last.already_read(KEY, ("chat-1", read_state(POD)))  # a pod it did not list
    assert not last.already_read(("team", "other"), (None, deployment_state(DEPLOYMENT)))
    last.forget(KEY)  # a reconcile started (or failed): everything is news again
    assert not last.already_read(KEY, (None, deployment_state(DEPLOYMENT)))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("metadata", "generation"), 4),  # spec changed
        (("metadata", "annotations"), {PROMOTE: "step"}),  # kubectl deltaroll promote
        (("metadata", "labels"), {"team": "b"}),
        (("metadata", "deletionTimestamp"), "2026-01-01T00:00:00Z"),
    ],
)
def test_a_deployment_change_a_reconcile_reads_is_news(path: tuple[str, ...], value: Any) -> None:
    changed = _changed(DEPLOYMENT, path, value)
    assert not _read().already_read(KEY, (None, deployment_state(changed)))


def test_kopf_bookkeeping_and_the_status_are_no_news() -> None:
    kopf_patched = _changed(
        DEPLOYMENT, ("metadata", "annotations"), {f"{KOPF_PREFIX}/last-handled-configuration": "{}"}
    )
    status_written = _changed(DEPLOYMENT, ("status", "phase"), "Progressing")
    for body in (kopf_patched, status_written):
        assert _read().already_read(KEY, (None, deployment_state(body)))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("metadata", "annotations"), {POD_AGENT_STATE: "ready"}),  # its agent reports
        (("metadata", "labels"), {"app": "other"}),  # it leaves the selector
        (("metadata", "deletionTimestamp"), "2026-01-01T00:00:00Z"),
        (("status", "conditions"), [{"type": "Ready", "status": "False"}]),
        (("status", "podIP"), "10.0.0.8"),
    ],
)
def test_a_pod_change_a_reconcile_reads_is_news(path: tuple[str, ...], value: Any) -> None:
    changed = _changed(POD, path, value)
    assert not _read().already_read(KEY, ("chat-0", read_state(changed)))


def test_a_pod_as_listed_and_as_watched_reads_alike() -> None:
    # The client's list (models turned back into dicts) drops empty fields the watch keeps.
    watched = _changed(POD, ("status", "hostIP"), None)
    watched["metadata"]["resourceVersion"] = "812"
    assert read_state(watched) == read_state(POD)
