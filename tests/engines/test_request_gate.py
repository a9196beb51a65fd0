"""The reference engine's request gate: the pause is the change's, the drain is reported apart."""

from __future__ import annotations

import threading

from deltaroll.engines.reference.gate import RequestGate


def test_a_request_held_during_the_drain_counts_only_the_change_as_pause() -> None:
    gate = RequestGate()
    in_flight, finish, held_done = threading.Event(), threading.Event(), threading.Event()

    def long_request() -> None:
        with gate.admitted():
            in_flight.set()
            finish.wait()

    def held_request() -> None:
        with gate.admitted():
            held_done.set()

    first = threading.Thread(target=long_request)
    first.start()
    in_flight.wait()
    timings = []

    def change() -> None:
        with gate.closed(drain_timeout_s=10) as timing:
            threading.Event().wait(0.05)  # the change, after the drain
        timings.append(timing)

    closer = threading.Thread(target=change)
    closer.start()
    while not gate._closed:  # the gate is closing: the next request is held
        threading.Event().wait(0.001)
    second = threading.Thread(target=held_request)
    second.start()
    threading.Event().wait(0.3)  # the held request waits through the drain
    assert not held_done.is_set()
    finish.set()
    for thread in (first, closer, second):
        thread.join(10)
    (timing,) = timings
    assert held_done.is_set() and timing.held_requests == 1
    assert timing.drain_s >= 0.3 and timing.held_s >= timing.drain_s + 0.05
    # The pause is the change after the drain, not the wait for the long request.
    assert 0.05 <= timing.pause_s < 0.25


def test_no_request_held_means_no_pause() -> None:
    gate = RequestGate()
    with gate.closed(drain_timeout_s=1) as timing:
        pass
    assert timing.pause_s == 0.0 and timing.held_requests == 0
