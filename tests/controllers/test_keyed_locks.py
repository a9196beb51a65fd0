"""The per-object reconcile locks (one holder per key, different keys apart, nothing kept), and
what a deleted ModelDeployment leaves in the operator: nothing."""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import Any

from deltaroll.controllers.keyed_locks import KeyedLocks


def _hold_in_thread(locks: KeyedLocks, key: Hashable, entered: threading.Event) -> threading.Thread:
    def run() -> None:
        with locks.hold(key):
            entered.set()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_second_holder_of_a_key_waits_and_another_key_does_not() -> None:
    locks = KeyedLocks()
    same, other = threading.Event(), threading.Event()
    with locks.hold(("ns", "a")):
        waiting = _hold_in_thread(locks, ("ns", "a"), same)
        free = _hold_in_thread(locks, ("ns", "b"), other)
        assert other.wait(10), "a reconcile of another object was blocked"
        free.join(10)
        assert not same.wait(0.3), "two reconciles of one object ran at once"
        assert len(locks) == 1  # ("ns", "a"): held, and waited for; ("ns", "b") gone
    assert same.wait(10)
    waiting.join(10)


def test_no_lock_is_kept_for_objects_no_longer_reconciled() -> None:
    """The operator lives for months while ModelDeployments come and go: the table must not
    grow with every object it ever reconciled (a defaultdict of locks did)."""
    locks = KeyedLocks()
    for index in range(1000):
        with locks.hold(("ns", f"md-{index}")):
            pass
    assert len(locks) == 0
    entered = threading.Event()
    with locks.hold(("ns", "a")):
        thread = _hold_in_thread(locks, ("ns", "a"), entered)
        assert not entered.wait(0.1)
    thread.join(10)
    assert entered.is_set() and len(locks) == 0


def test_an_exception_inside_releases_the_key() -> None:
    locks = KeyedLocks()
    try:
        with locks.hold("k"):
            raise RuntimeError("reconcile failed")
    except RuntimeError:
        pass
    assert len(locks) == 0
    with locks.hold("k"):
        assert len(locks) == 1


def test_a_deleted_modeldeployment_leaves_no_state_in_the_operator() -> None:
    """What the last reconcile read of its pods, and its lock, go with it."""
    from deltaroll.controllers.modeldeployment import handlers

    key = ("team-a", "gone")
    handlers._pods_read[key] = {"gone-0": 1}
    indexes: dict[str, dict[Any, Any]] = dict.fromkeys(
        ("deployment_selectors", "deployment_rollouts", "deployments_yielding"), {}
    )
    on_event: Any = handlers.modeldeployment_event  # Kopf's decorator types it as a watcher
    on_event(
        event={"type": "DELETED"},
        namespace=key[0],
        body={"metadata": {"name": key[1]}},
        name=key[1],
        modeldelta_versions={},
        **indexes,
    )
    assert key not in handlers._pods_read
    assert len(handlers._locks) == 0
