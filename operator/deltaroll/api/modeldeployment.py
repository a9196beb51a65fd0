"""ModelDeployment: which version a set of inference pods serves, and how to get there.

GitOps promotes a version by changing ``spec.version``; the controller then moves the pods chosen
by ``spec.selector`` from the stable version to the new one in canary steps modelled on Argo
Rollouts (``setWeight``, ``pause``, ``analysis``), judges it with metric templates, and rolls back
on its own when ``autoRollback`` is on. Status follows kstatus: ``observedGeneration`` and the
``Ready``/``Progressing``/``Degraded`` conditions let Argo CD and Flux judge health.

Abort, promote and retry are requested through annotations on the ModelDeployment
(:mod:`deltaroll.api.annotations`), never by editing spec, so a GitOps tool is never fought.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from deltaroll.api.common import (
    API_VERSION,
    ApiModel,
    Conditions,
    Duration,
    EnvVar,
    ModelName,
    PodTemplateKnobs,
    StoreSpec,
    Timestamp,
    VersionRef,
    cel,
    cel_rules,
)
from deltaroll.api.public_keys import ed25519_raw

KIND: Final = "ModelDeployment"
PLURAL: Final = "modeldeployments"

ModelDeploymentPhase = Literal["Healthy", "Progressing", "Paused", "Degraded"]
AnalysisPhase = Literal["Running", "Successful", "Failed", "Inconclusive", "Error"]

MAX_STEPS = 32
MAX_TEMPLATES = 16
MAX_PUBLIC_KEYS = 8

# A template name: a DNS-1123 label, so it can name the analysis Job too.
TemplateName = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", max_length=63)
]
# successCondition / failureCondition: CEL expressions over `result` (and `baseline`).
Expression = Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class LabelSelectorRequirement(ApiModel):
    """One set-based requirement of a label selector."""

    key: Annotated[str, StringConstraints(max_length=316)] = Field(description="Label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="In, NotIn, Exists or DoesNotExist."
    )
    values: (
        Annotated[list[Annotated[str, StringConstraints(max_length=63)]], Field(max_length=64)]
        | None
    ) = Field(
        default=None,
        description="Label values; non-empty for In and NotIn, empty for Exists and DoesNotExist.",
    )


EMPTY_SELECTOR_MESSAGE = "selector must not be empty: it would choose every pod in the namespace"


class LabelSelector(ApiModel):
    """Chooses the inference pods, as metav1.LabelSelector; must not be empty."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel(
                "(has(self.matchLabels) && size(self.matchLabels) > 0)"
                " || (has(self.matchExpressions) && size(self.matchExpressions) > 0)",
                EMPTY_SELECTOR_MESSAGE,
            )
        )
    )

    match_labels: dict[str, Annotated[str, StringConstraints(max_length=63)]] | None = Field(
        default=None, description="Labels a pod must have, e.g. {app: qwen3-vllm}."
    )
    match_expressions: Annotated[list[LabelSelectorRequirement], Field(max_length=16)] | None = (
        Field(default=None, description="Set-based requirements a pod must meet.")
    )

    @model_validator(mode="after")
    def _not_empty(self) -> LabelSelector:
        if not self.match_labels and not self.match_expressions:
            raise ValueError(EMPTY_SELECTOR_MESSAGE)
        return self


class EngineSpec(ApiModel):
    """The inference server in each selected pod, which the agent reloads and probes talk to."""

    kind: Literal["vllm", "sglang", "reference"] = Field(
        description="vllm, sglang, or reference (Deltaroll's small engine for tests and demos)."
    )
    port: Annotated[int, Field(ge=1, le=65535)] = Field(
        default=8000,
        description=(
            "Engine HTTP port: the agent calls http://127.0.0.1:<port> in its own pod, "
            "analysis probes call http://<podIP>:<port>."
        ),
    )
    port_name: (
        Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$")] | None
    ) = Field(
        default=None,
        description=(
            "Name of the engine's containerPort; when set, it is looked up and wins over port."
        ),
    )


class PauseStep(ApiModel):
    """Wait before the next step."""

    duration: Duration | None = Field(
        default=None,
        description=(
            'How long to wait: a number and a unit, "30s", "5m", "1h". Absent means until '
            "promoted (kubectl deltaroll promote)."
        ),
    )


class AnalysisTemplateRef(ApiModel):
    """A metric template of spec.analysisTemplates, by name."""

    template_name: TemplateName = Field(description="Name of an entry of spec.analysisTemplates.")


class AnalysisStep(ApiModel):
    """Run metric templates against the canary; the step passes when all of them succeed."""

    templates: Annotated[
        list[AnalysisTemplateRef], Field(min_length=1, max_length=MAX_TEMPLATES)
    ] = Field(description="Templates to run, all at once.")


ONE_STEP_KIND_MESSAGE = "each step needs exactly one of setWeight, pause or analysis"


class CanaryStep(ApiModel):
    """One step of a canary: exactly one of setWeight, pause or analysis."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel(
                "[has(self.setWeight), has(self.pause), has(self.analysis)]"
                ".filter(x, x).size() == 1",
                ONE_STEP_KIND_MESSAGE,
            )
        )
    )

    set_weight: Annotated[int, Field(ge=0, le=100)] | None = Field(
        default=None,
        description=(
            "Percent of the selected pods (rounded up, at least one) to move to the new version."
        ),
    )
    pause: PauseStep | None = Field(
        default=None, description="Wait for a duration, or until promoted when none is given."
    )
    analysis: AnalysisStep | None = Field(
        default=None, description="Judge the canary with metric templates before going on."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> CanaryStep:
        kinds = (self.set_weight, self.pause, self.analysis)
        if sum(kind is not None for kind in kinds) != 1:
            raise ValueError(ONE_STEP_KIND_MESSAGE)
        return self


class BackgroundAnalysis(ApiModel):
    """Metric templates run for the whole rollout, from startingStep on; a failure aborts."""

    templates: Annotated[
        list[AnalysisTemplateRef], Field(min_length=1, max_length=MAX_TEMPLATES)
    ] = Field(description="Templates to run continuously.")
    starting_step: Annotated[int, Field(ge=0, le=MAX_STEPS - 1)] = Field(
        default=0, description="Index of the step from which background analysis runs."
    )


INCREASING_MESSAGE = "setWeight must increase from step to step"
STARTING_STEP_MESSAGE = "analysis.startingStep must be the index of a step"


class CanaryStrategy(ApiModel):
    """Argo-Rollouts-style canary: steps run in order; after the last one every pod moves."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel(
                "!has(self.steps) || (self.steps.filter(s, has(s.setWeight))"
                ".map(s, s.setWeight).isSorted() && self.steps.filter(s, has(s.setWeight))"
                ".all(s, self.steps.filter(t, has(t.setWeight) && t.setWeight == s.setWeight)"
                ".size() == 1))",
                INCREASING_MESSAGE,
                fieldPath=".steps",
            ),
            cel(
                "!has(self.analysis) || self.analysis.startingStep"
                " < (has(self.steps) ? size(self.steps) : 0)",
                STARTING_STEP_MESSAGE,
                fieldPath=".analysis.startingStep",
            ),
        )
    )

    steps: Annotated[list[CanaryStep], Field(max_length=MAX_STEPS)] | None = Field(
        default=None,
        description=(
            "Steps in order. With none, every pod moves at once (bounded by maxUnavailable)."
        ),
    )
    analysis: BackgroundAnalysis | None = Field(
        default=None, description="Analysis running in the background across the steps."
    )

    @model_validator(mode="after")
    def _consistent(self) -> CanaryStrategy:
        weights = [s.set_weight for s in self.steps or () if s.set_weight is not None]
        if any(a >= b for a, b in zip(weights, weights[1:], strict=False)):
            raise ValueError(INCREASING_MESSAGE)
        if self.analysis is not None and self.analysis.starting_step >= len(self.steps or ()):
            raise ValueError(STARTING_STEP_MESSAGE)
        return self


class Strategy(ApiModel):
    """How pods move to a new version."""

    canary: CanaryStrategy | None = Field(
        default=None, description="Canary steps; without them all pods move at once."
    )


def _json_text(text: str) -> str:
    try:
        json.loads(text)
    except ValueError as exc:
        raise ValueError(f"body must be JSON: {exc}") from None
    return text


class HttpProbe(ApiModel):
    """An HTTP request to each canary pod's engine (and stable pods, for a baseline)."""

    path: Annotated[str, StringConstraints(pattern=r"^/[^\s]*$", max_length=1024)] = Field(
        default="/eval", description="Request path on the engine, e.g. /eval or /health."
    )
    method: Literal["GET", "POST"] = Field(default="POST", description="GET or POST.")
    body: Annotated[str, StringConstraints(max_length=65536), AfterValidator(_json_text)] | None = (
        Field(
            default=None,
            description='JSON request body, e.g. {"texts": ["The capital of France"]}.',
        )
    )
    json_path: Annotated[str, StringConstraints(pattern=r"^\$", max_length=256)] = Field(
        default="$.loss",
        description="JSONPath of the number in the response that becomes `result`.",
    )
    compare_with_stable: bool = Field(
        default=True,
        description=(
            "Also probe stable pods; their value is `baseline` in the conditions, so "
            "`result <= baseline * 1.05` judges the canary against what serves today."
        ),
    )
    timeout_seconds: Annotated[int, Field(ge=1, le=3600)] = Field(
        default=30, description="Timeout of one request."
    )


class PrometheusQuery(ApiModel):
    """A PromQL query whose scalar (or single-sample vector) result becomes `result`."""

    address: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$", max_length=1024)] = (
        Field(description="Prometheus base URL, e.g. http://prometheus-operated.monitoring:9090.")
    )
    query: Annotated[str, StringConstraints(min_length=1, max_length=8192)] = Field(
        description=(
            "PromQL query; {{canaryVersion}} and {{stableVersion}} are replaced before it runs."
        )
    )
    timeout_seconds: Annotated[int, Field(ge=1, le=3600)] = Field(
        default=30, description="Timeout of one query."
    )


class AnalysisJob(PodTemplateKnobs):
    """A Job that judges the canary: success when it completes, failure when it fails."""

    command: (
        Annotated[list[Annotated[str, StringConstraints(max_length=4096)]], Field(max_length=64)]
        | None
    ) = Field(default=None, description="Entrypoint of the container; the image's when unset.")
    args: (
        Annotated[list[Annotated[str, StringConstraints(max_length=4096)]], Field(max_length=256)]
        | None
    ) = Field(default=None, description="Arguments to the entrypoint.")
    env: Annotated[list[EnvVar], Field(max_length=64)] | None = Field(
        default=None,
        description=(
            "Environment variables; DELTAROLL_CANARY_VERSION, DELTAROLL_STABLE_VERSION and "
            "DELTAROLL_CANARY_PODS (podIP:port, comma-separated) are always added."
        ),
    )
    backoff_limit: Annotated[int, Field(ge=0, le=20)] = Field(
        default=0, description="Retries before the Job, and the measurement, fail."
    )
    active_deadline_seconds: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="Wall-clock limit of the Job."
    )


ONE_PROVIDER_MESSAGE = "provider needs exactly one of http, prometheus or job"


class MetricProvider(ApiModel):
    """Where a measurement comes from: exactly one of http, prometheus or job."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel(
                "[has(self.http), has(self.prometheus), has(self.job)].filter(x, x).size() == 1",
                ONE_PROVIDER_MESSAGE,
            )
        )
    )

    http: HttpProbe | None = Field(default=None, description="Probe the engines over HTTP.")
    prometheus: PrometheusQuery | None = Field(default=None, description="Query Prometheus.")
    job: AnalysisJob | None = Field(default=None, description="Run a Job.")

    @model_validator(mode="after")
    def _exactly_one(self) -> MetricProvider:
        if sum(p is not None for p in (self.http, self.prometheus, self.job)) != 1:
            raise ValueError(ONE_PROVIDER_MESSAGE)
        return self


NEEDS_CONDITION_MESSAGE = (
    "http and prometheus metrics need a successCondition or a failureCondition"
)


class MetricTemplate(ApiModel):
    """A named measurement, repeated `count` times every `interval`, and how to judge it."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel(
                "has(self.provider.job) || has(self.successCondition)"
                " || has(self.failureCondition)",
                NEEDS_CONDITION_MESSAGE,
            )
        )
    )

    name: TemplateName = Field(description="Name that steps refer to (templateName).")
    provider: MetricProvider = Field(description="Where the measurement comes from.")
    success_condition: Expression | None = Field(
        default=None,
        description=(
            "CEL expression over `result` (and `baseline` for http probes compared with stable) "
            "that is true for a good measurement, e.g. `result <= baseline * 1.05`."
        ),
    )
    failure_condition: Expression | None = Field(
        default=None,
        description="CEL expression that is true for a bad measurement, e.g. `result > 4.0`.",
    )
    interval: Duration = Field(default="30s", description='Time between measurements, e.g. "30s".')
    initial_delay: Duration | None = Field(
        default=None, description="Wait this long after the step starts before measuring."
    )
    count: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=1, description="Number of measurements to take."
    )
    failure_limit: Annotated[int, Field(ge=0, le=1000)] = Field(
        default=0,
        description="Failed measurements tolerated; one more fails the analysis.",
    )
    consecutive_error_limit: Annotated[int, Field(ge=0, le=1000)] = Field(
        default=4,
        description=(
            "Measurements in a row that could not be taken (engine or Prometheus unreachable, "
            "no number at jsonPath) tolerated; one more ends the analysis as Error, which "
            "aborts like a failure."
        ),
    )

    @model_validator(mode="after")
    def _judged(self) -> MetricTemplate:
        if self.provider.job is None and not (self.success_condition or self.failure_condition):
            raise ValueError(NEEDS_CONDITION_MESSAGE)
        return self


def _ed25519_pem(text: str) -> str:
    ed25519_raw(text)
    return text


PublicKeyPem = Annotated[
    str,
    StringConstraints(pattern=r"^\s*-----BEGIN PUBLIC KEY-----", max_length=1024),
    AfterValidator(_ed25519_pem),
]


class VerificationSpec(ApiModel):
    """The publisher keys whose signature every version these pods load must carry."""

    public_keys: Annotated[list[PublicKeyPem], Field(min_length=1, max_length=MAX_PUBLIC_KEYS)] = (
        Field(
            description=(
                "Ed25519 public keys in PEM (the PUBLIC.pem of `deltaroll keys generate`, or the "
                "operator's signing key's). A version is rolled out only when one of them signed "
                "it (and, for a name in spec.version, that name); the agents refuse any other. "
                "List two during a rotation."
            )
        )
    )


def _max_unavailable(value: int | str) -> int | str:
    if isinstance(value, int) and value < 1:
        raise ValueError("maxUnavailable must be at least 1")
    if isinstance(value, str) and (not value.endswith("%") or not value[:-1].isdigit()):
        raise ValueError('maxUnavailable must be a number or a percentage like "25%"')
    if isinstance(value, str) and not 1 <= int(value[:-1]) <= 100:
        raise ValueError("maxUnavailable percentage must be between 1% and 100%")
    return value


MaxUnavailable = Annotated[
    int | str,
    AfterValidator(_max_unavailable),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": True,
            "pattern": r"^(100|[1-9][0-9]?)%$",
        }
    ),
    Field(
        json_schema_extra=cel_rules(
            cel(
                "type(self) == string || self >= 1",
                "maxUnavailable must be at least 1 (a rollout with none unavailable cannot move)",
            )
        )
    ),
]

_TEMPLATES_EXIST = (
    "(!has(self.strategy) || !has(self.strategy.canary)"
    " || ((!has(self.strategy.canary.steps) || self.strategy.canary.steps.all(s,"
    " !has(s.analysis) || s.analysis.templates.all(t, has(self.analysisTemplates)"
    " && self.analysisTemplates.exists(m, m.name == t.templateName))))"
    " && (!has(self.strategy.canary.analysis) || self.strategy.canary.analysis.templates.all(t,"
    " has(self.analysisTemplates) && self.analysisTemplates.exists(m, m.name == t.templateName)))))"
)


UNKNOWN_TEMPLATE_MESSAGE = (
    "every analysis templateName must name an entry of spec.analysisTemplates"
)
UNIQUE_TEMPLATES_MESSAGE = "analysisTemplates names must be unique"


class ModelDeploymentSpec(ApiModel):
    """Which version the selected pods serve, and the rollout that gets them there."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel(
                _TEMPLATES_EXIST,
                UNKNOWN_TEMPLATE_MESSAGE,
                fieldPath=".analysisTemplates",
            ),
        )
    )

    model: ModelName = Field(
        description="Model name, as in the store and the ModelDeltas. Immutable.",
        json_schema_extra=cel_rules(cel("self == oldSelf", "model is immutable")),
    )
    store: StoreSpec = Field(description="The store the agents pull versions from.")
    version: VersionRef = Field(
        description=(
            "Version (name or id) the pods should serve. The one field GitOps edits to promote."
        )
    )
    selector: LabelSelector = Field(
        description=(
            "Label selector of the inference pods. A pod that an older ModelDeployment also "
            "selects stays with that one: this ModelDeployment then changes no pod and is "
            "Degraded with reason SelectorOverlap until the selectors are disjoint."
        )
    )
    engine: EngineSpec = Field(description="The inference server in each pod.")
    strategy: Strategy | None = Field(
        default=None, description="How pods move to a new version; all at once when unset."
    )
    verification: VerificationSpec | None = Field(
        default=None,
        description=(
            "Require signed versions: the operator writes these keys on every selected pod "
            "(deltaroll.dev/verify-keys) and holds a version no key signed (Degraded, reason "
            "VersionNotSigned). Unset: versions are not checked for signatures."
        ),
    )
    analysis_templates: Annotated[list[MetricTemplate], Field(max_length=MAX_TEMPLATES)] | None = (
        Field(
            default=None,
            description="Metric templates that analysis steps and background analysis name.",
            json_schema_extra=cel_rules(
                cel(
                    "self.all(t, self.filter(u, u.name == t.name).size() == 1)",
                    UNIQUE_TEMPLATES_MESSAGE,
                )
            ),
        )
    )
    auto_rollback: bool = Field(
        default=True,
        description=(
            "Move every pod back to the stable version when analysis fails, an agent reports "
            "Failed, or progressDeadlineSeconds passes."
        ),
    )
    rollback_window: Annotated[int, Field(ge=0, le=20)] = Field(
        default=3,
        description=(
            "How many recently promoted versions count as known-good: setting spec.version back "
            "to one of them skips the canary steps."
        ),
    )
    max_unavailable: MaxUnavailable = Field(
        default=1,
        description=(
            "Most pods swapping weights (and so not Ready) at once: a number or a percentage "
            'like "25%".'
        ),
    )
    progress_deadline_seconds: Annotated[int, Field(ge=1)] = Field(
        default=600,
        description=(
            "Seconds a step may take to make progress (pauses and analysis excluded) before the "
            "rollout is Degraded with reason ProgressDeadlineExceeded."
        ),
    )

    def referenced_templates(self) -> list[str]:
        """Names of the templates that steps and background analysis run."""
        canary = self.strategy.canary if self.strategy else None
        if canary is None:
            return []
        refs = [t for s in canary.steps or () if s.analysis for t in s.analysis.templates]
        refs += canary.analysis.templates if canary.analysis else []
        return [ref.template_name for ref in refs]

    @model_validator(mode="after")
    def _templates_consistent(self) -> ModelDeploymentSpec:
        names = [t.name for t in self.analysis_templates or ()]
        if len(set(names)) != len(names):
            raise ValueError(UNIQUE_TEMPLATES_MESSAGE)
        if not set(self.referenced_templates()) <= set(names):
            raise ValueError(UNKNOWN_TEMPLATE_MESSAGE)
        return self


class AnalysisResult(ApiModel):
    """The outcome of one metric template run."""

    template_name: TemplateName = Field(description="Which template ran.")
    step_index: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="The step that ran it; absent for background analysis."
    )
    version: VersionRef | None = Field(default=None, description="The canary version judged.")
    phase: AnalysisPhase = Field(description="Running, Successful, Failed, Inconclusive or Error.")
    successful: Annotated[int, Field(ge=0)] = Field(
        default=0, description="Measurements that met the success condition."
    )
    failed: Annotated[int, Field(ge=0)] = Field(
        default=0, description="Measurements that met the failure condition."
    )
    errors: Annotated[int, Field(ge=0)] = Field(
        default=0, description="Measurements that could not be taken."
    )
    consecutive_errors: Annotated[int, Field(ge=0)] = Field(
        default=0,
        description=(
            "Measurements in a row, up to the latest, that could not be taken; a successful or "
            "failed one resets it. Judged against the template's consecutiveErrorLimit."
        ),
    )
    last_value: Annotated[str, StringConstraints(max_length=1024)] | None = Field(
        default=None, description="The latest measured value, as text."
    )
    message: Annotated[str, StringConstraints(max_length=4096)] | None = Field(
        default=None, description="Why it ended as it did."
    )
    started_at: Timestamp | None = Field(default=None, description="When the run started.")
    finished_at: Timestamp | None = Field(default=None, description="When the run ended.")


class PromotedVersion(ApiModel):
    """A version that became stable."""

    version: VersionRef = Field(description="Version name (or id) as spec.version gave it.")
    version_id: Annotated[str, StringConstraints(max_length=128)] | None = Field(
        default=None, description="Content-derived id of the version."
    )
    promoted_at: Timestamp = Field(description="When every pod served it.")


class ModelDeploymentStatus(ApiModel):
    """Where the rollout stands."""

    # Status is the operator's; tolerate fields a newer or older operator (or Kopf) wrote.
    model_config = ConfigDict(extra="ignore")

    phase: ModelDeploymentPhase | None = Field(
        default=None,
        description=(
            "Healthy (every pod serves spec.version), Progressing (moving), Paused (at a pause "
            "step), or Degraded (aborted or rolled back; see the Degraded condition)."
        ),
    )
    message: Annotated[str, StringConstraints(max_length=32768)] | None = Field(
        default=None, description="Short human-readable summary."
    )
    stable_version: VersionRef | None = Field(
        default=None, description="The last version every pod served; rollbacks return here."
    )
    canary_version: VersionRef | None = Field(
        default=None, description="The version being rolled out; absent when none is."
    )
    current_step_index: Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        description="Index of the canary step in progress; equal to the number of steps when done.",
    )
    total_pods: Annotated[int, Field(ge=0)] = Field(
        default=0, description="Selected pods that are not being deleted."
    )
    updated_pods: Annotated[int, Field(ge=0)] = Field(
        default=0, description="Selected pods whose agent reports the canary (or target) version."
    )
    ready_pods: Annotated[int, Field(ge=0)] = Field(
        default=0, description="Selected pods that are Ready (weights verified and loaded)."
    )
    pause_start_time: Timestamp | None = Field(
        default=None, description="When the current pause step began; absent when not paused."
    )
    abort: bool = Field(
        default=False,
        description=(
            "True after an abort (the deltaroll.dev/abort annotation or a failed analysis); "
            "cleared when spec.version changes or on retry."
        ),
    )
    aborted_at: Timestamp | None = Field(default=None, description="When the rollout was aborted.")
    analysis_results: Annotated[list[AnalysisResult], Field(max_length=32)] | None = Field(
        default=None, description="The latest run of each analysis template in this rollout."
    )
    history: Annotated[list[PromotedVersion], Field(max_length=20)] | None = Field(
        default=None, description="Recently promoted versions, newest first."
    )
    observed_generation: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="metadata.generation the status was computed from."
    )
    conditions: Conditions | None = Field(
        default=None,
        description=(
            "Ready (every pod serves spec.version), Progressing (a rollout is moving), Degraded "
            "(aborted or rolled back), each with observedGeneration; Reconciling and Stalled "
            "mirror Progressing and Degraded for kstatus (Flux)."
        ),
    )


class ModelDeployment(ApiModel):
    """A whole ModelDeployment object, as the API server returns it."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["deltaroll.dev/v1alpha1"] = Field(
        default=API_VERSION, description="deltaroll.dev/v1alpha1"
    )
    kind: Literal["ModelDeployment"] = Field(default=KIND, description="ModelDeployment")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")
    spec: ModelDeploymentSpec = Field(description="What to serve and how to roll it out.")
    status: ModelDeploymentStatus | None = Field(
        default=None, description="Where the rollout stands."
    )
