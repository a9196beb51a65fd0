"""The HTTP eval probe: ask each canary engine (and each stable one, for a baseline) a question.

Every canary pod gets the same request (``spec.analysisTemplates[].provider.http``: method, path,
JSON body); the number at ``jsonPath`` in each answer is averaged into ``result``. With
``compareWithStable`` the stable pods answer the same request and their average is
``baseline``, so ``result <= baseline * 1.05`` judges the new weights against what serves today
on the same texts (the reference engine's POST /eval returns the mean token loss).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from deltaroll.api.modeldeployment import HttpProbe
from deltaroll.controllers.analysis.errors import MeasurementError


@dataclass(frozen=True)
class ProbeResult:
    """The canary's mean value and, when compared, the stable pods' mean."""

    result: float
    baseline: float | None


def extract_number(document: Any, json_path: str, where: str) -> float:
    """The single number at ``json_path`` in ``document``."""
    import jsonpath_ng
    from jsonpath_ng.exceptions import JsonPathParserError

    try:
        matches = [m.value for m in jsonpath_ng.parse(json_path).find(document)]
    except JsonPathParserError as exc:
        raise MeasurementError(f"jsonPath {json_path!r} is not valid JSONPath: {exc}") from None
    if (
        len(matches) != 1
        or isinstance(matches[0], bool)
        or not isinstance(matches[0], (int, float))
    ):
        raise MeasurementError(
            f"{where} answered without a single number at {json_path}: found {matches[:3]!r}"
        )
    return float(matches[0])


def ask(base_url: str, probe: HttpProbe) -> float:
    """One request to one engine; the number at the probe's jsonPath."""
    url = base_url.rstrip("/") + probe.path
    data = probe.body.encode() if probe.body is not None else None
    request = urllib.request.Request(url, data=data, method=probe.method)  # noqa: S310
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=probe.timeout_seconds) as reply:  # noqa: S310
            text = reply.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:300]
        raise MeasurementError(f"{probe.method} {url} answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MeasurementError(f"{probe.method} {url} failed: {reason}") from None
    try:
        document = json.loads(text)
    except ValueError:
        raise MeasurementError(
            f"{probe.method} {url} did not answer JSON: {text[:200]!r}"
        ) from None
    return extract_number(document, probe.json_path, f"{probe.method} {url}")


def measure(
    canary_urls: Sequence[str], stable_urls: Sequence[str], probe: HttpProbe
) -> ProbeResult:
    """Average over the canary engines, and over the stable ones when comparing."""
    if not canary_urls:
        raise MeasurementError("no canary pod serves the new version yet; nothing to probe")
    result = sum(ask(url, probe) for url in canary_urls) / len(canary_urls)
    baseline = None
    if probe.compare_with_stable and stable_urls:
        baseline = sum(ask(url, probe) for url in stable_urls) / len(stable_urls)
    return ProbeResult(result, baseline)
