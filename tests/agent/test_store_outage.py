"""The store unreachable for a while (moto's S3 server stopped, then started again): the agent
keeps serving the old version, reports Pulling with the error, backs off, finishes later."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest

from agent.helpers import Published, S3Server, make_agent, pod_report
from deltaroll.api.agent_state import AgentState, parse_agent_state
from deltaroll.checkpoint import checkpoint_version
from deltaroll.engines import engine_client
from engines.processes import RunningEngine


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = S3Server()
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    server.start()
    yield server
    server.stop()


def test_store_outage_keeps_the_old_version_and_finishes_when_back(
    tmp_path: Path,
    core: kubernetes.client.CoreV1Api,
    published: Published,
    engine: RunningEngine,
    s3: S3Server,
) -> None:
    uri = s3.upload_store(published, "agent-outage")
    rig = make_agent(tmp_path, core, uri, engine.admin_url, "outage")
    v1, v2 = published.ids["v1"], published.ids["v2"]
    rig.want(v1)
    rig.agent.reconcile_once()
    assert rig.agent.state is AgentState.READY

    s3.stop()
    rig.want(v2)
    for _ in range(2):  # passes fail, each backing off longer
        delay = rig.agent.reconcile_once()
        assert delay > 0
        state, message = parse_agent_state(pod_report(core, "outage")["state"])
        assert state is AgentState.PULLING and s3.endpoint.split("//")[1] in message
        assert pod_report(core, "outage")["current"] == v1
        assert pod_report(core, "outage")["weights_ready"] == "True"  # still serving v1
        assert checkpoint_version(rig.agent.volume.weights) == v1
        assert engine_client("reference", engine.admin_url).loaded_version() == v1
    assert rig.agent.metrics.retries.labels("Pulling")._value.get() == 2
    assert "agent-test-secret" not in message

    s3.start()
    for _ in range(3):
        rig.agent.reconcile_once()
        if rig.agent.state is AgentState.READY:
            break
    assert rig.agent.engine_version == v2
    assert pod_report(core, "outage")["current"] == v2
    assert rig.downloaded() == published.anchor_bytes("v1") + published.delta_bytes("v2")
    assert rig.reporter.violations == []
