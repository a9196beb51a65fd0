"""Condition helpers keep lastTransitionTime for unchanged statuses and record the generation."""

from __future__ import annotations

from deltaroll.api.conditions import (
    find_condition,
    is_condition_true,
    remove_condition,
    set_condition,
)

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:05:00Z"
T2 = "2026-01-01T00:09:00Z"


def test_adding_a_condition() -> None:
    conditions = set_condition(
        [], "Ready", "False", "Computing", "Job running", now=T0, observed_generation=1
    )
    (ready,) = conditions
    assert (ready.type, ready.status, ready.reason, ready.last_transition_time) == (
        "Ready",
        "False",
        "Computing",
        T0,
    )
    assert ready.observed_generation == 1
    assert ready.to_wire() == {
        "type": "Ready",
        "status": "False",
        "reason": "Computing",
        "message": "Job running",
        "lastTransitionTime": T0,
        "observedGeneration": 1,
    }


def test_same_status_keeps_the_transition_time_but_updates_the_rest() -> None:
    first = set_condition([], "Ready", "False", "Pending", "waiting", now=T0, observed_generation=1)
    second = set_condition(
        first, "Ready", "False", "Computing", "Job running", now=T1, observed_generation=2
    )
    (ready,) = second
    assert ready.last_transition_time == T0
    assert (ready.reason, ready.message, ready.observed_generation) == (
        "Computing",
        "Job running",
        2,
    )


def test_changed_status_moves_the_transition_time() -> None:
    conditions = set_condition([], "Ready", "False", "Computing", now=T0)
    conditions = set_condition(conditions, "Ready", "True", "Published", now=T1)
    assert find_condition(conditions, "Ready").last_transition_time == T1
    assert is_condition_true(conditions, "Ready")
    conditions = set_condition(conditions, "Ready", "True", "Published", now=T2)
    assert find_condition(conditions, "Ready").last_transition_time == T1


def test_other_conditions_and_their_order_are_kept() -> None:
    conditions = set_condition([], "Ready", "False", "Progressing", now=T0)
    conditions = set_condition(conditions, "Progressing", "True", "StepRunning", now=T0)
    conditions = set_condition(conditions, "Degraded", "False", "Healthy", now=T0)
    updated = set_condition(conditions, "Progressing", "False", "Done", now=T1)
    assert [c.type for c in updated] == ["Ready", "Progressing", "Degraded"]
    assert updated[0] == conditions[0] and updated[2] == conditions[2]
    assert not is_condition_true(updated, "Progressing")
    assert [c.type for c in remove_condition(updated, "Progressing")] == ["Ready", "Degraded"]
    assert find_condition(None, "Ready") is None


def test_default_time_is_rfc3339_utc_seconds() -> None:
    (ready,) = set_condition(None, "Ready", "Unknown", "Starting")
    assert ready.last_transition_time.endswith("Z") and len(ready.last_transition_time) == 20
