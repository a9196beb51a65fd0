"""What the agent makes of the API's answers to its reports: a pod, or an error it retries."""

from __future__ import annotations

import json
from typing import Any

import pytest

from deltaroll.agent.errors import ReportError
from deltaroll.agent.report import PodReporter, Report
from deltaroll.api.agent_state import AgentState
from deltaroll.api.annotations import WEIGHTS_READY_CONDITION


class Answer:
    """The client's raw response (``_preload_content=False``): the body, once."""

    def __init__(self, body: bytes) -> None:
        self.data = body
        self.released = False

    def release_conn(self) -> None:
        self.released = True


class Api:
    """A CoreV1Api that answers every call with ``body``."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.answers: list[Answer] = []

    def _answer(self, *_: Any, **options: Any) -> Answer:
        assert options["_preload_content"] is False  # no client models: plain JSON
        self.answers.append(Answer(self.body))
        return self.answers[-1]

    patch_namespaced_pod = patch_namespaced_pod_status = read_namespaced_pod = _answer


def pod(ready: str) -> bytes:
    return json.dumps(
        {
            "spec": {"readinessGates": [{"conditionType": WEIGHTS_READY_CONDITION}]},
            "status": {"conditions": [{"type": "Ready", "status": ready}]},
        }
    ).encode()


def test_going_unready_reads_the_pods_ready_condition_from_plain_json() -> None:
    api = Api(pod("False"))
    PodReporter(api, "ns", "p").publish(Report(AgentState.APPLYING))
    assert len(api.answers) == 3  # condition, Ready read, annotations
    assert all(answer.released for answer in api.answers)


@pytest.mark.parametrize("body", [b"null", b"[]", b'{"kind": "Status"}', b"<html>", b""])
def test_an_answer_that_is_not_a_pod_is_an_error_not_a_pod_without_a_gate(body: bytes) -> None:
    """Read as a pod without the readiness gate, it would let the agent touch the weights
    before the pod left its Service."""
    api = Api(body)
    with pytest.raises(ReportError, match="not a pod; the agent retries"):
        PodReporter(api, "ns", "p").publish(Report(AgentState.APPLYING))
    assert all(answer.released for answer in api.answers)
