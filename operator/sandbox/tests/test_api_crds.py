"""CustomResourceDefinitions: registration, schemas (defaults, pruning, 422s), OpenAPI."""

from __future__ import annotations

import json

import pytest
from kubernetes.client import ApiException
from sandbox_helpers import WIDGETS, widget


def _create(custom, body, version="v1"):
    return custom.create_namespaced_custom_object(WIDGETS[0], version, "default", WIDGETS[2], body)


def test_creating_a_crd_serves_its_resource(http, api, widgets_crd):
    crd = http(
        "GET",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.sandbox.deltaroll.dev",
    ).json()
    assert {c["type"]: c["status"] for c in crd["status"]["conditions"]}["Established"] == "True"
    resources = http("GET", "/apis/sandbox.deltaroll.dev/v1").json()["resources"]
    assert {r["name"] for r in resources} == {"widgets", "widgets/status"}
    assert (
        http("GET", "/apis/sandbox.deltaroll.dev/v1/namespaces/default/widgets").json()["kind"]
        == "WidgetList"
    )


def test_defaults_and_pruning(custom, widgets_crd):
    made = _create(
        custom, {**widget("w", size=2, unknown="x", extra={"free": {"form": 1}}), "junk": 1}
    )
    assert made["spec"] == {
        "size": 2,
        "maxSize": 10,
        "color": "green",
        "extra": {"free": {"form": 1}},
    }
    assert "junk" not in made


@pytest.mark.parametrize(
    ("spec", "field", "text"),
    [
        ({"size": "big"}, "spec.size", "must be of type integer"),
        ({"size": 0}, "spec.size", "greater than or equal to 1"),
        ({"size": 1, "color": "pink"}, "spec.color", 'should be one of "red", "green", "blue"'),
        ({}, "spec.size", "Required value"),
        ({"size": 11}, "spec", "size must not exceed maxSize"),  # the CEL rule
        ({"size": 1, "labels": {"a": 1}}, "spec.labels.a", "must be of type string"),
    ],
)
def test_invalid_objects_answer_422_with_the_field(custom, widgets_crd, spec, field, text):
    with pytest.raises(ApiException) as err:
        _create(custom, widget("w", **spec))
    assert err.value.status == 422
    body = json.loads(err.value.body)
    assert body["reason"] == "Invalid"
    assert any(c["field"] == field and text in c["message"] for c in body["details"]["causes"]), (
        body
    )


def test_versions_share_objects(custom, widgets_crd):
    _create(custom, widget("w", size=1))
    seen = custom.get_namespaced_custom_object(WIDGETS[0], "v1beta1", "default", WIDGETS[2], "w")
    assert seen["apiVersion"] == "sandbox.deltaroll.dev/v1beta1" and seen["spec"]["size"] == 1


def test_deleting_the_crd_removes_resource_and_objects(http, api, custom, widgets_crd):
    _create(custom, widget("w", size=1))
    http(
        "DELETE",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.sandbox.deltaroll.dev",
    )
    assert (
        http("GET", "/apis/sandbox.deltaroll.dev/v1/namespaces/default/widgets").status_code == 404
    )


def test_openapi_v3_documents(http, widgets_crd):
    index = http("GET", "/openapi/v3").json()["paths"]
    assert {"api/v1", "apis/batch/v1", "apis/sandbox.deltaroll.dev/v1"} <= set(index)
    doc = http("GET", index["apis/sandbox.deltaroll.dev/v1"]["serverRelativeURL"]).json()
    patch = doc["paths"]["/apis/sandbox.deltaroll.dev/v1/namespaces/{namespace}/widgets/{name}"][
        "patch"
    ]
    assert patch["x-kubernetes-group-version-kind"]["kind"] == "Widget"
    assert "fieldValidation" in {p["name"] for p in patch["parameters"]}
    schema = doc["components"]["schemas"]["dev.deltaroll.sandbox.v1.Widget"]
    assert schema["properties"]["spec"]["required"] == ["size"]
