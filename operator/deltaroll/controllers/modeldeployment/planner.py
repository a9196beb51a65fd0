"""The rollout planner: (spec, status, observed pods and version, requests, now) -> a plan.

A pure function, modelled on Argo Rollouts' canary, that the ModelDeployment handler calls on
every event. It never writes spec (GitOps owns it) and keeps everything it must remember in
status, so an operator restarted mid-rollout continues where it was:

- all pods serve ``status.stableVersion``; a new ``spec.version`` becomes ``canaryVersion`` and
  the steps run in order from ``currentStepIndex``: ``setWeight`` moves that percent of the pods
  (rounded up, at least one) to it, ``pause`` waits for its duration or a promote, ``analysis``
  waits for its runs to succeed; after the last step every pod moves and the canary becomes
  stable (``history``). A version inside ``rollbackWindow`` of ``history`` skips the steps.
- no more than ``maxUnavailable`` serving pods swap weights at once
  (:func:`~deltaroll.controllers.modeldeployment.pods.assign_versions`).
- a failed or erroring analysis run, a pod whose agent reports Failed on the canary, or a pod
  that has not reached its version within ``progressDeadlineSeconds`` aborts the rollout when
  ``autoRollback`` is on: every pod goes back to stable (the agent reverses the delta) and the
  deployment stays Degraded until spec.version changes or a retry; with ``autoRollback`` off it
  is Degraded and holds where it is.
- promote (``step`` | ``full``), abort and retry arrive as annotations; the plan lists the ones
  it handled so the handler removes them.
- a ModelDelta for spec.version that is not Ready holds the rollout in Progressing; a version
  that no key of ``spec.verification`` signed holds it as Degraded (``VersionNotSigned``), and
  goes on once it is signed.
- every selected pod carries the keys of ``spec.verification`` (``Plan.pod_keys``), written in
  the same patch as its version, so an agent never sees a version without the keys.
- an older ModelDeployment selecting some of the pods (``Observed.overlap``) keeps them: this one
  changes no pod and handles no request, is Degraded with reason ``SelectorOverlap`` (one Warning
  Event), and resumes where it was once the overlap is gone.
- ``Plan.wake_at`` says when to look again if no event comes first: a timed pause ends, an
  analysis measurement falls due, a pod's progress deadline passes, or a version that only the
  store can announce is asked for again. None when only an event can change anything (at rest,
  an indefinite pause, a rollback in progress): then nothing wakes the deployment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from deltaroll.api import conditions as cond
from deltaroll.api.agent_state import AgentState
from deltaroll.api.annotations import ABORT, PROMOTE, RETRY, ROLLBACK
from deltaroll.api.common import Condition
from deltaroll.api.conditions import parse_rfc3339, rfc3339
from deltaroll.api.modeldeployment import (
    AnalysisResult,
    CanaryStep,
    ModelDeploymentPhase,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    PromotedVersion,
)
from deltaroll.api.public_keys import verify_keys_value
from deltaroll.controllers.admission import REASON as POLICY_DENIED
from deltaroll.controllers.analysis.runs import next_due, seconds, start_run, taken
from deltaroll.controllers.modeldeployment.overlap import (
    SELECTOR_OVERLAP,
    SELECTOR_OVERLAP_RESOLVED,
    Overlap,
)
from deltaroll.controllers.modeldeployment.pods import (
    PodView,
    VersionAliases,
    assign_versions,
    canary_count,
    seed_candidates,
    serves,
)

MAX_HISTORY = 20
MAX_RESULTS = 32
INVALID_SPEC = "InvalidSpec"
RECHECK_STORE_S = 10
"""How often the store is asked again about a version only it can speak for: one no ModelDelta
publishes, or one not signed yet (the store sends no events)."""


@dataclass(frozen=True)
class TargetVersion:
    """What the operator knows of spec.version: whether it can be pulled, and its id.

    ``Ready``: published in the store (or its ModelDelta is Ready); ``Pending``: its ModelDelta
    is still computing or it is not in the store yet; ``Failed``: its ModelDelta failed, or
    (``reason`` VersionNotSigned) no key of spec.verification signed it.
    ``from_store``: only the store can say when this changes (no ModelDelta speaks for the
    version, or its signature is missing), so no event will: the planner asks again in a while.
    """

    state: Literal["Ready", "Pending", "Failed"] = "Ready"
    message: str = ""
    version_id: str | None = None
    from_store: bool = False
    reason: str = "ModelDeltaFailed"  # the Degraded reason when Failed


@dataclass(frozen=True)
class Observed:
    """Everything the planner reads besides spec and status."""

    generation: int
    pods: Sequence[PodView] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    target: TargetVersion = field(default_factory=TargetVersion)
    version_ids: Mapping[str, str] = field(default_factory=dict)  # version name -> content id
    overlap: Overlap | None = None  # pods that older ModelDeployments select too
    #: The runs (template name, step index) measured before planning in this pass.
    measured: frozenset[tuple[str, int | None]] = frozenset()


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the ModelDeployment."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    """The planner's answer: the status to write, pod annotations to set, events, the
    request annotations it handled (to remove), and when to look again without an event."""

    status: ModelDeploymentStatus
    pod_versions: dict[str, str]
    events: tuple[Event, ...]
    handled_requests: tuple[str, ...]
    wake_at: datetime | None = None
    pod_keys: dict[str, str | None] = field(default_factory=dict)  # verify-keys to (re)write
    seed_among: dict[str, str] = field(default_factory=dict)  # version -> written with it


@dataclass
class _Outcome:
    """The phase, condition reason and message a planning pass settled on."""

    phase: ModelDeploymentPhase
    reason: str
    message: str  # the conditions' message: stable while the situation lasts
    summary: str | None = None  # status.message, when it says more (pod counts)


class _Pass:
    """One planning pass: mutable scratch that :func:`plan` turns into a frozen :class:`Plan`."""

    def __init__(
        self,
        spec: ModelDeploymentSpec,
        status: ModelDeploymentStatus,
        seen: Observed,
        now: datetime,
    ) -> None:
        self.spec, self.seen, self.now = spec, seen, now
        self.status = status.model_copy(deep=True)
        self.aliases = VersionAliases(seen.version_ids)
        self.events: list[Event] = []
        self.handled: list[str] = []
        self.pod_versions: dict[str, str] = {}
        self.wakes: list[datetime] = []
        self.started_runs: list[AnalysisResult] = []

    # ------------------------------------------------------------------ helpers

    @property
    def steps(self) -> list[CanaryStep]:
        canary = self.spec.strategy.canary if self.spec.strategy else None
        return list(canary.steps or []) if canary else []

    def emit(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))

    def wake(self, at: datetime) -> None:
        """Look again at ``at`` unless an event comes first."""
        self.wakes.append(at)

    def serving(self, ref: str | None) -> list[PodView]:
        return [p for p in self.seen.pods if serves(p, ref, self.aliases)]

    def move(self, canary: int, *, target: str) -> None:
        """Write the pod annotations that bring ``canary`` pods to ``target``, the rest stable."""
        stable = self.status.stable_version or target
        self.pod_versions = assign_versions(
            self.seen.pods,
            stable=stable,
            target=target,
            canary=canary,
            unavailable_budget=self.spec.max_unavailable,
            aliases=self.aliases,
        )

    def results(self) -> list[AnalysisResult]:
        return list(self.status.analysis_results or [])

    def run_of(self, template: str, step_index: int | None) -> AnalysisResult | None:
        return next(
            (
                r
                for r in self.results()
                if r.template_name == template
                and r.step_index == step_index
                and r.version == self.status.canary_version
            ),
            None,
        )

    def ensure_runs(self, templates: Sequence[str], step_index: int | None) -> list[AnalysisResult]:
        """The runs of ``templates`` for this step and canary, started now when missing."""
        runs = []
        for name in templates:
            run = self.run_of(name, step_index)
            if run is None:
                run = start_run(
                    name,
                    step_index=step_index,
                    version=str(self.status.canary_version),
                    now=self.now,
                )
                others = [
                    r
                    for r in self.results()
                    if not (r.template_name == name and r.step_index == step_index)
                ]
                self.status.analysis_results = (others + [run])[-MAX_RESULTS:]
                self.started_runs.append(run)
            runs.append(run)
        return runs

    # ------------------------------------------------------------------ requests

    def take_request(self, key: str) -> str | None:
        value = self.seen.annotations.get(key)
        if value is not None:
            self.handled.append(key)
        return value

    def start_rollout(self, target: str, *, reason: str, message: str) -> None:
        self.status.canary_version = target
        self.status.current_step_index = 0
        self.status.pause_start_time = None
        self.status.abort = False
        self.status.aborted_at = None
        self.status.analysis_results = None
        self.emit("Normal", reason, message)

    def abort(self, reason: str, message: str) -> None:
        message += ". Change spec.version or run `kubectl deltaroll retry` to try again"
        self.status.abort = True
        self.status.aborted_at = rfc3339(self.now)
        self.status.pause_start_time = None
        self.status.conditions = cond.set_condition(
            self.status.conditions,
            cond.DEGRADED,
            "True",
            reason,
            message,
            observed_generation=self.seen.generation,
            now=rfc3339(self.now),
        )
        self.emit("Warning", reason, message)

    def promoted(self, target: str) -> _Outcome:
        previous = self.status.stable_version
        self.status.stable_version = target
        self.status.canary_version = None
        self.status.current_step_index = len(self.steps)
        self.status.pause_start_time = None
        entry = PromotedVersion(
            version=target,
            version_id=self.seen.target.version_id,
            promoted_at=rfc3339(self.now),
        )
        older = [h for h in self.status.history or [] if h.version != target]
        self.status.history = ([entry] + older)[:MAX_HISTORY]
        message = f"every pod serves {target}" + (f" (was {previous})" if previous else "")
        self.emit("Normal", "Promoted", message)
        return _Outcome("Healthy", "RolloutComplete", message)

    # ------------------------------------------------------------------ the pass

    def run(self) -> _Outcome:
        if self.seen.overlap is not None:
            return self.yielded(self.seen.overlap)
        if self.overlapped_before():
            self.emit(
                "Normal",
                SELECTOR_OVERLAP_RESOLVED,
                "no older ModelDeployment selects these pods any more: the rollout resumes",
            )
        target = self.spec.version
        status = self.status
        retry = self.take_request(RETRY)
        abort = self.take_request(ABORT)
        promote = self.take_request(PROMOTE)

        if status.stable_version is None:
            return self.first_version(target)

        if target == status.stable_version:
            if status.canary_version is not None or status.abort:
                self.emit(
                    "Normal",
                    "RolloutCancelled",
                    f"spec.version is back to the stable {target}; "
                    f"{status.canary_version} is no longer rolled out",
                )
            status.canary_version = None
            status.abort = False
            status.aborted_at = None
            status.pause_start_time = None
            return self.steady(target)

        in_window = target in self.known_good()
        if status.canary_version != target:
            if in_window:
                self.start_rollout(
                    target,
                    reason="RollbackStarted",
                    message=f"{target} was promoted recently (rollbackWindow): every pod moves "
                    "to it without canary steps",
                )
            else:
                self.start_rollout(
                    target,
                    reason="RolloutStarted",
                    message=f"rolling out {target} over stable {status.stable_version}",
                )
        elif retry is not None and (status.abort or self.failure() is not None):
            self.start_rollout(
                target, reason="Retried", message=f"retrying {target} from the first step"
            )
        if status.abort:
            return self.aborted(target)
        if abort is not None:
            verb = "rolled back" if abort == ROLLBACK else "aborted"
            self.abort(
                "RolledBack" if abort == ROLLBACK else "Aborted",
                f"rollout of {target} {verb} by request; every pod goes back to "
                f"{status.stable_version}",
            )
            return self.aborted(target)

        readiness = self.seen.target
        if readiness.state != "Ready":
            if promote is not None and readiness.state == "Pending":
                self.handled.remove(PROMOTE)  # kept: it promotes once the version is there
            return self.hold(target, readiness)

        failure = self.failure()
        if failure is not None:
            reason, message = failure
            if self.spec.auto_rollback:
                self.abort(reason, message + f"; every pod goes back to {status.stable_version}")
                return self.aborted(target)
            self.move(self.pods_wanting(target), target=target)
            return _Outcome(
                "Degraded",
                reason,
                message + "; autoRollback is off: abort, retry, or change spec.version",
            )

        steps = [] if in_window else self.steps
        if promote is not None:
            self.promote(promote, steps)
        return self.advance(target, steps)

    def yielded(self, overlap: Overlap) -> _Outcome:
        """Older ModelDeployments select some of the pods: change none and take no request, so
        the rollout resumes where it was when the overlap ends."""
        message = overlap.message()
        if not self.overlapped_before():
            self.emit("Warning", SELECTOR_OVERLAP, message)
        return _Outcome("Degraded", SELECTOR_OVERLAP, message)

    def overlapped_before(self) -> bool:
        """Whether the last pass yielded its pods to an older ModelDeployment."""
        degraded = cond.find_condition(self.status.conditions, cond.DEGRADED)
        return bool(degraded and degraded.status == "True" and degraded.reason == SELECTOR_OVERLAP)

    def known_good(self) -> list[str]:
        """Versions recently promoted before the stable one: rolling back to them is safe."""
        older = [
            h.version for h in self.status.history or [] if h.version != self.status.stable_version
        ]
        return older[: self.spec.rollback_window]

    def first_version(self, target: str) -> _Outcome:
        """No stable version yet: every pod moves to spec.version without steps."""
        readiness = self.seen.target
        if readiness.state != "Ready":
            return self.waiting_outcome(target, readiness)
        self.move(len(self.seen.pods), target=target)
        if self.all_serve(target):
            return self.promoted(target)
        failed = self.failed_agent()
        if failed is not None:  # nothing to roll back to: say so and wait for a new version
            return _Outcome("Degraded", "AgentFailed", failed)
        return self.progressing(f"deploying {target}: {self.count_line(target)}")

    def failed_agent(self) -> str | None:
        """Why the first pod whose agent reports Failed cannot serve its version, if any."""
        pod = next((p for p in self.seen.pods if p.agent_state is AgentState.FAILED), None)
        if pod is None:
            return None
        return f"pod {pod.name} cannot serve {pod.wanted}: {pod.agent_message or 'agent Failed'}"

    def steady(self, stable: str) -> _Outcome:
        self.move(0, target=stable)
        failed = self.failed_agent()
        if failed is not None:
            return _Outcome("Degraded", "AgentFailed", failed)
        if self.all_serve(stable):
            return _Outcome("Healthy", "RolloutComplete", f"every pod serves {stable}")
        return self.progressing(f"moving pods to {stable}: {self.count_line(stable)}")

    def aborted(self, target: str) -> _Outcome:
        stable = str(self.status.stable_version)
        self.move(0, target=target)
        self.status.canary_version = target
        degraded = cond.find_condition(self.status.conditions, cond.DEGRADED)
        # aborted by an older operator, or the reason was overwritten while yielding its pods or
        # while the spec did not parse or was refused by the policy
        overwritten = degraded is not None and degraded.reason in (
            SELECTOR_OVERLAP,
            INVALID_SPEC,
            POLICY_DENIED,
        )
        if degraded is None or degraded.status != "True" or overwritten:
            degraded = Condition(
                type=cond.DEGRADED,
                status="True",
                reason="Aborted",
                message=f"rollout of {target} aborted",
                last_transition_time=rfc3339(self.now),
            )
        progress = (
            f"every pod is back on {stable}"
            if self.all_serve(stable)
            else f"rolling back: {self.count_line(stable)}"
        )
        summary = f"{progress}. {degraded.message}"
        return _Outcome("Degraded", degraded.reason, degraded.message, summary)

    def hold(self, target: str, readiness: TargetVersion) -> _Outcome:
        """spec.version cannot be pulled yet: no pod moves (new pods get the stable version)."""
        self.move(self.pods_wanting(target), target=target)
        return self.waiting_outcome(target, readiness)

    def waiting_outcome(self, target: str, readiness: TargetVersion) -> _Outcome:
        if readiness.from_store and readiness.state != "Ready":
            self.wake(self.now + timedelta(seconds=RECHECK_STORE_S))
        if readiness.state == "Failed":
            return _Outcome(
                "Degraded",
                readiness.reason,
                f"version {target} cannot be rolled out: {readiness.message}",
            )
        return _Outcome(
            "Progressing",
            "WaitingForVersion",
            f"waiting for version {target}: {readiness.message}".rstrip(": "),
        )

    def pods_wanting(self, target: str) -> int:
        return sum(1 for p in self.seen.pods if p.wanted == target)

    def failure(self) -> tuple[str, str] | None:
        """Why the rollout must stop: a failed analysis, a failed agent, a missed deadline."""
        target = self.spec.version
        for run in self.results():
            if run.version == target and run.phase in ("Failed", "Error"):
                reason = "AnalysisFailed" if run.phase == "Failed" else "AnalysisError"
                return reason, run.message or f"analysis {run.template_name} {run.phase}"
        for pod in self.seen.pods:
            if pod.wanted == target and pod.agent_state is AgentState.FAILED:
                return "AgentFailed", (
                    f"pod {pod.name} cannot serve {target}: {pod.agent_message or 'agent Failed'}"
                )
        deadline = timedelta(seconds=self.spec.progress_deadline_seconds)
        for pod in self.seen.pods:
            stuck = pod.wanted == target and not serves(pod, target, self.aliases)
            if not stuck or pod.version_set_at is None:
                continue
            if self.now - pod.version_set_at <= deadline:
                self.wake(pod.version_set_at + deadline + timedelta(seconds=1))
            else:
                return "ProgressDeadlineExceeded", (
                    f"pod {pod.name} has not served {target} within progressDeadlineSeconds "
                    f"({self.spec.progress_deadline_seconds}s); agent: "
                    f"{pod.agent_state or 'no report'} {pod.agent_message}".rstrip()
                )
        return None

    def promote(self, value: str, steps: Sequence[CanaryStep]) -> None:
        index = self.status.current_step_index or 0
        if value == "full":
            self.status.current_step_index = len(steps)
            self.emit("Normal", "PromotedFull", "promoted fully: the remaining steps are skipped")
        elif index < len(steps):
            self.status.current_step_index = index + 1
            self.emit("Normal", "PromotedStep", f"promoted: step {index + 1} of {len(steps)} ends")
        self.status.pause_start_time = None

    def advance(self, target: str, steps: Sequence[CanaryStep]) -> _Outcome:
        """Run the steps from currentStepIndex as far as the observed pods allow."""
        status = self.status
        index = min(status.current_step_index or 0, len(steps))
        total = len(self.seen.pods)
        weight = _weight_before(steps, index)
        outcome: _Outcome | None = None
        while index < len(steps) and outcome is None:
            step = steps[index]
            label = f"step {index + 1}/{len(steps)}"
            self.background(index)
            if step.set_weight is not None:
                weight = step.set_weight
                wanted = canary_count(weight, total)
                if len(self.serving_wanted(target)) >= wanted:
                    index += 1
                    continue
                outcome = self.progressing(
                    f"{label} setWeight {weight}%: {len(self.serving_wanted(target))}/{wanted} "
                    f"pods serve {target}"
                )
            elif step.pause is not None:
                outcome = self.pause(step.pause.duration, label)
                if outcome is None:
                    index += 1
            elif step.analysis is not None:
                names = [t.template_name for t in step.analysis.templates]
                runs = self.ensure_runs(names, index)
                outcome = self.judge(runs, label)
                if outcome is None:
                    index += 1
        status.current_step_index = index
        if outcome is not None:
            if outcome.phase == "Degraded":
                return outcome
            self.move(canary_count(weight, total), target=target)
            return outcome
        self.move(total, target=target)
        if self.all_serve(target):
            self.stop_background()
            return self.promoted(target)
        return self.progressing(f"moving every pod to {target}: {self.count_line(target)}")

    def serving_wanted(self, target: str) -> list[PodView]:
        return [p for p in self.serving(target) if p.wanted == target]

    def pause(self, duration: str | None, label: str) -> _Outcome | None:
        """None when the pause is over; otherwise the Paused outcome."""
        status = self.status
        if status.pause_start_time is None:
            status.pause_start_time = rfc3339(self.now)
            self.emit(
                "Normal",
                "Paused",
                f"{label}: paused" + (f" for {duration}" if duration else " until promoted"),
            )
        started = parse_rfc3339(status.pause_start_time)
        if duration is not None:
            ends = started + timedelta(seconds=seconds(duration))
            if self.now >= ends:
                status.pause_start_time = None
                return None
            self.wake(ends)
        until = f"for {duration}" if duration else "until `kubectl deltaroll promote`"
        return _Outcome("Paused", "RolloutPaused", f"{label}: paused {until}")

    def judge(self, runs: Sequence[AnalysisResult], label: str) -> _Outcome | None:
        """None when every run succeeded; Paused when one is inconclusive; else waiting."""
        if all(r.phase == "Successful" for r in runs):
            return None
        inconclusive = [r for r in runs if r.phase == "Inconclusive"]
        if inconclusive:
            return _Outcome("Paused", "AnalysisInconclusive", f"{label}: {inconclusive[0].message}")
        running = ", ".join(r.template_name for r in runs if r.phase == "Running")
        return self.progressing(f"{label}: analysis running ({running})")

    def background(self, index: int) -> None:
        """Start the background analysis runs once the rollout reaches their starting step."""
        canary = self.spec.strategy.canary if self.spec.strategy else None
        if canary is None or canary.analysis is None or index < canary.analysis.starting_step:
            return
        self.ensure_runs([t.template_name for t in canary.analysis.templates], None)

    def stop_background(self) -> None:
        """The rollout finished: background runs still Running end Successful, as in Argo."""
        finished = [
            r.model_copy(
                update={
                    "phase": "Successful",
                    "finished_at": rfc3339(self.now),
                    "message": f"stopped when the rollout finished, after {taken(r)} "
                    "measurement(s), none over its limits",
                }
            )
            if r.step_index is None and r.phase == "Running"
            else r
            for r in self.results()
        ]
        self.status.analysis_results = finished or None

    def measurements_due(self) -> None:
        """Wake when the next measurement of a running analysis of the canary falls due. One
        due already was tried before planning and waits for an event (its Job finishing, a
        canary pod serving), unless its run started in this pass or was measured in it (taken
        late, the next one is due at once: nothing else would come to take it)."""
        status = self.status
        if self.seen.overlap is not None or status.abort:
            return
        templates = {t.name: t for t in self.spec.analysis_templates or []}
        for run in status.analysis_results or []:
            template = templates.get(run.template_name)
            due = next_due(run, template) if template else None
            if due is None or run.version != status.canary_version:
                continue
            if due > self.now:
                self.wake(due)
            elif (
                run in self.started_runs
                or (run.template_name, run.step_index) in self.seen.measured
            ):
                # a new run, or one measured late (the next is due already): no event is coming
                self.wake(self.now)

    def deadlines_of_moved(self) -> None:
        """Wake at the progress deadline of the pods this pass moves to the canary (the pods
        already on their way were woken for in :meth:`failure`)."""
        canary = self.status.canary_version
        if canary is None or self.status.abort or self.seen.overlap is not None:
            return
        deadline = timedelta(seconds=self.spec.progress_deadline_seconds + 1)
        if canary in self.pod_versions.values():
            self.wake(self.now + deadline)

    def all_serve(self, ref: str) -> bool:
        return len(self.serving(ref)) == len(self.seen.pods) and all(
            p.wanted == ref for p in self.seen.pods
        )

    def count_line(self, ref: str) -> str:
        return f"{len(self.serving(ref))}/{len(self.seen.pods)} pods serve {ref}"

    def progressing(self, message: str) -> _Outcome:
        return _Outcome("Progressing", "RolloutProgressing", message)


def _weight_before(steps: Sequence[CanaryStep], index: int) -> int:
    """The canary weight in force at ``index``: the last setWeight before it (0 if none)."""
    weights = [s.set_weight for s in steps[:index] if s.set_weight is not None]
    return weights[-1] if weights else 0


def plan(
    spec: ModelDeploymentSpec,
    status: ModelDeploymentStatus | None,
    observed: Observed,
    now: datetime,
) -> Plan:
    """What to do next for one ModelDeployment: see the module docstring for the semantics."""
    work = _Pass(spec, status or ModelDeploymentStatus(), observed, now)
    outcome = work.run()
    work.measurements_due()
    work.deadlines_of_moved()
    new = work.status
    new.phase = outcome.phase
    new.message = outcome.summary or outcome.message
    new.observed_generation = observed.generation
    new.total_pods = len(observed.pods)
    rolled_to = new.canary_version or spec.version
    new.updated_pods = len(work.serving(rolled_to))
    new.ready_pods = sum(1 for p in observed.pods if p.ready)
    new.conditions = _conditions(new.conditions, outcome, observed.generation, now)
    if _changed_phase(status, new):
        told = {event.reason for event in work.events}
        work.events.extend(e for e in _phase_event(new) if e.reason not in told)
    return Plan(
        status=new,
        pod_versions=work.pod_versions,
        events=tuple(work.events),
        handled_requests=tuple(work.handled),
        wake_at=min(work.wakes, default=None),
        pod_keys={} if observed.overlap is not None else key_changes(spec, observed.pods),
        seed_among=seed_candidates(observed.pods, work.pod_versions, work.aliases),
    )


def key_changes(spec: ModelDeploymentSpec, pods: Sequence[PodView]) -> dict[str, str | None]:
    """Pod name -> the verify-keys annotation it must carry (None: removed), for the pods whose
    annotation differs from spec.verification."""
    keys = verify_keys_value(spec.verification.public_keys) if spec.verification else None
    return {pod.name: keys for pod in pods if pod.verify_keys != keys}


def invalid_spec_status(
    before: Mapping[str, Any] | None,
    generation: int,
    message: str,
    now: str,
    reason: str = INVALID_SPEC,
) -> ModelDeploymentStatus:
    """Degraded with ``reason``, and kstatus' Ready=False and Stalled=True: InvalidSpec when the
    object does not parse (stored under an older CRD, or by an API server without the CRD's CEL
    rules), PolicyDenied when the admin's policy refuses what it asks for. What the rollout
    remembered (stable version, history) is kept for when the spec is fixed."""
    try:
        previous = ModelDeploymentStatus.model_validate(before or {})
    except ValueError:
        previous = ModelDeploymentStatus()
    outcome = _Outcome("Degraded", reason, message)
    conditions = _conditions(previous.conditions, outcome, generation, parse_rfc3339(now))
    return previous.model_copy(
        update={
            "phase": "Degraded",
            "message": message,
            "observed_generation": generation,
            "conditions": conditions,
        }
    )


def _changed_phase(before: ModelDeploymentStatus | None, after: ModelDeploymentStatus) -> bool:
    return (before.phase if before else None) != after.phase


def _phase_event(status: ModelDeploymentStatus) -> list[Event]:
    """An event when the deployment becomes Degraded for a reason no other event told."""
    degraded = cond.find_condition(status.conditions, cond.DEGRADED)
    if status.phase != "Degraded" or status.abort or degraded is None:
        return []
    return [Event("Warning", degraded.reason, degraded.message)]


def _conditions(
    previous: list[Condition] | None, outcome: _Outcome, generation: int, now: datetime
) -> list[Condition]:
    """Ready/Progressing/Degraded, plus Reconciling/Stalled mirroring them for kstatus."""
    phase, reason, message = outcome.phase, outcome.reason, outcome.message
    moving = phase in ("Progressing", "Paused")
    values: list[tuple[str, Literal["True", "False"]]] = [
        (cond.READY, "True" if phase == "Healthy" else "False"),
        (cond.PROGRESSING, "True" if moving else "False"),
        (cond.RECONCILING, "True" if moving else "False"),
        (cond.DEGRADED, "True" if phase == "Degraded" else "False"),
        (cond.STALLED, "True" if phase == "Degraded" else "False"),
    ]
    conditions = list(previous or [])
    for type_, value in values:
        conditions = cond.set_condition(
            conditions,
            type_,
            value,
            reason,
            message,
            observed_generation=generation,
            now=rfc3339(now),
        )
    return conditions
