"""The operator's schedule of ModelDeployments waiting for time: the last answer per key wins,
None cancels, failures back off, and nothing fires that was not asked for."""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Hashable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from deltaroll.controllers.modeldeployment.wakeups import BACKOFF_S, Wakeups


@pytest.fixture
def fired() -> Iterator[tuple[Wakeups, queue.Queue[Hashable]]]:
    calls: queue.Queue[Hashable] = queue.Queue()
    wakeups = Wakeups(workers=2)
    wakeups.start(calls.put)
    yield wakeups, calls
    wakeups.stop()


def soon(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def test_each_key_fires_once_at_its_last_answer(
    fired: tuple[Wakeups, queue.Queue[Hashable]],
) -> None:
    wakeups, calls = fired
    wakeups.at(("ns", "later"), soon(0.3))
    wakeups.at(("ns", "first"), soon(30))
    wakeups.at(("ns", "first"), soon(0.1))  # replaces the 30 s answer
    wakeups.at(("ns", "past"), soon(-5))  # overdue: now
    got = [calls.get(timeout=5) for _ in range(3)]
    assert got == [("ns", "past"), ("ns", "first"), ("ns", "later")]
    assert wakeups.pending() == {}
    with pytest.raises(queue.Empty):
        calls.get(timeout=0.5)


def test_none_cancels_and_a_filed_time_is_filed_once(
    fired: tuple[Wakeups, queue.Queue[Hashable]],
) -> None:
    wakeups, calls = fired
    at = soon(0.2)
    for _ in range(100):  # every pod event in a long pause gives the same answer
        wakeups.at("paused", at)
    assert len(wakeups._heap) == 1
    wakeups.at("gone", soon(0.1))
    wakeups.at("gone", None)
    assert calls.get(timeout=5) == "paused"
    with pytest.raises(queue.Empty):
        calls.get(timeout=0.5)


def test_a_failed_reconcile_is_retried_with_a_growing_backoff_reset_by_success() -> None:
    wakeups = Wakeups()
    delays = [wakeups.retry("flaky") for _ in range(len(BACKOFF_S) + 1)]
    assert delays == [*BACKOFF_S, BACKOFF_S[-1]]
    assert 0 < wakeups.pending()["flaky"] <= BACKOFF_S[-1]
    wakeups.at("flaky", None)  # reconciled fine: nothing more to do, the backoff starts over
    assert wakeups.pending() == {} and wakeups.retry("flaky") == BACKOFF_S[0]


def test_stop_ends_the_thread_and_a_firing_that_raises_does_not_stop_the_others() -> None:
    wakeups = Wakeups(workers=1)
    done = threading.Event()

    def fire(key: Hashable) -> None:
        if key == "bad":
            raise RuntimeError("boom")
        done.set()

    wakeups.start(fire)
    wakeups.at("bad", soon(0))
    wakeups.at("good", soon(0.05))
    assert done.wait(5)
    wakeups.stop()
    assert not any(t.name.startswith("deltaroll-wakeup") for t in threading.enumerate())


SETTING: contextvars.ContextVar[str] = contextvars.ContextVar("setting")


def test_a_firing_runs_in_the_context_of_the_call_that_filed_it() -> None:
    """Kopf keeps its settings and Event queue in context variables of the handler's task:
    kopf.info() from a woken reconcile failed with a LookupError of Kopf's variable before a
    firing ran in the context of the reconcile that filed it."""
    seen: queue.Queue[tuple[Hashable, str]] = queue.Queue()
    wakeups = Wakeups(workers=2)
    wakeups.start(lambda key: seen.put((key, SETTING.get("missing"))))

    def file(key: str, value: str) -> None:  # as a Kopf handler runs: in its own context
        SETTING.set(value)
        wakeups.at(key, soon(0.05))

    try:
        contextvars.copy_context().run(file, "a", "object a's queue")
        contextvars.copy_context().run(file, "b", "object b's queue")
        got = dict([seen.get(timeout=5), seen.get(timeout=5)])
        assert got == {"a": "object a's queue", "b": "object b's queue"}
    finally:
        wakeups.stop()
