"""Changing the version an engine serves in its memory, and checking what it serves.

An engine that patches its weights in memory (:class:`~deltaroll.engines.LivePatchingEngine`)
keeps serving its verified version while the agent patches the disk; right after each step of
the plan is on disk (its delta directory still there, verified), the engine applies the same
delta in memory behind its request gate. The first refusal ends the in-memory path for this
change: the agent reloads from disk instead, and the reason goes on the pod.

Once weights live in memory, the disk scrub no longer proves what is served: :class:`ServedCheck`
asks the engine for the digests of a few tensors at a time, in rotation, and compares them with
the version's digests (from the weights' trusted-state record, which the scrub keeps honest).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import structlog

from deltaroll.api.weight_change import DISK_RELOAD, IN_MEMORY, WeightChange, short_reason
from deltaroll.checkpoint import open_checkpoint
from deltaroll.checkpoint.state import load_state
from deltaroll.engines import EngineError, LivePatchingEngine
from deltaroll.store.graph import Step

log = structlog.get_logger(__name__)

#: Tensors hashed by the engine per served check (the engine's rate limit bounds it too).
SERVED_CHECK_TENSORS = 16


@dataclass
class InMemorySteps:
    """Called by the apply with each step just applied to disk: applies it in the engine."""

    engine: LivePatchingEngine
    serving: str | None  # the version the engine holds, verified (None: unknown)
    bytes_applied: int = 0
    pause_s: float = 0.0
    drain_s: float = 0.0
    refused: str | None = None

    def __call__(self, step: Step, delta_dir: Path) -> None:
        if self.refused is not None:
            return
        if step.source is None or step.source != self.serving:
            self.refused = "the plan starts from nothing (an anchor): only a reload loads it"
            return
        try:
            result = self.engine.apply_delta(
                delta_dir, from_version=step.source, to_version=step.target, reverse=step.reverse
            )
        except (EngineError, ValueError) as exc:  # ValueError: a reply that is not the contract
            self.refused = str(exc)
            if not getattr(exc, "old_weights_kept", True):
                self.serving = None
            log.warning("agent.in_memory_refused", target=step.target, reason=str(exc))
            return
        self.serving = result.version
        self.bytes_applied += result.bytes_applied
        self.pause_s += result.pause_s
        self.drain_s += result.drain_s
        log.info("agent.applied_in_memory", **result.model_dump(exclude={"success"}))

    def change(self) -> WeightChange | None:
        """The change as the pod reports it, when every step went in memory."""
        if self.refused is not None or self.serving is None:
            return None
        return WeightChange(
            version=self.serving,
            method=IN_MEMORY,
            bytes_applied=self.bytes_applied,
            pause_s=self.pause_s,
            drain_s=self.drain_s,
        )


def reload_change(version: str, weights: Path, pause_s: float, reason: str) -> WeightChange:
    """A change made by reloading the whole model from disk (its bytes all read again)."""
    try:
        model_bytes = sum(ref.nbytes for ref in open_checkpoint(weights).tensors.values())
    except Exception:  # reporting must not fail a change that succeeded
        model_bytes = 0
    return WeightChange(
        version=version,
        method=DISK_RELOAD,
        bytes_applied=model_bytes,
        pause_s=pause_s,
        reason=short_reason(reason),
    )


@dataclass
class ServedCheck:
    """Compares the engine's live tensors with the version's digests, a slice per call."""

    engine: LivePatchingEngine
    weights: Path
    _next: int = 0
    _expected: tuple[str, dict[str, str]] | None = field(default=None, repr=False)

    def mismatch(self, version: str) -> str | None:
        """Why the served copy is not ``version`` (None: the slice checked agrees, or nothing
        could be checked now)."""
        expected = self._digests(version)
        if not expected:
            return None
        names = sorted(expected)
        start = self._next % len(names)
        chosen = (names[start:] + names[:start])[:SERVED_CHECK_TENSORS]
        try:
            served = self.engine.served_digests(chosen, checkpoint=self.weights)
        except EngineError as exc:
            log.info("agent.served_check_skipped", reason=str(exc))
            return None
        if served is None:
            return None  # rate-limited: next time
        self._next = start + len(chosen)
        if served.version != version:
            return f"the engine serves {served.version}, not {version}"
        wrong = [n for n in chosen if served.tensors.get(n) != expected[n]]
        if wrong:
            return (
                f"the engine's copy of tensor {wrong[0]!r} differs from version {version}'s "
                "digest (the served memory changed)"
            )
        return None

    def _digests(self, version: str) -> dict[str, str]:
        if self._expected is not None and self._expected[0] == version:
            return self._expected[1]
        state = load_state(self.weights)  # the record the apply wrote and the scrub keeps honest
        if state is None or state.version != version:
            return {}
        self._expected = (version, dict(state.tensors))
        return self._expected[1]
