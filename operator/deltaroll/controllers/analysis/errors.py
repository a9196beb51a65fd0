"""Named errors of canary analysis."""

from __future__ import annotations

from deltaroll.errors import DeltarollError


class MeasurementError(DeltarollError):
    """A measurement could not be taken (engine or Prometheus unreachable, no number found).

    It counts against the template's consecutiveErrorLimit; the message names the endpoint.
    """


class ConditionError(DeltarollError):
    """A successCondition or failureCondition is not valid CEL, or did not give a boolean.

    Fix the expression in spec.analysisTemplates; it may use ``result`` and ``baseline``.
    """
