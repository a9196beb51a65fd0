"""The admin's policy, pure: what a namespace may ask for, what its Jobs get by default, and
which messages reach a tenant scrubbed."""

from __future__ import annotations

from typing import Any

import pytest

from deltaroll import redact
from deltaroll.api import ModelDelta, ModelDeployment
from deltaroll.api.conditions import set_condition
from deltaroll.api.policy import Policy, allowed
from deltaroll.controllers.admission import modeldelta_refusals, modeldeployment_refusals
from deltaroll.controllers.job_defaults import JobDefaults
from deltaroll.controllers.modeldelta.jobs import build_job
from deltaroll.redact import scrub

POLICY = Policy.model_validate(
    {
        "default": {
            "storePrefixes": ["s3://shared/"],
            "worker": {"resources": {"limits": {"memory": "8Gi"}}},
        },
        "namespaces": {
            "team-a": {
                "storePrefixes": ["s3://team-a/"],
                "worker": {"image": "acme/worker:2", "allowedImages": ["acme/worker-cuda:"]},
                "prometheusAddresses": ["http://prom.monitoring:9090/"],
            }
        },
    }
)


def delta(namespace: str, store: str, **job: Any) -> ModelDelta:
    return ModelDelta.model_validate(
        {
            "apiVersion": "deltaroll.dev/v1alpha1",
            "kind": "ModelDelta",
            "metadata": {"name": "v2", "namespace": namespace, "uid": "u-1", "generation": 1},
            "spec": {
                "model": "m",
                "store": {"uri": store},
                "source": {"checkpoint": {"uri": "s3://team-a/ckpt/v2"}},
                "parent": "v1",
                "job": job,
            },
        }
    )


def test_namespaces_override_the_default_field_by_field() -> None:
    team = POLICY.for_namespace("team-a")
    assert team.store_prefixes == ["s3://team-a/"]
    assert team.worker.image == "acme/worker:2"
    assert team.worker.resources == POLICY.default.worker.resources
    assert POLICY.for_namespace("team-b") == POLICY.default


@pytest.mark.parametrize(
    ("value", "patterns", "expected"),
    [
        ("s3://team-a", ["s3://team-a/"], True),
        ("s3://team-a/x/y", ["s3://team-a/"], True),
        ("s3://team-ab/x", ["s3://team-a/"], False),
        ("acme/worker-cuda:12", ["acme/worker-cuda:"], True),
        ("acme/worker-cuda-evil:1", ["acme/worker-cuda:"], False),
        ("acme/worker:2", ["acme/worker"], False),
        ("http://10.1.2.3:8000", ["http://10."], True),
    ],
)
def test_prefixes_end_at_a_boundary(value: str, patterns: list[str], expected: bool) -> None:
    assert allowed(value, patterns) is expected


def test_a_modeldelta_gets_one_sentence_per_field_it_may_not_use() -> None:
    refused = modeldelta_refusals(
        delta("team-a", "s3://team-b/m", image="evil:1", serviceAccountName="admin"),
        POLICY.for_namespace("team-a"),
        default_image="release/worker:1",
    )
    assert len(refused) == 3
    assert refused[0].startswith("spec.store.uri s3://team-b/m is not allowed")
    assert "allowed: s3://team-a/" in refused[0]
    assert "allowed: acme/worker:2, acme/worker-cuda:" in refused[1]
    assert refused[2].startswith("spec.job.serviceAccountName admin is not allowed")
    ok = delta("team-a", "s3://team-a/m", image="acme/worker-cuda:12")
    assert modeldelta_refusals(ok, POLICY.for_namespace("team-a"), default_image="x") == []


def test_a_modeldeployment_may_not_query_a_prometheus_the_admin_did_not_list() -> None:
    template = {
        "name": "errors",
        "provider": {"prometheus": {"address": "http://169.254.169.254", "query": "up"}},
        "successCondition": "result < 1",
    }
    deployment = ModelDeployment.model_validate(
        {
            "apiVersion": "deltaroll.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "d", "namespace": "team-a"},
            "spec": {
                "model": "m",
                "version": "v2",
                "store": {"uri": "s3://team-a/m"},
                "selector": {"matchLabels": {"app": "m"}},
                "engine": {"kind": "vllm", "port": 8000},
                "analysisTemplates": [template],
            },
        }
    )
    (refused,) = modeldeployment_refusals(
        deployment, POLICY.for_namespace("team-a"), default_image="x"
    )
    assert refused.startswith("spec.analysisTemplates[0].provider.prometheus.address")


def test_the_policy_fills_in_what_spec_job_leaves_unset() -> None:
    defaults = JobDefaults.of("worker", POLICY.for_namespace("team-a").worker, "release/worker:1")
    own = build_job(
        delta("team-a", "s3://team-a/m", resources={"limits": {"cpu": "4"}}), defaults=defaults
    )
    (container,) = own["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "acme/worker:2"
    assert container["resources"] == {"limits": {"memory": "8Gi", "cpu": "4"}}


def test_what_a_tenant_reads_is_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://s3.internal.corp:9000")
    monkeypatch.setattr(redact, "_hidden_endpoint_vars", ())
    assert "s3.internal.corp" in scrub("GET https://s3.internal.corp:9000/b/k failed")  # an agent
    redact.hide_environment_endpoints()  # what the operator and its Jobs do at start
    text = (
        "GET https://s3.internal.corp:9000/b/k failed; presigned "
        "https://b.s3.amazonaws.com/k?X-Amz-Signature=abc123&X-Amz-Credential=AKIA "
        "token from http://169.254.169.254/latest/api/token via https://user:pw@host/x"
    )
    (condition,) = set_condition(None, "Ready", "False", "StoreError", text)
    for shown in (scrub(text), condition.message):
        assert "s3.internal.corp" not in shown
        assert "abc123" not in shown and "AKIA" not in shown
        assert "169.254" not in shown
        assert "user:pw" not in shown


def test_a_file_store_cannot_leave_its_allowed_prefix_through_a_link(tmp_path: Any) -> None:
    """The prefix is checked on the path the store will open, not on the text (``..`` is
    refused by the API types already)."""
    (tmp_path / "team-a").mkdir()
    (tmp_path / "team-b").mkdir()
    (tmp_path / "team-a" / "link").symlink_to(tmp_path / "team-b")
    store = f"file://{tmp_path}/team-a/link/m"
    policy = Policy.model_validate(
        {"default": {"storePrefixes": [f"file://{tmp_path}/team-a/"]}}
    ).for_namespace("team-a")
    refused = modeldelta_refusals(delta("team-a", store), policy, default_image="x")
    assert refused and refused[0].startswith(f"spec.store.uri {store} is not allowed")
    inside = delta("team-a", f"file://{tmp_path}/team-a/m")
    kept = modeldelta_refusals(inside, policy, default_image="x")
    assert not [r for r in kept if r.startswith("spec.store.uri")]
