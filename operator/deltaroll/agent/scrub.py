"""The background scrub: the full check that no longer runs on the apply path.

An in-place apply trusts the checkpoint's state record and reads only what changes, so nothing
on the version path reads the rest of the weights again. The scrub does, slowly: in a thread of
its own it re-hashes every tensor (and auxiliary file) of the served checkpoint at
``--scrub-rate`` bytes per second and compares each with the digest it must have.

- **Digests.** From the checkpoint's trusted-state record, read as written (its seal checked,
  its file fingerprints not: a byte flipped by a write moves the ctime, but the scrub's point is
  the bytes). The record is used only if its digests hash to the very version id the pod
  serves, which the store vouches for; so the scrub needs no store round-trip and runs while the
  store is down. Where no record exists (NFS, FUSE) the pass still ends with the version id
  recomputed from what it hashed, and a different id is a mismatch (naming the checkpoint, as no
  tensor can be named).
- **Cadence.** One full pass, a rest of ``--scrub-interval`` seconds, the next pass; a pass over
  a large model takes hours at the default rate, so in practice it runs all the time.
- **Never in the way.** The reconcile loop tells a :class:`ScrubGate` which version it serves,
  and holds it before it touches the weights. A hold stops the pass at its next window (a sleep
  is cut short) and a pass only counts what was hashed without a hold in between, so bytes half
  patched by an apply are never reported; after a version change the pass restarts from the
  beginning, since the bytes changed.
- **A mismatch** is posted to the gate; the loop (the only one that acts on the pod) takes the
  pod out of its Service, names the tensor and rebuilds from the nearest anchor.

Memory stays one read window (:func:`~deltaroll.checkpoint.digests.stored_tensor_digest`;
auxiliary files, config and tokenizer, are small and read whole); the pacing is here, so the
checkpoint layer never sleeps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from deltaroll.agent.errors import AgentError
from deltaroll.agent.metrics import AgentMetrics
from deltaroll.checkpoint.digests import stored_tensor_digest, tensor_digest, version_of
from deltaroll.checkpoint.errors import CheckpointError
from deltaroll.checkpoint.reader import Checkpoint, open_checkpoint
from deltaroll.checkpoint.state import TrustedState, load_state

log = structlog.get_logger(__name__)


class ScrubInterruptedError(AgentError):
    """The loop held the weights (an apply, a new version) while a pass was reading them."""


@dataclass(frozen=True)
class ScrubMismatch:
    """What a pass found wrong with ``version`` on disk; ``message`` names the tensor or file."""

    version: str
    message: str


class ScrubGate:
    """Where the reconcile loop and the scrub thread meet; the only state they share.

    The loop calls :meth:`serve` while the engine holds a verified version and :meth:`hold`
    before anything may touch the weights; each change starts a new *generation*, and a pass
    belongs to one. The scrub waits in :meth:`next_pass`, rests in :meth:`rest` (cut short by a
    new generation) and posts with :meth:`post`; the loop takes a finding with :meth:`take`.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._serving: str | None = None
        self._generation = 0
        self._finding: ScrubMismatch | None = None
        self._closed = False

    def serve(self, version: str) -> None:
        """The engine holds ``version``, verified, on disk (a no-op when already so)."""
        with self._changed:
            if self._serving != version:
                self._serving = version
                self._new_generation()

    def hold(self) -> None:
        """The weights are about to change: stop any pass, drop a finding about the old bytes."""
        with self._changed:
            if self._serving is not None:
                self._serving = None
                self._new_generation()

    def close(self) -> None:
        """The agent is stopping: the scrub thread returns."""
        with self._changed:
            self._closed = True
            self._new_generation()

    def take(self) -> ScrubMismatch | None:
        """The finding of the current generation, once."""
        with self._changed:
            finding, self._finding = self._finding, None
            return finding

    def next_pass(self, timeout: float | None = None) -> tuple[str, int] | None:
        """Wait until a version is served; (version, generation), or None once closed (or after
        ``timeout`` seconds with nothing served)."""
        with self._changed:
            self._changed.wait_for(lambda: self._closed or self._serving is not None, timeout)
            if self._closed or self._serving is None:
                return None
            return self._serving, self._generation

    def current(self, generation: int) -> bool:
        """Whether nothing was held or served anew since ``generation`` began."""
        with self._changed:
            return self._generation == generation and not self._closed

    def rest(self, generation: int, seconds: float) -> bool:
        """Sleep up to ``seconds``; False, at once, when ``generation`` is over."""
        with self._changed:
            self._changed.wait_for(lambda: self._generation != generation, seconds)
            return self._generation == generation and not self._closed

    def post(self, finding: ScrubMismatch, generation: int) -> bool:
        """Hand the loop a finding, unless the weights were held since the pass began."""
        with self._changed:
            if self._generation != generation or self._closed:
                return False
            self._finding = finding
            return True

    def _new_generation(self) -> None:
        self._generation += 1
        self._finding = None
        self._changed.notify_all()


class Pacer:
    """Keeps a pass at ``rate`` bytes/s on average since it began: after each window it sleeps
    until the bytes read so far are due (zero seconds when behind, which still asks whether
    to go on). ``sleep`` returns False to stop the pass."""

    def __init__(
        self, rate: int, clock: Callable[[], float], sleep: Callable[[float], bool]
    ) -> None:
        self.rate = rate
        self._clock, self._sleep = clock, sleep
        self._began = clock()
        self.bytes = 0

    def consumed(self, nbytes: int) -> None:
        self.bytes += nbytes
        ahead = self.bytes / self.rate - (self._clock() - self._began)
        if not self._sleep(max(ahead, 0.0)):
            raise ScrubInterruptedError("the weights were held during the pass")


class Scrubber:
    """Re-hashes the weights directory in passes (see the module docstring)."""

    def __init__(
        self,
        weights: Path,
        gate: ScrubGate,
        *,
        rate: int,
        interval_s: float,
        metrics: AgentMetrics,
        clock: Callable[[], float] = time.monotonic,
        rest: Callable[[int, float], bool] | None = None,
    ) -> None:
        if rate <= 0:
            raise ValueError("a scrub needs a positive rate (0 means: do not start one)")
        self.weights = weights
        self.gate = gate
        self.rate = rate
        self.interval_s = interval_s
        self.metrics = metrics
        self._clock = clock
        self._rest = rest or gate.rest

    def run(self) -> None:
        """Pass after pass until the gate is closed."""
        log.info("agent.scrub_started", rate=self.rate, interval_s=self.interval_s)
        while (job := self.gate.next_pass()) is not None:
            version, generation = job
            try:
                finished = self.scrub_once(version, generation)
            except Exception:  # a bug must not end the scrub silently: say so, try again later
                log.exception("agent.scrub_unexpected_error", version=version)
                finished = True
            if finished:
                self._rest(generation, self.interval_s)
        log.info("agent.scrub_stopped")

    def scrub_once(self, version: str, generation: int) -> bool:
        """One pass over ``version``; True if it ran to its end (clean or a mismatch posted),
        False if the weights were held meanwhile (the next pass starts afresh)."""
        pacer = Pacer(self.rate, self._clock, lambda seconds: self._rest(generation, seconds))
        try:
            mismatch = self._compare(version, pacer)
        except ScrubInterruptedError:
            return False
        except (CheckpointError, OSError) as exc:  # unreadable or truncated: corrupt as well
            mismatch = ScrubMismatch(version, f"the weights of {version} cannot be read: {exc}")
        finally:
            self.metrics.scrub_bytes.inc(pacer.bytes)
        if not self.gate.current(generation):
            return False  # what was read may be an apply's half-written bytes: not a finding
        if mismatch is None:
            self.metrics.scrub_passes.inc()
            self.metrics.scrub_last_pass.set_to_current_time()
            log.debug("agent.scrub_pass_clean", version=version, bytes=pacer.bytes)
            return True
        if self.gate.post(mismatch, generation):
            self.metrics.scrub_mismatches.inc()
            log.error("agent.scrub_mismatch", version=version, error=mismatch.message)
        return True

    def _compare(self, version: str, pacer: Pacer) -> ScrubMismatch | None:
        checkpoint = open_checkpoint(self.weights)
        record = recorded_digests(checkpoint, version)
        tensors: dict[str, str] = {}
        for name, ref in checkpoint.tensors.items():
            tensors[name] = stored_tensor_digest(ref, on_window=pacer.consumed)
            if record is not None and tensors[name] != record.tensors[name]:
                return ScrubMismatch(
                    version,
                    f"tensor {name!r} in {ref.path.name} does not match version {version} "
                    f"(BLAKE3 {tensors[name][:16]}..., expected {record.tensors[name][:16]}...)",
                )
        files: dict[str, str] = {}
        for name, path in checkpoint.aux_files.items():
            data = path.read_bytes()
            files[name] = tensor_digest(data)
            pacer.consumed(len(data))
            if record is not None and files[name] != record.files[name]:
                return ScrubMismatch(version, f"file {name!r} does not match version {version}")
        found = version_of(checkpoint, tensors, files)
        if found != version:
            return ScrubMismatch(
                version,
                f"the weights hash to version {found}, not {version} (no state record "
                "names the tensor)",
            )
        return None


def recorded_digests(checkpoint: Checkpoint, version: str) -> TrustedState | None:
    """The checkpoint's state record if its digests make up exactly ``version`` (so they are
    the digests the store vouches for); None otherwise, and the pass relies on the id alone."""
    record = load_state(checkpoint.path)
    if record is None or record.version != version:
        return None
    if set(record.tensors) != set(checkpoint.tensors) or set(record.files) != set(
        checkpoint.aux_files
    ):
        return None
    if version_of(checkpoint, record.tensors, record.files) != version:
        log.warning("agent.scrub_record_unbound", version=version)
        return None
    return record
