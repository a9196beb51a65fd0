"""The agent's reconcile loop: a small state machine from "serve version N" to verified weights.

One pass (:meth:`Agent.reconcile_once`) reads the wanted version, and moves the pod one whole
stretch towards it::

    Idle ──annotation──▶ Pulling ──objects verified──▶ Applying ──weights verified──▶ Reloading
                            │  ▲                                                        │
            store down:     └──┘ back off, old version still served         engine holds it
                                                                                        ▼
    Failed ◀── corrupt delta, no path, unsigned version, engine refuses ────────────── Ready
   ▲                                                                                    │
   └─────── the scrub finds the served bytes corrupt: discarded, rebuilt from an anchor ┘

Passing failures (store or engine unreachable, the API server down) keep the state, report the
error and back off; anything else is Failed with the error's message, retried only after
``failed_retry_s`` or when the wanted version changes. A pull gives way to a newer annotation
(an aborted rollout, a moved spec.version): the annotations file is read again before each object
and before applying, and a superseded pull stops, keeps what it downloaded in the cache, stays
Pulling ("superseded by ...") and the next pass starts at once; once Applying, a pass runs to its
end (the apply is journaled). A name in the annotation is resolved once per value (the operator
writes version ids). The pod condition ``deltaroll.dev/weights-ready`` is True only while the
engine holds the version on disk, verified; it turns False (and the API server has confirmed it)
before the weights are touched.

The background scrub (:mod:`deltaroll.agent.scrub`, its own thread) learns through
:attr:`Agent.scrub` which version is served and when the weights are about to change; a
mismatch it posts is taken at the start of a pass: the pod reports Failed naming the tensor
(not Ready: out of its Service), the state record and the weights are discarded, and the same
pass pulls the version again from the nearest anchor.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog

from deltaroll.agent.config import AgentConfig
from deltaroll.agent.errors import AgentError, PullSupersededError, ReportError
from deltaroll.agent.fetch import Transferred, fetched_objects, prune_cache
from deltaroll.agent.live_change import InMemorySteps, ServedCheck, reload_change
from deltaroll.agent.metrics import AgentMetrics, process_io
from deltaroll.agent.patching import (
    OrphanedApplyError,
    apply_plan,
    check_plan,
    finish_apply,
    interrupted_step,
)
from deltaroll.agent.peer_fetch import PeerFetcher
from deltaroll.agent.report import Report, Reporter
from deltaroll.agent.scrub import ScrubGate, ScrubMismatch
from deltaroll.agent.trust import VersionTrust
from deltaroll.agent.volume import WeightsVolume
from deltaroll.agent.wanted import read_wanted, read_wanted_version
from deltaroll.api.agent_state import AgentState
from deltaroll.api.weight_change import WeightChange
from deltaroll.checkpoint.aux_policy import AuxPolicy
from deltaroll.checkpoint.errors import CheckpointError, CorruptDeltaError
from deltaroll.checkpoint.state import forget_state
from deltaroll.engines import (
    EngineClient,
    EngineError,
    EngineReloadError,
    EngineUnreachableError,
    LivePatchingEngine,
)
from deltaroll.errors import DeltarollError
from deltaroll.redact import scrub
from deltaroll.store import (
    Store,
    StoreAccessError,
    TransferCancelledError,
    TransientStoreError,
)
from deltaroll.store.graph import Plan
from deltaroll.store.name_sequences import NameSequences
from deltaroll.store.node_cache import NodeCacheClient
from deltaroll.store.signatures import SignedTarget

log = structlog.get_logger(__name__)

#: Failures that pass by themselves: keep the state, report the error, back off, try again.
PASSING_FAILURES: tuple[type[Exception], ...] = (
    TransientStoreError,
    StoreAccessError,
    EngineUnreachableError,
    ReportError,
)


class EngineVersionMismatchError(EngineError):
    """The engine accepted a reload but reports another version than the one on disk."""


class Agent:
    """One pod's agent. Not thread-safe: one loop drives it; the health server only reads."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        store: Store,
        engine: EngineClient,
        reporter: Reporter,
        metrics: AgentMetrics | None = None,
        peers: PeerFetcher | None = None,
        clock: Callable[[], float] = time.monotonic,
        node_cache: NodeCacheClient | None = None,
    ) -> None:
        self.config = config
        self.peers = peers
        self.store = store
        self.engine = engine
        self.reporter = reporter
        self.metrics = metrics or AgentMetrics()
        self.node_cache = node_cache
        if node_cache is not None:
            node_cache.on_node_bytes = self.metrics.node_cache_bytes.inc
        self.volume = WeightsVolume(config.weights_dir, config.cache_dir)
        self.scrub = ScrubGate()  # shared with the scrub thread, if one runs
        self.trust = VersionTrust(
            config.verify_keys,
            config.annotations_file,
            namespace=config.pod_namespace,
            sequences=NameSequences(self.volume.name_sequences),
        )
        self.aux_policy = AuxPolicy(tuple(config.allow_aux_files), config.allow_auto_map)
        self._clock = clock
        self.state = AgentState.IDLE
        self.message = ""
        self.wanted: str | None = None
        self.seed_among: tuple[str, ...] = ()  # the pods named with it to seed its objects
        self.disk_settled = False  # recovery done and disk_version known
        self.disk_version: str | None = None  # verified version on the weights volume
        self.engine_version: str | None = None  # verified in the engine, for the weights on disk
        self.had_weights = False  # a verified version was on disk at least once (/healthz)
        self.labelled: str | None = None  # the version label this process gave the engine
        self._resolved: tuple[str, str] | None = None  # (annotation value, version id)
        self._failed: tuple[str | None, float] | None = None  # (wanted, when)
        self._attempt = 0
        self._change_started: float | None = None
        self._engine_checked = float("-inf")
        self.cache_kept: frozenset[str] = frozenset()  # held in the cache for a rollback
        # In-memory changes (an engine that patches its weights in memory): the steps of the
        # apply under way (the pod stays in its Service meanwhile), those of the last one, why
        # the last change reloaded instead, and when the pod last left its Service.
        self._live: InMemorySteps | None = None
        self._changed_live: InMemorySteps | None = None
        self._reload_reason = ""
        self._out_of_service_since: float | None = None
        self._change_recorded = False
        self.last_change: WeightChange | None = None
        self._served_check = (
            ServedCheck(engine, self.volume.weights)
            if isinstance(engine, LivePatchingEngine)
            else None
        )

    # ------------------------------------------------------------------ the loop

    def run(self, stop: threading.Event) -> None:
        """Reconcile until ``stop`` is set."""
        log.info("agent.started", model=self.config.model, weights=str(self.volume.weights))
        while not stop.is_set():
            stop.wait(self.reconcile_once())
        log.info("agent.stopped", state=self.state.value, version=self.engine_version)

    def reconcile_once(self) -> float:
        """One pass; returns how long to wait before the next."""
        wanted: str | None = None
        try:
            told = read_wanted(self.config.annotations_file)
            wanted, self.seed_among = told.version, told.seed_among
            self.wanted = wanted
            finding = self.scrub.take()  # even while a failed version waits: corrupt is urgent
            if finding is not None and finding.version == self.disk_version:
                self._discard_corrupt(finding)
            if self._waiting_after_failure(wanted):
                return self.config.poll_interval_s
            self._settle_disk()
            if wanted is None:
                self._report(AgentState.IDLE, "the pod has no deltaroll.dev/version annotation")
            else:
                self._converge(wanted)
            self._attempt = 0
            return self.config.poll_interval_s
        except PullSupersededError as exc:
            return self._superseded(exc)
        except PASSING_FAILURES as exc:
            return self._back_off(exc)
        except DeltarollError as exc:
            self._fail(wanted, str(exc))
        except Exception as exc:  # a bug or the disk (ENOSPC): say so, keep the loop alive
            log.exception("agent.unexpected_error")
            self._fail(wanted, f"{type(exc).__name__}: {exc}")
        return self.config.poll_interval_s

    def healthz(self) -> tuple[bool, dict[str, Any]]:
        """For ``/healthz``: healthy once a verified version has been on disk."""
        return self.had_weights, {
            "healthy": self.had_weights,
            "state": self.state.value,
            "message": scrub(self.message),
            "wanted": self.wanted,
            "disk_version": self.disk_version,
            "current_version": self.engine_version,
            "last_change": self.last_change.model_dump() if self.last_change else None,
        }

    # ------------------------------------------------------------------ stages

    def _settle_disk(self) -> None:
        """After a (re)start: finish a swap or an in-place apply a crash interrupted, then learn
        which version is on disk and whether the engine already holds it."""
        if self.disk_settled:
            return
        self.volume.recover()
        unfinished = self.volume.unfinished_apply()
        if unfinished is not None:
            self.engine_version = None
            self._report(
                AgentState.APPLYING,
                f"finishing the interrupted apply {unfinished.from_version} -> "
                f"{unfinished.to_version}",
            )
            try:
                step = interrupted_step(self.store, self.config.model, unfinished)
            except OrphanedApplyError as exc:
                log.warning("agent.orphaned_apply", error=str(exc))
                self.volume.discard_weights()
            else:
                with fetched_objects(
                    self.store,
                    self.config.model,
                    [step],
                    peers=self.peers,
                    wanted=self.wanted,
                    seed_among=self.seed_among,
                    node_cache=self.node_cache,
                ) as moved:
                    self._count(moved)
                    try:
                        finish_apply(self.store, step, self.volume, self.aux_policy)
                    except CorruptDeltaError as exc:  # refused: never resumed, rebuilt instead
                        log.error("agent.interrupted_apply_refused", error=str(exc))
                        self.volume.discard_weights()
                    else:
                        self.metrics.applied_deltas.labels(step.kind).inc()
        try:
            self.disk_version = self.volume.version()
        except CheckpointError as exc:  # not ours to keep: rebuilt from the store
            log.warning("agent.unusable_weights", error=str(exc))
            self.volume.discard_weights()
            self.disk_version = None
        self.had_weights = self.had_weights or self.disk_version is not None
        if unfinished is None and self.disk_version is not None:
            self.engine_version = self._engine_holds(self.disk_version)
        self.disk_settled = True
        log.info("agent.disk_settled", version=self.disk_version, engine=self.engine_version)

    def _discard_corrupt(self, finding: ScrubMismatch) -> None:
        """The served bytes are not their version's: forget the record (so no restart trusts
        it), leave the Service, drop the copy; the pass then pulls from the nearest anchor."""
        log.error("agent.weights_corrupt", version=finding.version, error=finding.message)
        self.engine_version = self.disk_version = None
        self._change_started = None
        self._failed = None  # the rebuild is no retry of a failed version: it starts now
        forget_state(self.volume.weights)
        self._report(
            AgentState.FAILED, f"scrub: {finding.message}; rebuilding from the nearest anchor"
        )
        self.volume.discard_weights()

    def _converge(self, wanted: str) -> None:
        if wanted == self.disk_version:
            target = wanted
        elif self._resolved is not None and self._resolved[0] == wanted:
            target = self._resolved[1]
        else:  # a new annotation: the store says which version it means
            self._report(AgentState.PULLING, f"fetching the deltas to {wanted}")
            target = self.store.resolve(self.config.model, wanted)
            self._resolved = (wanted, target)
        # Even the version on disk: a pod that requires signatures serves nothing unsigned.
        signed = self.trust.check(self.store, self.config.model, wanted, target)
        if self.disk_version != target:
            if self._change_started is None:
                self._change_started = self._clock()
                self._change_recorded = False
            self._change_to(target, signed)
        elif self.state is AgentState.READY and self._engine_check_due():
            self.engine_version = self._engine_holds(target, keep_if_unreachable=True)
            self._check_served_copy(target)
        if self.engine_version != target:
            self._report(AgentState.RELOADING, f"the engine is loading {target}")
            self._reload(target)
        if self._change_started is not None and not self._change_recorded:
            self._record_change(target)  # once, even if the report below must be retried
            self._change_recorded = True
        self._report(AgentState.READY)
        if self._change_started is not None:
            self.metrics.version_changes.observe(self._clock() - self._change_started)
            self._change_started = None
            # Off the pause path: the pod already serves; the next apply trusts the record.
            self.volume.make_durable()

    def _change_to(self, target: str, signed: SignedTarget | None) -> None:
        """Pull the deltas on the cheapest path, then apply them to the weights volume."""
        # As the pod was told (the name, once resolved): the same words as before the
        # resolve send nothing, where the id cost every pod two more writes per version.
        self._report(AgentState.PULLING, f"fetching the deltas to {self.wanted or target}")
        have = [self.disk_version] if self.disk_version else []
        plan = self.store.plan(self.config.model, target, have)

        def superseded() -> bool:
            return self._wanted_now() not in (self.wanted, target)

        try:
            with fetched_objects(
                self.store,
                self.config.model,
                plan.steps,
                should_stop=superseded,
                peers=self.peers,
                wanted=self.wanted,
                seed_among=self.seed_among,
                node_cache=self.node_cache,
            ) as moved:
                self._count(moved)
                log.info(
                    "agent.fetched",
                    target=target,
                    path=plan.path,
                    downloaded_bytes=moved.bucket_bytes,
                    peer_bytes=moved.peer_bytes,
                )
                if superseded():  # the last objects were in flight when the annotation moved
                    raise PullSupersededError(target, self._wanted_now())
                # A delta it cannot apply, or one that does not produce the signed content,
                # leaves the served version as it is.
                check_plan(self.store, plan, signed)
                self._apply(target, plan)
        except TransferCancelledError as exc:
            self.metrics.downloaded_bytes.inc(exc.received)
            raise PullSupersededError(target, self._wanted_now()) from exc
        self.cache_kept = prune_cache(
            self.store, plan, self.cache_kept, keep_anchors=self.peers is not None
        )

    def _apply(self, target: str, plan: Plan) -> None:
        """Apply a fetched and checked plan to the weights volume (and, step by step, to the
        engine's memory when it can: then the pod keeps serving its version meanwhile)."""
        self._live = self._in_memory_steps(plan)
        if self._live is None:
            self.engine_version = None  # from here on the weights are not a verified version
        self.disk_settled = False  # a failure below is settled again on the next pass
        self.disk_version = None  # before the report: it holds the scrub off the disk
        self._report(AgentState.APPLYING, f"applying {len(plan.steps)} delta(s) to reach {target}")
        read_before, written_before = process_io()
        started = self._clock()
        try:
            apply_plan(self.store, plan, self.volume, self.aux_policy, on_step=self._live)
        finally:
            if self._live is not None:
                self.engine_version = self._live.serving
                self._reload_reason = self._live.refused or ""
            self._changed_live, self._live = self._live, None
        self.metrics.apply_seconds.observe(self._clock() - started)
        read_after, written_after = process_io()
        self.metrics.bytes_read.inc(read_after - read_before)
        self.metrics.bytes_written.inc(written_after - written_before)
        for step in plan.steps:
            self.metrics.applied_deltas.labels(step.kind).inc()
        self.disk_version = target
        self.disk_settled = self.had_weights = True

    def _in_memory_steps(self, plan: Plan) -> InMemorySteps | None:
        """The in-memory path for ``plan``, when the engine has one and holds its start."""
        if not isinstance(self.engine, LivePatchingEngine):
            self._reload_reason = f"the {self.engine.kind} engine reloads from disk"
        elif plan.start is None:
            self._reload_reason = "the plan starts from an anchor"
        elif self.engine_version != plan.start or self.disk_version != plan.start:
            self._reload_reason = "the engine did not serve the plan's start version"
        else:
            return InMemorySteps(self.engine, plan.start)
        return None

    def _record_change(self, target: str) -> None:
        """What this version change cost, for the pod's annotation and the metrics."""
        live, self._changed_live = self._changed_live, None
        change = live.change() if live is not None else None
        if change is None or change.version != target:
            since = self._out_of_service_since
            pause = self._clock() - since if since is not None else 0.0
            reason = self._reload_reason or "the engine did not hold the version on disk"
            change = reload_change(target, self.volume.weights, pause, reason)
        self.last_change = change
        self.metrics.pause_seconds.labels(change.method).observe(change.pause_s)
        self.metrics.change_bytes.labels(change.method).inc(change.bytes_applied)
        log.info("agent.version_changed", **change.model_dump())

    def _check_served_copy(self, target: str) -> None:
        """Compare a slice of the engine's live tensors with the version's digests; a copy
        that differs is reloaded from the disk (which the scrub proves)."""
        if self._served_check is None or self.engine_version != target:
            return
        why = self._served_check.mismatch(target)
        if why is not None:
            log.error("agent.served_copy_differs", version=target, error=why)
            self.metrics.served_mismatches.inc()
            self.engine_version = None
            self._reload_reason = f"served copy check: {why}"

    def _reload(self, target: str) -> None:
        try:
            self.engine.reload(self.volume.weights, version=target)
        except EngineUnreachableError:
            self.metrics.reloads.labels("unreachable").inc()
            raise
        except EngineReloadError:
            self.metrics.reloads.labels("refused").inc()
            raise
        loaded = self.engine.loaded_version()
        if loaded is not None and loaded != target:
            self.metrics.reloads.labels("refused").inc()
            raise EngineVersionMismatchError(
                f"the engine at {self.engine.endpoint} reloaded {self.volume.weights} but "
                f"reports version {loaded}, not {target}; check that it loads that directory"
            )
        self.metrics.reloads.labels("ok").inc()
        self.labelled = target
        log.info("agent.reloaded", engine=self.engine.endpoint, version=target)
        self.engine_version = target
        self._engine_checked = self._clock()

    # ------------------------------------------------------------------ helpers

    def _engine_holds(self, version: str, *, keep_if_unreachable: bool = False) -> str | None:
        """``version`` if the engine says it holds exactly that, else None."""
        self._engine_checked = self._clock()
        try:
            loaded = self.engine.loaded_version()
        except EngineError:
            return self.engine_version if keep_if_unreachable else None
        if keep_if_unreachable and loaded is None:
            return self.engine_version  # an engine that cannot tell is trusted after a reload
        if not self.engine.version_is_digest and loaded != self.labelled:
            return None  # a label this agent did not set (a restart, another caller): reload
        return version if loaded == version else None

    def _wanted_now(self) -> str | None:
        """The annotation as it is now, for a pass already under way; an unreadable file (it
        is replaced atomically, so rarely) counts as unchanged: the next pass reports it."""
        try:
            return read_wanted_version(self.config.annotations_file)
        except AgentError:
            return self.wanted

    def _superseded(self, exc: PullSupersededError) -> float:
        """A pull given up for a newer annotation: say so, and start the next pass at once."""
        log.info(
            "agent.pull_superseded",
            pulling=exc.target,
            pulling_for=self.wanted,
            superseded_by=exc.wanted,
        )
        self.metrics.pulls_superseded.inc()
        self._attempt = 0
        self._change_started = None
        self._report_quietly(AgentState.PULLING, str(exc))
        return 0.0

    def _count(self, moved: Transferred) -> None:
        self.metrics.downloaded_bytes.inc(moved.bucket_bytes)
        self.metrics.bucket_objects.inc(moved.bucket_objects)
        self.metrics.unpeered_objects.inc(moved.unpeered_objects)

    def _engine_check_due(self) -> bool:
        return self._clock() - self._engine_checked >= self.config.engine_check_s

    def _waiting_after_failure(self, wanted: str | None) -> bool:
        """Whether ``wanted`` failed recently: it is tried again after ``failed_retry_s``, or at
        once when the annotation changes (a rollback, a fixed version)."""
        if self._failed is None:
            return False
        failed_wanted, when = self._failed
        if failed_wanted == wanted and self._clock() - when < self.config.failed_retry_s:
            return True
        self._failed = None
        return False

    def _report(self, state: AgentState, message: str = "") -> None:
        """Record ``state`` and make the pod say it; raises :class:`ReportError`."""
        if (state, message) != (self.state, self.message):
            log.info("agent.state", state=state.value, message=message, wanted=self.wanted)
        self.state, self.message = state, message
        self.metrics.state.state(state.value)
        on_disk = self.engine_version is not None and self.engine_version == self.disk_version
        # An engine serving from memory stays in its Service while the disk is patched.
        ready = on_disk or (self.engine_version is not None and self._live is not None)
        self.metrics.weights_ready.set(1 if ready else 0)
        if on_disk and self.engine_version is not None:
            self.scrub.serve(self.engine_version)
        else:
            self.scrub.hold()  # before the caller touches the weights
        if not ready and self._out_of_service_since is None:
            self._out_of_service_since = self._clock()
        elif ready:
            self._out_of_service_since = None
        self.reporter.publish(
            Report(
                state=state,
                message=message,
                current_version=self.engine_version if ready else None,
                weights_ready=ready,
                last_change=self.last_change,
            )
        )

    def _report_quietly(self, state: AgentState, message: str) -> None:
        try:
            self._report(state, message)
        except ReportError as exc:
            log.warning("agent.report_failed", error=str(exc))

    def _back_off(self, exc: Exception) -> float:
        self._attempt += 1
        ceiling = min(
            self.config.retry_max_s, self.config.retry_initial_s * 2 ** (self._attempt - 1)
        )
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)
        self.metrics.retries.labels(self.state.value).inc()
        log.warning(
            "agent.retrying",
            state=self.state.value,
            error=str(exc),
            attempt=self._attempt,
            delay_s=round(delay, 2),
        )
        if not isinstance(exc, ReportError):
            self._report_quietly(self.state, str(exc))
        return delay

    def _fail(self, wanted: str | None, message: str) -> None:
        self._failed = (wanted, self._clock())
        self._attempt = 0
        self._change_started = None
        if not (self.state is AgentState.FAILED and self.message == message):
            log.error("agent.failed", wanted=wanted, error=message)  # once per failure
            self.metrics.failures.inc()
        self._report_quietly(AgentState.FAILED, message)  # the reporter skips what it sent
