"""ValidatingAdmissionPolicy evaluation as kube-apiserver does it, on requests built here (the
policy's wiring through a real sandbox is in test_access.py)."""

from __future__ import annotations

from typing import Any

from deltaroll_sandbox.apiserver import cel, policies
from deltaroll_sandbox.apiserver.resources import ResourceType

PODS = ResourceType(group="", version="v1", plural="pods", kind="Pod", namespaced=True)


def update(obj: dict[str, Any], old: dict[str, Any]) -> policies.Request:
    return policies.Request(PODS, "UPDATE", "", "default", "p", obj, old)


def pod(**annotations: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "annotations": annotations}, "spec": {}}


def test_a_false_match_condition_skips_the_policy_even_when_another_fails() -> None:
    spec = {
        "matchConditions": [
            {"name": "broken", "expression": "object.metadata.missing == 1"},
            {"name": "no", "expression": "false"},
        ],
        "validations": [{"expression": "false", "message": "refused"}],
    }
    assert policies.refusal(spec, update(pod(), pod())) is None
    spec["matchConditions"][1]["expression"] = "true"  # none false, one failed: the policy fails
    refused = policies.refusal(spec, update(pod(), pod()))
    assert refused is not None and refused[0].startswith("failed to evaluate match conditions")
    assert policies.refusal({**spec, "failurePolicy": "Ignore"}, update(pod(), pod())) is None


def test_a_message_expression_that_is_not_a_string_falls_back_to_the_message() -> None:
    rule = {"expression": "false", "message": "static", "messageExpression": "object.metadata"}
    assert policies.refusal({"validations": [rule]}, update(pod(), pod())) == ("static", "Invalid")
    rule["messageExpression"] = "'named ' + object.metadata.name"
    assert policies.refusal({"validations": [rule]}, update(pod(), pod())) == ("named p", "Invalid")


def test_a_deep_object_with_a_huge_integer_is_refused_with_a_short_message() -> None:
    """cel-cpp's error for an integer it cannot hold spells out every value around it: a deep
    object made the API server build a message of 81 MB for 30 s, sent back in the 422."""
    value: Any = 2**64
    for level in range(50):
        value = {f"k{level}": value, "pad": "x" * 100}
    spec = {"validations": [{"expression": "object.spec == oldObject.spec"}]}
    refused = policies.refusal(spec, update({**pod(), "spec": value}, pod()))
    assert refused is not None and "outside int64" in refused[0]
    assert len(refused[0]) < cel.MESSAGE_LIMIT
