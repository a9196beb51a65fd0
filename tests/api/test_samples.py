"""Every example is accepted as the API server would accept it; every invalid one is refused
for the reason written in it."""

from __future__ import annotations

from pathlib import Path

import celpy
import pytest
import yaml
from pydantic import ValidationError

from api.crd_check import REPO, all_errors, all_validations, openapi_schema
from deltaroll.api import ModelDelta, ModelDeployment

VALID = [REPO / "examples" / "modeldelta.yaml", REPO / "examples" / "modeldeployment.yaml"]
INVALID = sorted((REPO / "examples" / "invalid").glob("*.yaml"))
CEL_MESSAGES = {
    rule["message"]
    for kind in ("ModelDelta", "ModelDeployment")
    for rule in all_validations(openapi_schema(kind))
}
MODELS = {"ModelDelta": ModelDelta, "ModelDeployment": ModelDeployment}


def _documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _stated_reason(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("# Rejected with: "):
            return line.removeprefix("# Rejected with: ")
    raise AssertionError(f"{path.name} has no '# Rejected with: ...' line")


def test_there_are_samples() -> None:
    assert len(INVALID) >= 20
    for path in INVALID:
        assert "# Why it must be rejected: " in path.read_text(), path.name


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_sample_is_accepted(path: Path) -> None:
    (obj,) = _documents(path)
    assert all_errors(obj) == []
    assert all_errors(obj, old=obj) == []  # an update that changes nothing passes transition rules
    model = MODELS[obj["kind"]].model_validate(obj)
    assert model.spec.model_dump(mode="json", by_alias=True, exclude_unset=True) == obj["spec"]


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_sample_is_rejected_for_its_reason(path: Path) -> None:
    documents = _documents(path)
    old, new = (documents[0], documents[1]) if len(documents) == 2 else (None, documents[0])
    if old is not None:
        assert all_errors(old) == [], "the 'before' document must itself be valid"
    errors = all_errors(new, old)
    reason = _stated_reason(path)
    assert errors, f"{path.name} was accepted"
    assert all(reason in error for error in errors), errors


# Updates (two documents: before, after) break transition rules, which only the API server sees.
INVALID_OBJECTS = [path for path in INVALID if len(_documents(path)) == 1]


@pytest.mark.parametrize("path", INVALID_OBJECTS, ids=lambda p: p.name)
def test_models_refuse_invalid_samples_too(path: Path) -> None:
    """The pydantic models mirror the CRD's rules, so a controller never acts on a bad spec."""
    (obj,) = _documents(path)
    with pytest.raises(ValidationError) as caught:
        MODELS[obj["kind"]].model_validate(obj)
    reason = _stated_reason(path)
    if reason in CEL_MESSAGES:
        assert reason in str(caught.value)


def test_sample_analysis_conditions_are_cel_that_judges() -> None:
    """successCondition/failureCondition are CEL over `result` (and `baseline`)."""
    (obj,) = _documents(REPO / "examples" / "modeldeployment.yaml")
    judged = 0
    for template in obj["spec"]["analysisTemplates"]:
        for key in ("successCondition", "failureCondition"):
            if key in template:
                env = celpy.Environment()
                program = env.program(env.compile(template[key]))
                good = {"result": celpy.json_to_cel(0.001), "baseline": celpy.json_to_cel(2.0)}
                bad = {"result": celpy.json_to_cel(9.0), "baseline": celpy.json_to_cel(2.0)}
                expected = key == "successCondition"
                assert bool(program.evaluate(good)) is expected
                assert bool(program.evaluate(bad)) is not expected
                judged += 1
    assert judged >= 3
