"""The world of the ModelDelta e2e tests: the real operator as a process, and the few verbs the
tests use on the sandbox (apply with kubectl, read objects and events, wait)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deltaroll_sandbox.testing import RunningSandbox
from fixtures import polling
from fixtures.cli import DELTAROLL
from fixtures.ports import free_port

GROUP, VERSION = "deltaroll.dev", "v1alpha1"
#: The tests' stores and checkpoints live in pytest's temporary directories: file:// is allowed.
LOCAL_POLICY: dict[str, Any] = {"default": {"storePrefixes": ["file:///", "s3://", "hf://"]}}
#: The operator's own cloud identity in the policy tests: seen in a bucket's traffic, it was lent.
OPERATOR_KEY = "AKIAOPERATOR0IDENTITY"
#: Another team's bucket's credentials (with AWS_ENDPOINT_URL: its Secret's data).
TEAM_B_KEYS = {
    "AWS_ALLOW_HTTP": "true",
    "AWS_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "team-b",
    "AWS_SECRET_ACCESS_KEY": "team-b-secret",
}


class Operator:
    """``deltaroll operator run`` against the sandbox, as a real process."""

    def __init__(
        self,
        cluster: RunningSandbox,
        log_path: Path,
        policy: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.cluster, self.log_path, self.extra_env = cluster, log_path, env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.metrics_port = free_port()
        self.policy_path = log_path.with_name(f"{log_path.stem}-policy.json")
        self.policy_path.write_text(json.dumps(LOCAL_POLICY if policy is None else policy))

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics") as page:
            return str(page.read().decode())

    def start(self) -> None:
        env = {
            "DELTAROLL_METRICS_PORT": str(self.metrics_port),
            **self.cluster.env(),
            "DELTAROLL_LOG_FORMAT": "console",
            "DELTAROLL_LOG_LEVEL": "info",
            **self.extra_env,
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(DELTAROLL),
                    "operator",
                    "run",
                    "--all-namespaces",
                    "--standalone",
                    f"--policy={self.policy_path}",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, as when a node dies."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def apply(cluster: RunningSandbox, manifest: dict[str, Any]) -> None:
    """``kubectl apply`` the manifest, as a user (or a GitOps tool) would."""
    done = cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=False)
    assert done.returncode == 0, done.stderr


def get(
    cluster: RunningSandbox, kind: str, name: str, namespace: str = "default"
) -> dict[str, Any] | None:
    done = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


def wait_for(
    predicate: Callable[[], Any], timeout: float, what: str, log: Callable[[], str] = str
) -> Any:
    """:func:`fixtures.polling.wait_for` every 0.3 s: each check here runs kubectl."""
    return polling.wait_for(predicate, timeout, what, log, interval=0.3)


def modeldelta(
    name: str,
    store_uri: str,
    target: Path | str,
    *,
    parent: str | None = "step-0",
    job: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDelta",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "model": "tiny",
            "store": {"uri": store_uri},
            "source": {
                "checkpoint": {"uri": str(target) if "://" in str(target) else f"file://{target}"}
            },
            "job": {"backoffLimit": 1, **(job or {})},
            **spec,
        },
    }
    if parent is not None:
        body["spec"]["parent"] = parent
    return body


def create_secret(cluster: RunningSandbox, name: str, data: dict[str, str]) -> None:
    import kubernetes

    with cluster.api_client() as client:
        kubernetes.client.CoreV1Api(client).create_namespaced_secret(
            "default", {"metadata": {"name": name}, "stringData": data}
        )


def events_for(cluster: RunningSandbox, name: str) -> list[dict[str, Any]]:
    listed = json.loads(cluster.kubectl("get", "events", "-n", "default", "-o", "json").stdout)
    return [e for e in listed["items"] if e["involvedObject"].get("name") == name]


def wait_for_warning(cluster: RunningSandbox, name: str, reason: str) -> None:
    """Until the object ``name`` has a Warning Event with ``reason``."""
    wait_for(
        lambda: any(
            e["type"] == "Warning" and e["reason"] == reason for e in events_for(cluster, name)
        ),
        30,
        f"a {reason} Warning Event",
    )


def jobs_of(cluster: RunningSandbox, name: str) -> list[dict[str, Any]]:
    listed = cluster.kubectl(
        "get", "jobs", "-n", "default", "-l", f"deltaroll.dev/modeldelta={name}", "-o", "json"
    ).stdout
    return list(json.loads(listed)["items"])


class Gate:
    """A TCP proxy to an upstream endpoint that holds every connection until opened: a worker
    reading through it is provably still running until the test says otherwise. What clients
    sent is kept in ``sent`` (who signed a request shows in its Authorization header)."""

    def __init__(self, upstream: str, *, opened: bool = False) -> None:
        import socket
        import threading

        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.sent = bytearray()
        self.opened = threading.Event()
        if opened:
            self.opened.set()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: Any) -> None:
        import socket
        import threading

        self.opened.wait()
        with client, socket.create_connection(self.upstream) as upstream:
            back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
            back.start()
            _pipe(client, upstream, self.sent)
            back.join(timeout=30)

    def close(self) -> None:
        self.opened.set()
        self.server.close()


def _pipe(source: Any, sink: Any, record: bytearray | None = None) -> None:
    try:
        while data := source.recv(65536):
            if record is not None:
                record.extend(data)
            sink.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
