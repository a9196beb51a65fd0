"""Starting and stopping (no process left behind), HTTPS trust, and the CLI commands."""

from __future__ import annotations

import base64
import os
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import kubernetes
import pytest
import yaml
from sandbox_helpers import pod_manifest

from deltaroll_sandbox.polling import wait_for
from deltaroll_sandbox.testing import running_sandbox

# The distribution's own command; `deltaroll sandbox` is the same commands (tests/cli).
SANDBOX_CLI = Path(sys.executable).with_name("deltaroll-sandbox")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too (reaped later by its parent, if any).
    return "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def _sleeping_pod(client, name: str) -> int:
    """Start a pod whose container has a child of its own; return the container's pid."""
    core = kubernetes.client.CoreV1Api(client)
    # Stopping must take the whole process group, the child included.
    code = "import subprocess, time; subprocess.Popen(['sleep', '600']); time.sleep(600)"
    core.create_namespaced_pod("default", pod_manifest(name, code, restartPolicy="Always"))

    def container_id():
        statuses = core.read_namespaced_pod(name, "default").status.container_statuses or []
        return statuses[0].container_id if statuses else None

    return int(wait_for(container_id).split("//")[1])


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def test_stopping_leaves_no_process_behind(tmp_path):
    with running_sandbox(tmp_path / "sb") as sb:
        client = sb.api_client()
        pid = _sleeping_pod(client, "sleeper")
        wait_for(lambda: len(_group_members(pid)) == 2)  # the container and its child
        client.close()
    assert not _alive(pid)
    wait_for(lambda: _group_members(pid) == [], timeout=30)  # SIGKILL is delivered asynchronously


def test_cli_up_serves_until_sigterm_and_logs_reads_pods(tmp_path):
    directory = tmp_path / "sb"
    up = subprocess.Popen(
        [SANDBOX_CLI, "up", "--dir", str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert up.stdout is not None
        kubeconfig = up.stdout.readline().strip()
        assert kubeconfig == str(directory.resolve() / "kubeconfig")
        client = kubernetes.config.new_client_from_config(config_file=kubeconfig)
        core = kubernetes.client.CoreV1Api(client)
        core.create_namespaced_pod(
            "default",
            pod_manifest(
                "talker",
                "print('spoken', flush=True); import time; time.sleep(600)",
                restartPolicy="Always",
            ),
        )
        env = {**os.environ, "KUBECONFIG": kubeconfig}

        def logs():
            return subprocess.run(
                [SANDBOX_CLI, "logs", "talker"], env=env, capture_output=True, text=True
            ).stdout

        assert wait_for(lambda: logs() == "spoken\n")
        missing = subprocess.run(
            [SANDBOX_CLI, "logs", "nobody", "-n", "default"],
            env=env,
            capture_output=True,
            text=True,
        )
        assert missing.returncode == 1
        assert missing.stderr.startswith("error: ") and 'pods "nobody" not found' in missing.stderr
        pid = _sleeping_pod(client, "sleeper")
        client.close()
    finally:
        up.send_signal(signal.SIGTERM)
        code = up.wait(timeout=30)
    assert code == 0, up.stderr.read() if up.stderr else ""
    assert not _alive(pid)
    wait_for(lambda: _group_members(pid) == [], timeout=30)


def test_cli_logs_of_a_stopped_sandbox(tmp_path):
    with running_sandbox(tmp_path / "sb") as sb:
        kubeconfig = str(sb.kubeconfig_path)
    result = subprocess.run(
        [SANDBOX_CLI, "logs", "x", "--kubeconfig", kubeconfig],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: no API answers at https://127.0.0.1:")
    assert len(result.stderr.splitlines()) == 1


def test_cli_logs_without_a_sandbox(tmp_path):
    result = subprocess.run(
        [SANDBOX_CLI, "logs", "x", "--kubeconfig", str(tmp_path / "none")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert (
        result.stderr.startswith("error: no kubeconfig at")
        and "deltaroll sandbox up" in result.stderr
    )


def test_cli_up_on_a_taken_port_says_so(tmp_path):
    with running_sandbox(tmp_path / "first") as first:
        port = first.api_url.rsplit(":", 1)[1]
        result = subprocess.run(
            [SANDBOX_CLI, "up", "--dir", str(tmp_path / "second"), "--port", port],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines()[-1].startswith(f"error: cannot listen on 127.0.0.1:{port}")


def test_https_is_verified_against_the_kubeconfigs_ca(sandbox):
    config = yaml.safe_load(sandbox.kubeconfig_path.read_text())
    ca = base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"]).decode()
    host, port = sandbox.api_url.removeprefix("https://").rsplit(":", 1)
    trusting = ssl.create_default_context(cadata=ca)
    with (
        socket.create_connection((host, int(port))) as raw,
        trusting.wrap_socket(raw, server_hostname=host) as tls,
    ):
        assert tls.version() is not None
    with (
        pytest.raises(ssl.SSLCertVerificationError),
        socket.create_connection((host, int(port))) as raw,
        ssl.create_default_context().wrap_socket(raw, server_hostname=host),
    ):
        pass  # the system's CAs do not vouch for the sandbox
