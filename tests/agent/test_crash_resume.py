"""``deltaroll agent run`` killed with SIGKILL in the middle of an in-place apply (at the
checkpoint layer's named crash points), then started again: it finishes the journaled apply and
ends Ready on the wanted version, bit-exact, and the pod was not Ready in between."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import kubernetes
import pytest

from agent.helpers import (
    NAMESPACE,
    AgentRig,
    Published,
    make_agent,
    pod_report,
    subprocess_env,
)
from deltaroll.api.agent_state import AgentState, parse_agent_state
from deltaroll.checkpoint import checkpoint_version
from deltaroll.checkpoint.journal import Journal
from deltaroll.engines import engine_client
from deltaroll_sandbox.testing import RunningSandbox
from engines.processes import RunningEngine
from fixtures.cli import DELTAROLL
from fixtures.polling import wait_for


def agent_command(rig: AgentRig, store_uri: str, engine_url: str) -> list[str]:
    config = rig.agent.config
    return [
        str(DELTAROLL), "agent", "run",
        f"--store={store_uri}", "--model=tiny",
        f"--annotations-file={config.annotations_file}",
        f"--weights-dir={config.weights_dir}",
        "--engine=reference", f"--engine-url={engine_url}",
        "--health-host=127.0.0.1", "--health-port=0",
        "--poll-interval=0.1", "--retry-max=0.5", "--log-format=console",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "crash_at",
    [
        "journal-created",  # nothing patched yet
        "scatter-half:2",  # one tensor patched, the second half-written (redo log)
        "patched",  # every tensor patched, the journal not yet finished
    ],
)
def test_agent_killed_during_apply_resumes_and_ends_ready(
    tmp_path: Path,
    api_sandbox: RunningSandbox,
    core: kubernetes.client.CoreV1Api,
    published: Published,
    engine: RunningEngine,
    crash_at: str,
) -> None:
    pod = f"crash-{crash_at.split(':')[0]}"
    rig = make_agent(tmp_path, core, published.uri, engine.admin_url, pod)
    v1, v2 = published.ids["v1"], published.ids["v2"]
    rig.want(v1)
    rig.agent.reconcile_once()
    assert rig.agent.state is AgentState.READY
    rig.want(v2)
    command = agent_command(rig, published.uri, engine.admin_url)
    env = subprocess_env(
        POD_NAME=pod, POD_NAMESPACE=NAMESPACE, KUBECONFIG=str(api_sandbox.kubeconfig_path)
    )
    log = tmp_path / "agent.log"

    with log.open("wb") as out:
        killed = subprocess.run(
            command, env={**env, "DELTAROLL_CRASH_AT": crash_at}, stdout=out, stderr=out,
            timeout=120, check=False,
        )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, log.read_text()
    weights = rig.agent.volume.weights
    assert Journal(weights).load() is not None  # killed inside the journaled apply
    report = pod_report(core, pod)
    assert parse_agent_state(report["state"])[0] is AgentState.APPLYING
    # The engine patches its weights in memory only after the disk: it still serves v1, so the
    # pod stayed in its Service through the killed apply.
    assert report["weights_ready"] == "True" and report["current"] == v1
    assert engine_client("reference", engine.admin_url).loaded_version() == v1

    with log.open("ab") as out:
        restarted = subprocess.Popen(command, env=env, stdout=out, stderr=out)
    try:
        wait_for(lambda: pod_report(core, pod)["current"] == v2, timeout=120)
    finally:
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(timeout=60) == 0, log.read_text()
    assert pod_report(core, pod)["state"] == "Ready"
    assert pod_report(core, pod)["weights_ready"] == "True"
    assert Journal(weights).load() is None
    assert checkpoint_version(weights) == v2 == checkpoint_version(published.paths["v2"])
    assert engine_client("reference", engine.admin_url).loaded_version() == v2
