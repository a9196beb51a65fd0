"""The pydantic models refuse what the CRD refuses where a controller relies on it: names and
URIs that reach a filesystem or a bucket key."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from deltaroll.api import (
    InvalidResourceError,
    ModelDeltaSpec,
    ModelDeployment,
    ModelDeploymentSpec,
)
from deltaroll.api.parse import parse_resource

BASE_DELTA = {
    "model": "qwen3",
    "store": {"uri": "s3://weights/deltaroll"},
    "source": {"checkpoint": {"uri": "s3://ckpt/qwen3/step-2"}},
}


def _delta(**changes) -> dict:
    return {**BASE_DELTA, **changes}


def test_defaults_and_snake_case_access() -> None:
    spec = ModelDeltaSpec.model_validate(_delta(parent="step-1"))
    assert spec.parent == "step-1"
    assert spec.deletion_policy == "Retain"
    assert spec.encoding.zstd_level == 3
    assert spec.job.parallelism == 1 and spec.job.backoff_limit == 2
    assert spec.source.checkpoint is not None and spec.source.trl_patch is None
    wire = spec.to_wire()
    assert wire["deletionPolicy"] == "Retain" and "trlPatch" not in wire["source"]


@pytest.mark.parametrize(
    "changes",
    [
        {"model": "../etc"},
        {"model": "a/b"},
        {"model": ".hidden"},
        {"parent": "step 1"},
        {"store": {"uri": "file:///mnt/weights/../../etc"}},
        {"store": {"uri": "s3://KEY:SECRET@bucket/prefix"}},
        {"store": {"uri": "http://example.com/bucket"}},
        {"source": {"checkpoint": {"uri": "s3://ckpt/../other"}}},
        {"job": {"resources": {"limits": {"nvidia.com/gpu": "one"}}}},
        {"job": {"parallelism": 0}},
        {"encoding": {"zstdLevel": 23}},
        {"deletionPolicy": "Orphan"},
        {"parnet": "step-1"},
    ],
)
def test_bad_delta_specs_are_refused(changes: dict) -> None:
    with pytest.raises(ValidationError):
        ModelDeltaSpec.model_validate(_delta(**changes))


@pytest.mark.parametrize(
    "uri", ["hf://buckets/acme/_scratch", "hf://buckets/-team/.cache/p", "hf://buckets/a/v1..v2"]
)
def test_every_hub_bucket_name_is_a_store(uri: str) -> None:
    assert ModelDeltaSpec.model_validate(_delta(store={"uri": uri})).store.uri == uri


BASE_DEPLOYMENT = {
    "model": "qwen3",
    "version": "step-2",
    "store": {"uri": "hf://buckets/my-org/weights/qwen3"},
    "selector": {"matchLabels": {"app": "qwen3"}},
    "engine": {"kind": "sglang", "port": 30000},
}


@pytest.mark.parametrize("value", [1, 3, "1%", "25%", "100%"])
def test_max_unavailable_accepts_numbers_and_percentages(value) -> None:
    spec = ModelDeploymentSpec.model_validate({**BASE_DEPLOYMENT, "maxUnavailable": value})
    assert spec.max_unavailable == value


@pytest.mark.parametrize("value", [0, -1, "0%", "101%", "25", "a%"])
def test_max_unavailable_refuses_nonsense(value) -> None:
    with pytest.raises(ValidationError, match="maxUnavailable"):
        ModelDeploymentSpec.model_validate({**BASE_DEPLOYMENT, "maxUnavailable": value})


def test_pause_durations() -> None:
    steps = [{"setWeight": 10}, {"pause": {"duration": "90s"}}, {"pause": {}}]
    spec = ModelDeploymentSpec.model_validate(
        {**BASE_DEPLOYMENT, "strategy": {"canary": {"steps": steps}}}
    )
    canary = spec.strategy.canary
    assert canary.steps[1].pause.duration == "90s" and canary.steps[2].pause.duration is None
    with pytest.raises(ValidationError):
        ModelDeploymentSpec.model_validate(
            {**BASE_DEPLOYMENT, "strategy": {"canary": {"steps": [{"pause": {"duration": "5"}}]}}}
        )


def test_parse_resource_names_the_object_and_the_fields() -> None:
    body = {
        "apiVersion": "deltaroll.dev/v1alpha1",
        "kind": "ModelDelta",
        "metadata": {"name": "bad", "namespace": "ml", "uid": "1234"},
        "spec": _delta(model="../etc", source={}),
    }
    with pytest.raises(InvalidResourceError) as caught:
        parse_resource(body)
    message = str(caught.value)
    assert message.startswith("ModelDelta ml/bad is invalid: spec.model: String should match")
    assert "spec.source: source needs exactly one of checkpoint or trlPatch" in message
    assert "kubectl explain modeldelta.spec" in message


def test_parse_resource_types_a_valid_body() -> None:
    body = {
        "kind": "ModelDeployment",
        "metadata": {"name": "ok"},
        "spec": BASE_DEPLOYMENT,
        "status": {"phase": "Healthy", "stableVersion": "step-2", "extraField": 1},
    }
    parsed = parse_resource(body)
    assert isinstance(parsed, ModelDeployment)
    assert parsed.spec.engine.kind == "sglang" and parsed.status.stable_version == "step-2"


def test_parse_resource_refuses_other_kinds() -> None:
    with pytest.raises(InvalidResourceError, match="not a Deltaroll resource"):
        parse_resource({"kind": "Pod", "metadata": {"name": "p"}, "spec": {}})


def test_http_probe_body_must_be_json() -> None:
    template = {
        "name": "eval-loss",
        "provider": {"http": {"body": '{"texts": ["a"'}},
        "successCondition": "result < 3.0",
    }
    with pytest.raises(ValidationError, match="body must be JSON"):
        ModelDeploymentSpec.model_validate({**BASE_DEPLOYMENT, "analysisTemplates": [template]})
    template["provider"]["http"]["body"] = '{"texts": ["a"]}'
    spec = ModelDeploymentSpec.model_validate({**BASE_DEPLOYMENT, "analysisTemplates": [template]})
    assert spec.analysis_templates[0].provider.http.json_path == "$.loss"


def test_volume_mount_path_cannot_climb_out() -> None:
    source = {
        "uri": "file:///mnt/ckpt/../../etc/x",
        "volume": {"claimName": "c", "mountPath": "/mnt/ckpt"},
    }
    with pytest.raises(ValidationError, match=r"'\.\.' path segments"):
        ModelDeltaSpec.model_validate(_delta(source={"checkpoint": source}))
    source = {"uri": "file:///mnt/x", "volume": {"claimName": "c", "mountPath": "/mnt/../x"}}
    with pytest.raises(ValidationError, match=r"'\.\.' path segments"):
        ModelDeltaSpec.model_validate(_delta(source={"checkpoint": source}))
    source = {
        "uri": "file:///mnt/ckpt-other/x",
        "volume": {"claimName": "c", "mountPath": "/mnt/ckpt"},
    }
    with pytest.raises(ValidationError, match="below volume.mountPath"):
        ModelDeltaSpec.model_validate(_delta(source={"checkpoint": source}))
    source = {
        "uri": "file:///mnt/ckpt/step-2",
        "volume": {"claimName": "c", "mountPath": "/mnt/ckpt"},
    }
    assert ModelDeltaSpec.model_validate(_delta(source={"checkpoint": source}))
