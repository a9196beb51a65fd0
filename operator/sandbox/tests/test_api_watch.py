"""Watches: resourceVersion semantics, 410 Gone, timeoutSeconds, bookmarks, selectors."""

from __future__ import annotations

import json

import kubernetes
import requests

from deltaroll_sandbox import kubeconfig
from deltaroll_sandbox.testing import running_sandbox

ADMIN = {"Authorization": f"Bearer {kubeconfig.TOKEN}"}


def _events(http, path, **params):
    response = http("GET", path, params={"watch": "true", **params}, stream=True)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json;stream=watch"
    return response, (json.loads(line) for line in response.iter_lines() if line)


def test_watch_from_a_list_misses_nothing(core, http):
    core.create_namespaced_config_map("default", {"metadata": {"name": "before"}})
    listed = core.list_namespaced_config_map("default")
    core.create_namespaced_config_map("default", {"metadata": {"name": "between"}})
    core.delete_namespaced_config_map("before", "default")
    response, events = _events(
        http,
        "/api/v1/namespaces/default/configmaps",
        resourceVersion=listed.metadata.resource_version,
        timeoutSeconds="2",
    )
    seen = [(e["type"], e["object"]["metadata"]["name"]) for e in events]
    assert seen == [
        ("ADDED", "between"),
        ("DELETED", "before"),
    ]  # only what is newer, then the timeout ends it


def test_watch_without_version_starts_with_current_objects(core, http):
    core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    response, events = _events(http, "/api/v1/namespaces/default/configmaps", timeoutSeconds="1")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "a")]


def test_too_old_resource_version_is_410(tmp_path):
    with running_sandbox(tmp_path / "sb", history_limit=3) as sb, sb.api_client() as client:
        core = kubernetes.client.CoreV1Api(client)
        for index in range(5):
            core.create_namespaced_config_map("default", {"metadata": {"name": f"c{index}"}})
        ca = str(sb.directory / "pki" / "ca.crt")
        response = requests.get(
            f"{sb.api_url}/api/v1/namespaces/default/configmaps",
            params={"watch": "true", "resourceVersion": "1", "timeoutSeconds": "1"},
            verify=ca,
            headers=ADMIN,
            stream=True,
            timeout=30,
        )
        event = json.loads(next(line for line in response.iter_lines() if line))
        assert event["type"] == "ERROR" and event["object"]["code"] == 410
        # A version still in the history resumes fine.
        recent = core.list_namespaced_config_map("default").metadata.resource_version
        core.create_namespaced_config_map("default", {"metadata": {"name": "after"}})
        response = requests.get(
            f"{sb.api_url}/api/v1/namespaces/default/configmaps",
            params={"watch": "true", "resourceVersion": recent, "timeoutSeconds": "1"},
            verify=ca,
            headers=ADMIN,
            stream=True,
            timeout=30,
        )
        first = json.loads(next(line for line in response.iter_lines() if line))
        assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "after")


def test_initial_events_end_with_a_bookmark(core, http):
    core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    response, events = _events(
        http,
        "/api/v1/namespaces/default/configmaps",
        sendInitialEvents="true",
        allowWatchBookmarks="true",
        resourceVersionMatch="NotOlderThan",
        timeoutSeconds="1",
    )
    first, second = next(events), next(events)
    assert first["type"] == "ADDED"
    assert second["type"] == "BOOKMARK"
    assert second["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_selector_watch_sees_objects_enter_and_leave(core, http):
    core.create_namespaced_config_map(
        "default", {"metadata": {"name": "a", "labels": {"app": "x"}}}
    )
    start = core.list_namespaced_config_map("default").metadata.resource_version
    core.patch_namespaced_config_map("a", "default", {"metadata": {"labels": {"app": "y"}}})
    core.patch_namespaced_config_map("a", "default", {"metadata": {"labels": {"app": "x"}}})
    response, events = _events(
        http,
        "/api/v1/namespaces/default/configmaps",
        resourceVersion=start,
        labelSelector="app=x",
        timeoutSeconds="1",
    )
    assert [e["type"] for e in events] == ["DELETED", "ADDED"]


def test_official_client_watch(api, core):
    core.create_namespaced_config_map("default", {"metadata": {"name": "w"}})
    watch = kubernetes.watch.Watch()
    seen = []
    # the server's deadline covers the PATCH below too (a new TLS connection on a busy machine)
    for event in watch.stream(core.list_namespaced_config_map, "default", timeout_seconds=30):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 1:
            core.patch_namespaced_config_map("w", "default", {"data": {"k": "v"}})
        if len(seen) == 2:
            watch.stop()
    assert seen == [("ADDED", "w"), ("MODIFIED", "w")]
