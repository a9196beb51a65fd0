"""Flux's judgement of one object by a Kustomization's healthCheckExprs, run with cel-python.

Follows fluxcd/pkg runtime/cel (StatusEvaluator.Evaluate, RFC 0009), which kustomize-controller
uses for ``wait: true``:

1. ``status.observedGeneration`` present and different from ``metadata.generation``: InProgress,
   before any expression runs;
2. then ``inProgress``, ``failed``, ``current`` in that order: the first that is true wins;
3. none true: InProgress.

An expression that fails to evaluate (a missing key, a non-boolean) makes the evaluator return
an error, which kstatus turns into Unknown: Flux polls again and, if the error lasts, times out.
The expressions see the object's top-level fields as variables. cel-go errors on a missing one
even inside ``has()`` ("no such attribute(s)"), where cel-python answers false, so that case is
reported here as Unknown without asking cel-python.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import celpy
from celpy import json_to_cel

ORDER = ("inProgress", "failed", "current")


def flux_status(check: Mapping[str, str], obj: Mapping[str, Any]) -> str:
    """InProgress, Failed, Current or Unknown, as Flux's CEL status evaluator decides."""
    status, metadata = obj.get("status"), obj.get("metadata") or {}
    observed = status.get("observedGeneration") if isinstance(status, Mapping) else None
    if observed is not None and observed != metadata.get("generation"):
        return "InProgress"
    env = celpy.Environment()
    activation = {key: json_to_cel(value) for key, value in obj.items()}
    for name in ORDER:
        expression = check.get(name)
        if not expression:
            continue
        if any(re.search(rf"\b{var}\.", expression) for var in _absent(obj)):
            return "Unknown"
        try:
            result = env.program(env.compile(expression)).evaluate(activation)
        except celpy.CELEvalError:
            return "Unknown"
        if not isinstance(result, celpy.celtypes.BoolType):
            return "Unknown"
        if result:
            return name[0].upper() + name[1:]
    return "InProgress"


def _absent(obj: Mapping[str, Any]) -> list[str]:
    return [key for key in ("metadata", "spec", "status") if key not in obj]
