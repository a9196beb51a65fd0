"""The API server's object semantics, through the official client and raw HTTPS."""

from __future__ import annotations

import json

import kubernetes
import pytest
from kubernetes.client import ApiException
from sandbox_helpers import WIDGETS, widget


def test_metadata_is_the_servers(core, custom, widgets_crd):
    cm = core.create_namespaced_config_map(
        "default", {"metadata": {"name": "a", "uid": "forged"}, "data": {"k": "v"}}
    )
    w = custom.create_namespaced_custom_object(
        *WIDGETS[:2], "default", WIDGETS[2], widget("w", size=1)
    )
    assert cm.metadata.uid != "forged" and len(cm.metadata.uid) == 36
    assert cm.metadata.creation_timestamp is not None
    # One counter for the whole server: versions of different kinds keep increasing.
    assert int(w["metadata"]["resourceVersion"]) > int(cm.metadata.resource_version)
    assert w["metadata"]["generation"] == 1


def test_generation_bumps_on_spec_changes_only(custom, widgets_crd):
    args = (*WIDGETS[:2], "default", WIDGETS[2], "w")
    custom.create_namespaced_custom_object(*WIDGETS[:2], "default", WIDGETS[2], widget("w", size=1))
    labelled = custom.patch_namespaced_custom_object(*args, {"metadata": {"labels": {"a": "b"}}})
    assert labelled["metadata"]["generation"] == 1
    statused = custom.patch_namespaced_custom_object_status(*args, {"status": {"phase": "Ok"}})
    assert statused["metadata"]["generation"] == 1
    assert int(statused["metadata"]["resourceVersion"]) > int(
        labelled["metadata"]["resourceVersion"]
    )
    resized = custom.patch_namespaced_custom_object(*args, {"spec": {"size": 2}})
    assert resized["metadata"]["generation"] == 2


def test_create_answers_201_and_duplicates_409(http, core):
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dup"}}
    assert http("POST", "/api/v1/namespaces/default/configmaps", json=body).status_code == 201
    again = http("POST", "/api/v1/namespaces/default/configmaps", json=body)
    assert again.status_code == 409
    assert again.json()["reason"] == "AlreadyExists"
    # The official client returns the object (it returns None on a 200).
    assert (
        core.create_namespaced_config_map("default", {"metadata": {"name": "other"}}).metadata.name
        == "other"
    )


def test_generate_name(core):
    made = core.create_namespaced_config_map("default", {"metadata": {"generateName": "gen-"}})
    assert made.metadata.name.startswith("gen-") and len(made.metadata.name) == len("gen-") + 5


def test_put_replaces_and_honours_resource_version(core):
    cm = core.create_namespaced_config_map(
        "default", {"metadata": {"name": "c"}, "data": {"a": "1"}}
    )
    cm.data = {"b": "2"}
    replaced = core.replace_namespaced_config_map("c", "default", cm)
    assert replaced.data == {"b": "2"}
    cm.data = {"c": "3"}  # still carries the old resourceVersion
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("c", "default", cm)
    assert err.value.status == 409


def test_json_patch_test_failure_is_422(http, core):
    core.create_namespaced_config_map("default", {"metadata": {"name": "c"}})
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "1"},
        {"op": "add", "path": "/metadata/finalizers", "value": ["x"]},
    ]
    response = http(
        "PATCH",
        "/api/v1/namespaces/default/configmaps/c",
        json=ops,
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert response.status_code == 422
    assert core.read_namespaced_config_map("c", "default").metadata.finalizers is None


def test_merge_and_strategic_patches(http, core):
    pod = {
        "metadata": {"name": "p", "labels": {"keep": "1", "drop": "1"}},
        "spec": {
            "containers": [
                {"name": "a", "image": "one", "command": ["sleep", "100"]},
                {"name": "b", "image": "two", "command": ["sleep", "100"]},
            ]
        },
    }
    kubernetes.client.CoreV1Api  # noqa: B018 - the official client sends strategic patches by default
    core.create_namespaced_pod("default", pod)
    # Strategic: containers merge by name, so "b" survives an image change of "a".
    patched = core.patch_namespaced_pod(
        "p", "default", {"spec": {"containers": [{"name": "a", "image": "three"}]}}
    )
    assert [(c.name, c.image) for c in patched.spec.containers] == [("a", "three"), ("b", "two")]
    merged = http(
        "PATCH",
        "/api/v1/namespaces/default/pods/p",
        json={"metadata": {"labels": {"drop": None}}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert merged.status_code == 200
    assert merged.json()["metadata"]["labels"] == {"keep": "1"}
    forbidden = http(
        "PATCH",
        "/api/v1/namespaces/default/pods/p",
        json={"spec": {"restartPolicy": "Never"}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert forbidden.status_code == 422  # pod specs are immutable (but images)


def test_label_and_field_selectors(core):
    for name, labels in (
        ("a", {"app": "x", "tier": "web"}),
        ("b", {"app": "x"}),
        ("c", {"app": "y"}),
    ):
        core.create_namespaced_config_map("default", {"metadata": {"name": name, "labels": labels}})
    core.create_namespace({"metadata": {"name": "other"}})
    core.create_namespaced_config_map("other", {"metadata": {"name": "a", "labels": {"app": "x"}}})

    def names(**kwargs):
        return sorted(
            f"{i.metadata.namespace}/{i.metadata.name}"
            for i in core.list_config_map_for_all_namespaces(**kwargs).items
        )

    assert names(label_selector="app=x") == ["default/a", "default/b", "other/a"]
    assert names(label_selector="app in (x,y),!tier") == ["default/b", "default/c", "other/a"]
    assert names(label_selector="app!=x") == ["default/c"]
    assert names(field_selector="metadata.name=a") == ["default/a", "other/a"]
    assert names(field_selector="metadata.namespace=other") == ["other/a"]
    assert names(field_selector="metadata.name!=a", label_selector="app=x") == ["default/b"]


def test_lists_carry_kind_and_resource_version(http):
    body = http("GET", "/api/v1/namespaces/default/pods").json()
    assert body["kind"] == "PodList" and body["apiVersion"] == "v1"
    assert int(body["metadata"]["resourceVersion"]) > 0


def test_namespaces(core, http):
    assert {"default", "kube-system"} <= {n.metadata.name for n in core.list_namespace().items}
    assert http("GET", "/api/v1/namespaces/default").json()["status"]["phase"] == "Active"
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("nowhere", {"metadata": {"name": "x"}})
    assert err.value.status == 404
    core.create_namespace({"metadata": {"name": "gone"}})
    core.create_namespaced_config_map("gone", {"metadata": {"name": "x"}})
    core.delete_namespace("gone")
    assert core.list_namespaced_config_map("gone").items == []


def test_status_subresource(custom, widgets_crd):
    args = (*WIDGETS[:2], "default", WIDGETS[2], "w")
    custom.create_namespaced_custom_object(
        *WIDGETS[:2], "default", WIDGETS[2], {**widget("w", size=1), "status": {"phase": "forged"}}
    )
    assert "status" not in custom.get_namespaced_custom_object(
        *args
    )  # status is not written on create
    # A write to the main resource ignores status; a write to /status changes only status.
    main = custom.patch_namespaced_custom_object(
        *args, {"spec": {"size": 2}, "status": {"phase": "main"}}
    )
    assert "status" not in main and main["spec"]["size"] == 2
    status = custom.patch_namespaced_custom_object_status(
        *args, {"spec": {"size": 5}, "status": {"phase": "Ok"}}
    )
    assert status["status"] == {"phase": "Ok"} and status["spec"]["size"] == 2
    assert status["metadata"]["generation"] == 2


def test_builtin_kinds_always_carry_a_status(http):
    """kube-apiserver serializes a typed object's empty status as ``{}``; clients read
    ``job.status.conditions`` on a Job no controller has touched yet."""
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "fresh"},
        "status": {"succeeded": 9},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "i", "command": ["true"]}],
                }
            }
        },
    }
    made = http("POST", "/apis/batch/v1/namespaces/default/jobs", json=job)
    assert made.status_code == 201
    assert made.json()["status"] == {}  # present, empty, and not the client's forged one
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "no-status"}}
    assert "status" not in http("POST", "/api/v1/namespaces/default/configmaps", json=cm).json()


def test_deletion_waits_for_finalizers(core):
    core.create_namespaced_config_map(
        "default", {"metadata": {"name": "f", "finalizers": ["example.com/x"]}}
    )
    core.delete_namespaced_config_map("f", "default")
    held = core.read_namespaced_config_map("f", "default")
    assert held.metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map("f", "default", {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("f", "default")
    assert err.value.status == 404


def _owned(name, owner, **meta):
    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": owner.metadata.name,
        "uid": owner.metadata.uid,
        "blockOwnerDeletion": True,
    }
    return {"metadata": {"name": name, "ownerReferences": [ref], **meta}}


@pytest.mark.parametrize("policy", ["Background", "Foreground", "Orphan"])
def test_owner_reference_garbage_collection(core, policy):
    owner = core.create_namespaced_config_map("default", {"metadata": {"name": "owner"}})
    child = core.create_namespaced_config_map("default", _owned("child", owner))
    core.create_namespaced_config_map(
        "default", _owned("grandchild", child, finalizers=["example.com/hold"])
    )
    core.delete_namespaced_config_map("owner", "default", propagation_policy=policy)
    left = {c.metadata.name: c for c in core.list_namespaced_config_map("default").items}
    if policy == "Orphan":
        assert "owner" not in left and left["child"].metadata.owner_references is None
        return
    # The grandchild's finalizer holds it, and in foreground the whole chain waits for it.
    assert left["grandchild"].metadata.deletion_timestamp is not None
    if policy == "Foreground":
        assert {"owner", "child"} <= set(left)
        assert "foregroundDeletion" in left["owner"].metadata.finalizers
    else:
        assert "owner" not in left and "child" not in left
    core.patch_namespaced_config_map("grandchild", "default", {"metadata": {"finalizers": None}})
    assert core.list_namespaced_config_map("default").items == []


def test_label_syntax_is_validated(core):
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(
            "default", {"metadata": {"name": "l", "labels": {"app": "not valid!"}}}
        )
    assert err.value.status == 422
    assert json.loads(err.value.body)["details"]["causes"][0]["field"] == "metadata.labels.app"


def test_deletion_with_finalizers_bumps_generation(custom, widgets_crd):
    args = (*WIDGETS[:2], "default", WIDGETS[2], "w")
    body = widget("w", size=1)
    body["metadata"]["finalizers"] = ["example.com/hold"]
    custom.create_namespaced_custom_object(*WIDGETS[:2], "default", WIDGETS[2], body)
    custom.delete_namespaced_custom_object(*args)
    held = custom.get_namespaced_custom_object(*args)
    assert held["metadata"]["deletionTimestamp"] and held["metadata"]["generation"] == 2
    with pytest.raises(ApiException) as err:  # no new finalizers on an object being deleted
        custom.patch_namespaced_custom_object(
            *args, {"metadata": {"finalizers": ["example.com/hold", "x/y"]}}
        )
    assert err.value.status == 422


def test_bodies_up_to_three_mebibytes(core):
    big = "x" * (2 * 1024 * 1024)  # over aiohttp's default limit, under kube-apiserver's
    made = core.create_namespaced_config_map(
        "default", {"metadata": {"name": "big"}, "data": {"blob": big}}
    )
    assert len(made.data["blob"]) == len(big)
