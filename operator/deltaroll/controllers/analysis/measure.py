"""One measurement of a metric template, whichever its provider; errors become Error verdicts.

The handler calls :func:`take` for every run whose measurement is due and folds the answer into
the run with :func:`~deltaroll.controllers.analysis.runs.record`. An analysis Job answers None
while it runs (the measurement is taken when it finishes), and so does an HTTP probe while no
canary pod serves the new version yet.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from deltaroll.api.modeldeployment import AnalysisResult, EngineSpec, MetricTemplate
from deltaroll.api.policy import NamespacePolicy
from deltaroll.controllers.admission import http_target_refusal
from deltaroll.controllers.analysis import http_probe, prometheus
from deltaroll.controllers.analysis.endpoints import engine_url
from deltaroll.controllers.analysis.errors import ConditionError, MeasurementError
from deltaroll.controllers.analysis.job import build_analysis_job, job_outcome
from deltaroll.controllers.analysis.runs import Measurement, taken
from deltaroll.controllers.analysis.verdict import judge
from deltaroll.controllers.job_defaults import RELEASE_ANALYSIS_DEFAULTS, JobDefaults

Body = Mapping[str, Any]
EnsureJob = Callable[[dict[str, Any]], Body]
"""Create the Job if it does not exist yet; return the Job as the API server has it."""


@dataclass(frozen=True)
class Context:
    """What a measurement may look at: the pods on each side and the versions."""

    engine: EngineSpec
    canary_version: str
    stable_version: str
    canary_pods: Sequence[Body] = ()
    stable_pods: Sequence[Body] = ()
    owner: Body | None = None  # the ModelDeployment, owner of analysis Jobs
    ensure_job: EnsureJob | None = None
    job_defaults: JobDefaults = RELEASE_ANALYSIS_DEFAULTS  # the admin's, for analysis Jobs
    policy: NamespacePolicy = field(default_factory=NamespacePolicy)  # which targets are allowed


def take(template: MetricTemplate, run: AnalysisResult, context: Context) -> Measurement | None:
    """Measure once and judge; None while an analysis Job runs or no canary pod serves yet
    (a canary still swapping weights is not a failed measurement)."""
    provider = template.provider
    try:
        if provider.http is not None:
            if not context.canary_pods:
                return None
            canary = [engine_url(p, context.engine) for p in context.canary_pods]
            stable = [engine_url(p, context.engine) for p in context.stable_pods]
            _check_targets([*canary, *stable], context.policy)
            probed = http_probe.measure(canary, stable, provider.http)
            return _judged(template, probed.result, probed.baseline)
        if provider.prometheus is not None:
            value = prometheus.measure(
                provider.prometheus,
                canary=context.canary_version,
                stable=context.stable_version,
            )
            return _judged(template, value, None)
        return _job(template, run, context)
    except (MeasurementError, ConditionError) as exc:
        return Measurement("Error", message=str(exc))


def _check_targets(urls: list[str], policy: NamespacePolicy) -> None:
    """Refuse to probe an engine URL the admin's policy does not allow (no request is sent)."""
    for url in urls:
        if (refusal := http_target_refusal(url, policy)) is not None:
            raise MeasurementError(refusal)


def _judged(template: MetricTemplate, value: float, baseline: float | None) -> Measurement:
    verdict = judge(template, value, baseline)
    compared = f" (baseline {baseline:.6g})" if baseline is not None else ""
    return Measurement(verdict, value=f"{value:.6g}", message=f"value {value:.6g}{compared}")


def _job(template: MetricTemplate, run: AnalysisResult, context: Context) -> Measurement | None:
    spec = template.provider.job
    if spec is None or context.owner is None or context.ensure_job is None:
        raise MeasurementError(f"analysis {template.name}: no Job runner configured")
    key = f"{run.version}/{run.step_index}/{run.started_at}/{taken(run)}"
    manifest = build_analysis_job(
        spec,
        owner=context.owner,
        template=template.name,
        key=key,
        canary=context.canary_version,
        stable=context.stable_version,
        canary_pods=[
            engine_url(p, context.engine).removeprefix("http://") for p in context.canary_pods
        ],
        defaults=context.job_defaults,
    )
    outcome = job_outcome(context.ensure_job(manifest))
    if outcome is None:
        return None
    name = manifest["metadata"]["name"]
    verdict_message = "completed" if outcome == "Successful" else "failed"
    return Measurement(outcome, value=outcome, message=f"analysis Job {name} {verdict_message}")
