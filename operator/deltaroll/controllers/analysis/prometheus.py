"""A Prometheus instant query (``GET /api/v1/query``) whose single value becomes ``result``.

``{{canaryVersion}}`` and ``{{stableVersion}}`` in the query are replaced first, so one template
can ask e.g. for the error rate of the pods serving the canary. A scalar, or a vector with
exactly one sample, is a measurement; an empty vector, several samples or NaN are errors (they
count against consecutiveErrorLimit) with a message that shows the query.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request

from deltaroll.api.modeldeployment import PrometheusQuery
from deltaroll.controllers.analysis.errors import MeasurementError


def render(query: str, *, canary: str, stable: str) -> str:
    """The query with the version placeholders replaced."""
    return query.replace("{{canaryVersion}}", canary).replace("{{stableVersion}}", stable)


def measure(spec: PrometheusQuery, *, canary: str, stable: str) -> float:
    """Run the instant query; the single number it returns."""
    query = render(spec.query, canary=canary, stable=stable)
    url = f"{spec.address.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    try:
        with urllib.request.urlopen(url, timeout=spec.timeout_seconds) as reply:  # noqa: S310
            body = json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        body = _json_or_none(exc.read())
        error = (body or {}).get("error") or exc.reason
        raise MeasurementError(f"Prometheus at {spec.address} refused {query!r}: {error}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MeasurementError(f"Prometheus at {spec.address} unreachable: {reason}") from None
    return _single_value(body, query)


def _json_or_none(raw: bytes) -> dict[str, object] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _single_value(body: dict[str, object], query: str) -> float:
    if body.get("status") != "success":
        raise MeasurementError(f"Prometheus query {query!r} failed: {body.get('error')}")
    data = body.get("data")
    if not isinstance(data, dict):
        raise MeasurementError(f"Prometheus query {query!r}: answer has no data")
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar" and isinstance(result, list):
        text = result[1]
    elif kind == "vector" and isinstance(result, list):
        if len(result) != 1:
            raise MeasurementError(
                f"Prometheus query {query!r} returned {len(result)} samples; it must return "
                "exactly one (aggregate it, e.g. with sum() or avg())"
            )
        text = result[0]["value"][1]
    else:
        raise MeasurementError(
            f"Prometheus query {query!r} returned a {kind}; it must return a scalar or a vector"
        )
    value = float(text)
    if math.isnan(value):
        raise MeasurementError(f"Prometheus query {query!r} returned NaN (no data in the range?)")
    return value
