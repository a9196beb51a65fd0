"""Judging one measured value with a template's CEL conditions, as Argo Rollouts does.

``failureCondition`` true fails the measurement; otherwise ``successCondition`` true makes it
successful. With only a successCondition, false is a failure; with only a failureCondition,
false is a success; with both and neither true, the measurement is Inconclusive.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from deltaroll.api.modeldeployment import MetricTemplate
from deltaroll.controllers.analysis.errors import ConditionError
from deltaroll.controllers.analysis.runs import Verdict


@cache
def _program(expression: str) -> Any:
    import celpy

    environment = celpy.Environment()
    try:
        return environment.program(environment.compile(expression))
    except celpy.CELParseError as exc:
        raise ConditionError(
            f"condition {expression!r} is not valid CEL: {exc}. Fix it in "
            "spec.analysisTemplates; it may use `result` and `baseline`"
        ) from None


def _holds(expression: str, result: float, baseline: float | None) -> bool:
    import celpy
    from celpy import celtypes

    activation: dict[str, Any] = {"result": celtypes.DoubleType(result)}
    if baseline is not None:
        activation["baseline"] = celtypes.DoubleType(baseline)
    try:
        value = _program(expression).evaluate(activation)
    except celpy.CELEvalError as exc:
        value = exc
    if isinstance(value, celpy.CELEvalError) or not isinstance(value, celtypes.BoolType):
        missing = (
            " (no stable pod to compare with)"
            if "baseline" in expression and (baseline is None)
            else ""
        )
        raise ConditionError(
            f"condition {expression!r} did not give true or false for result={result}"
            f"{missing}: {value}"
        )
    return bool(value)


def judge(template: MetricTemplate, result: float, baseline: float | None = None) -> Verdict:
    """Successful, Failed or Inconclusive for one value; :class:`ConditionError` if unjudgeable."""
    success, failure = template.success_condition, template.failure_condition
    if failure is not None and _holds(failure, result, baseline):
        return "Failed"
    if success is not None:
        if _holds(success, result, baseline):
            return "Successful"
        return "Inconclusive" if failure is not None else "Failed"
    return "Successful"
