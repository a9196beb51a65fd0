"""Roll a version to N = 4, 16 and 64 inference pods on the sandbox: bytes pulled and time to Ready.

The real operator (``deltaroll operator run``) rolls a ModelDeployment on a Deployment of N pods,
each with its own Deltaroll agent (its own process, weights volume and object cache). To keep 64
pods affordable on a laptop the pods share one reference engine process (the "cheap pod shape":
an agent-only pod whose ``--engine-url`` points at the shared engine; each agent still asks that
engine to reload its own weights directory and verifies the version it reports). The model is
the demo's small Llama trained for real: v1 from random init, v2 and v3 two AdamW steps each at a
fine-tuning learning rate, bf16.

In the same run, for each N, two fleets go v1 -> v2 -> v3:

- ``delta``: the store holds v1 (anchor), v2 and v3 as deltas - what Deltaroll ships;
- ``full``: the store holds every version only as a full snapshot (an anchor, zstd-compressed):
  shipping the whole checkpoint to every pod, through the same agents, operator and store.

v1 -> v2 is each agent's first rollout (cold processes: the delta path loads its compiled
kernels); v2 -> v3 is the measured one, a fleet in its steady state. Measured per rollout: total
bytes the agents downloaded (their ``deltaroll_agent_downloaded_bytes`` counters) and seconds
from the ``spec.version`` patch to the ModelDeployment Healthy with every pod Ready on it. The
rollout uses ``maxUnavailable: 100%`` (no canary). The store is ``file://`` on the same machine,
so transfer is nearly free here and time is CPU (apply, verify, reload) on shared cores; over a
network, bytes are what scale. Prints a table on stderr and one JSON object as the last line of
stdout (and to --json-out).

Run: .venv/bin/python benchmarks/rollout.py [--sizes 4,16,64] [--json-out rollout.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from deltaroll.api.agent_access import AGENT_SERVICE_ACCOUNT
from deltaroll.api.annotations import WEIGHTS_READY_CONDITION
from deltaroll.store import Store
from deltaroll_demo.manifests import agent_access, agent_container, pod_volumes
from deltaroll_demo.model import train
from deltaroll_demo.observe import Pod, downloaded_bytes
from deltaroll_sandbox.policy import write_local_policy
from deltaroll_sandbox.testing import RunningSandbox, running_sandbox

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODEL = "bench-llm"
GROUP, VERSION, NAMESPACE = "deltaroll.dev", "v1alpha1", "default"
WAIT_S = 900.0
#: How long a read inside the sandbox's loop may wait for it (a loaded loop serves its queue).
LOOP_WAIT_S = 60.0
#: The User-Agent of the benchmark's own API client, so that its polling can be told apart from
#: the operator's and the agents' requests in the API server's audit log.
OBSERVER_USER_AGENT = "deltaroll-benchmark-observer"
# v1 from random init, then two fine-tuning versions: v1 -> v2 is each agent's first rollout
# (cold processes), v2 -> v3 the measured one (a fleet in its steady state).
SCHEDULE = (("v1", 6, 1e-3), ("v2", 2, 1e-5), ("v3", 2, 1e-5))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def agent_only_pod_spec(store_uri: str, engine_url: str) -> dict[str, Any]:
    """The cheap pod shape: the demo's agent alone, reloading a shared engine."""
    agent = agent_container(store_uri, model=MODEL, engine_url=engine_url)
    agent["args"] = [*agent["args"], "--log-level=warning"]
    agent["env"] = [*agent["env"], {"name": "OMP_NUM_THREADS", "value": "1"}]
    return {
        "serviceAccountName": AGENT_SERVICE_ACCOUNT,  # the chart's agent identity and Role
        "terminationGracePeriodSeconds": 2,
        "readinessGates": [{"conditionType": WEIGHTS_READY_CONDITION}],
        "containers": [agent],
        "volumes": pod_volumes(),
    }


def fleet(name: str, replicas: int, store_uri: str, engine_url: str) -> list[dict[str, Any]]:
    """The Deployment of ``replicas`` agent-only pods and its ModelDeployment on v1."""
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": agent_only_pod_spec(store_uri, engine_url),
            },
        },
    }
    rollout = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "model": MODEL,
            "store": {"uri": store_uri},
            "version": "v1",
            "selector": {"matchLabels": {"app": name}},
            "engine": {"kind": "reference", "port": 8000},
            "maxUnavailable": "100%",
            "progressDeadlineSeconds": 900,
        },
    }
    return [deployment, rollout]


class Fleet:
    """One fleet on the sandbox, read back through the API and the agents' /metrics."""

    def __init__(self, sandbox: RunningSandbox, name: str, replicas: int) -> None:
        import kubernetes

        self.sandbox, self.name, self.replicas = sandbox, name, replicas
        self.replaced = 0  # crash-looping pods deleted during bootstrap
        client = sandbox.api_client()
        client.user_agent = OBSERVER_USER_AGENT
        self.core = kubernetes.client.CoreV1Api(client)
        self.apps = kubernetes.client.AppsV1Api(client)
        self.custom = kubernetes.client.CustomObjectsApi(client)

    def pods(self) -> list[Pod]:
        """The fleet's live pods, read inside the sandbox's loop: no request, no copy of a pod,
        no decoding into the client's models. Polled through the API every 0.05-0.2 s, a LIST
        of 64 pods took 40 ms to decode in this process, which runs the API server (and, in
        fleet.py, the bucket) under the same GIL: the observer slowed what it measured."""

        def live(pod: dict[str, Any]) -> bool:
            meta = pod["metadata"]
            app = (meta.get("labels") or {}).get("app")
            return app == self.name and not meta.get("deletionTimestamp")

        def parts() -> list[tuple[str, dict[str, str], dict[str, str]]]:
            store = self.sandbox.sandbox.api.store
            pods = store.registry.lookup("", "v1", "pods")
            return [
                (
                    pod["metadata"]["name"],
                    dict(pod["metadata"].get("annotations") or {}),
                    {c.get("type"): c.get("status") for c in pod["status"].get("conditions") or []},
                )
                for pod in store.peek_objects(pods, NAMESPACE, live)
            ]

        return [Pod.of_parts(*found) for found in self.sandbox.call(parts, timeout=LOOP_WAIT_S)]

    def status(self) -> dict[str, Any]:
        body: Any = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, "modeldeployments", self.name
        )
        return dict(body.get("status") or {})

    def wait_on(self, label: str, version_id: str, *, replace_crashing: bool = False) -> None:
        """Until Healthy on ``label`` with every pod Ready on it. ``replace_crashing`` deletes
        pods whose agent keeps crashing (the Deployment replaces them): the sandbox's kubelet
        can give two pods the same host port, and one agent then cannot bind its /metrics."""
        deadline = time.monotonic() + WAIT_S
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status, pods = self.status(), self.pods()
            if (
                status.get("phase") == "Healthy"
                and status.get("stableVersion") == label
                and len(pods) == self.replicas
                and all(p.current == version_id and p.ready for p in pods)
            ):
                return
            if replace_crashing:
                self.replace_crash_looping()
            time.sleep(0.2)
        raise SystemExit(f"{self.name}: not all pods Ready on {label} in {WAIT_S} s: {status}")

    def replace_crash_looping(self) -> None:
        listed = self.core.list_namespaced_pod(NAMESPACE, label_selector=f"app={self.name}")
        pod: Any
        for pod in listed.items:
            statuses = pod.status.container_statuses or []
            if pod.metadata.deletion_timestamp is None and any(
                s.restart_count >= 2 for s in statuses
            ):
                self.core.delete_namespaced_pod(pod.metadata.name, NAMESPACE)
                self.replaced += 1

    def downloaded(self) -> int:
        counts = [downloaded_bytes(p) for p in self.pods()]
        if any(c is None for c in counts):
            raise SystemExit(f"{self.name}: an agent's /metrics did not answer")
        return sum(c for c in counts if c is not None)

    def set_version(self, label: str) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, "modeldeployments", self.name, {"spec": {"version": label}}
        )

    def create(self, deployment: dict[str, Any], rollout: dict[str, Any]) -> None:
        body: Any = deployment  # the client takes plain dicts; its stubs say V1Deployment
        self.apps.create_namespaced_deployment(NAMESPACE, body)
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, "modeldeployments", rollout
        )

    def delete(self) -> None:
        """Delete the fleet and wait until every pod is gone (its agent process stopped), so the
        next fleet is measured on an idle machine."""
        self.custom.delete_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, "modeldeployments", self.name
        )
        self.apps.delete_namespaced_deployment(self.name, NAMESPACE)
        selector = f"app={self.name}"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if not self.core.list_namespaced_pod(NAMESPACE, label_selector=selector).items:
                return
            time.sleep(0.5)
        raise SystemExit(f"{self.name}: pods still terminating after 300 s")


def measure(
    sandbox: RunningSandbox, name: str, n: int, store_uri: str, engine_url: str, ids: dict[str, str]
) -> dict[str, Any]:
    """Bring ``n`` pods up on v1, roll to v2 (the agents' first rollout: cold processes), then
    to v3 (a fleet in its steady state); count the bytes and time each."""
    pods = Fleet(sandbox, name, n)
    pods.create(*fleet(name, n, store_uri, engine_url))
    started = time.perf_counter()
    pods.wait_on("v1", ids["v1"], replace_crashing=True)
    result: dict[str, Any] = {
        "bootstrap_s": round(time.perf_counter() - started, 2),
        "pods_replaced_in_bootstrap": pods.replaced,
    }
    for label, key in (("v2", "first"), ("v3", "steady")):
        before = pods.downloaded()
        started = time.perf_counter()
        pods.set_version(label)
        pods.wait_on(label, ids[label])
        result[f"{key}_s"] = round(time.perf_counter() - started, 2)
        result[f"{key}_bytes"] = pods.downloaded() - before
    pods.delete()
    return result


def start_engine(
    model_path: Path, port: int, admin_port: int, log: Path
) -> subprocess.Popen[bytes]:
    """The shared reference engine: inference on ``port``, the agents' reload and checksum
    routes on ``admin_port`` (their --engine-url)."""
    with log.open("ab") as out:
        engine = subprocess.Popen(
            [str(BIN / "deltaroll"), "engine", "serve", "--kind", "reference"]
            + ["--model-path", str(model_path), "--port", str(port)]
            + ["--admin-port", str(admin_port)],
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return engine
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"the shared engine did not start; see {log}")


def start_operator(
    sandbox: RunningSandbox, log: Path, code: Path | None = None
) -> subprocess.Popen[bytes]:
    """The operator; ``code``: another source tree's (a baseline to compare with), not ours."""
    env = {**sandbox.env(), "DELTAROLL_LOG_LEVEL": "warning"}
    if code is not None:
        parts = ("operator", "operator/sandbox", "operator/demo")
        env["PYTHONPATH"] = os.pathsep.join(str(code / part) for part in parts)
    policy = write_local_policy(log.with_suffix(".policy.json"), log.parent)
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                str(BIN / "deltaroll"),
                "operator",
                "run",
                "--all-namespaces",
                "--standalone",
                f"--policy={policy}",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def publish(root: Path, paths: dict[str, Path]) -> dict[str, str]:
    """Two stores of v1 -> v2 -> v3: as deltas from the v1 anchor, and as full snapshots only."""
    delta = Store(f"file://{root / 'delta-store'}", cache_dir=root / "push-cache")
    delta.push(MODEL, paths["v1"], name="v1", anchor=True)
    delta.push(MODEL, paths["v2"], base=paths["v1"], name="v2")
    delta.push(MODEL, paths["v3"], base=paths["v2"], name="v3")
    full = Store(f"file://{root / 'full-store'}", cache_dir=root / "push-cache")
    for label in ("v1", "v2", "v3"):
        full.push(MODEL, paths[label], name=label, anchor=True)
    return {"delta": f"file://{root / 'delta-store'}", "full": f"file://{root / 'full-store'}"}


def run(sizes: list[int], root: Path) -> dict[str, Any]:
    from deltaroll.checkpoint import checkpoint_version

    checkpoints = train(root / "checkpoints", schedule=SCHEDULE)
    paths = checkpoints.paths
    ids = {k: checkpoint_version(p) for k, p in paths.items()}
    stores = publish(root, paths)
    full_checkpoint = checkpoints.full_bytes("v3")
    rows = []
    print(HEADER, file=sys.stderr)
    for n in sizes:
        with running_sandbox(root / f"sandbox-{n}") as sandbox:
            sandbox.kubectl("apply", "-f", str(REPO / "crds"))
            sandbox.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(agent_access()))
            operator = start_operator(sandbox, root / f"operator-{n}.log")
            port, admin = free_port(), free_port()
            engine = start_engine(paths["v1"], port, admin, root / f"engine-{n}.log")
            try:
                url = f"http://127.0.0.1:{admin}"  # the agents reload it on its admin port
                delta = measure(sandbox, f"delta-{n}", n, stores["delta"], url, ids)
                full = measure(sandbox, f"full-{n}", n, stores["full"], url, ids)
            finally:
                stop(engine)
                stop(operator)
        row = {
            "pods": n,
            "delta_bytes": delta["steady_bytes"],
            "full_bytes": full["steady_bytes"],
            "raw_checkpoint_bytes": full_checkpoint * n,
            "bytes_ratio": round(delta["steady_bytes"] / full["steady_bytes"], 4),
            "bytes_ratio_vs_raw": round(delta["steady_bytes"] / (full_checkpoint * n), 4),
            "delta_seconds": delta["steady_s"],
            "full_seconds": full["steady_s"],
            "seconds_ratio": round(delta["steady_s"] / full["steady_s"], 3),
            "first_rollout": {
                "delta_bytes": delta["first_bytes"],
                "full_bytes": full["first_bytes"],
                "delta_seconds": delta["first_s"],
                "full_seconds": full["first_s"],
            },
            "bootstrap_seconds": {"delta": delta["bootstrap_s"], "full": full["bootstrap_s"]},
            "pods_replaced_in_bootstrap": {
                "delta": delta["pods_replaced_in_bootstrap"],
                "full": full["pods_replaced_in_bootstrap"],
            },
        }
        rows.append(row)
        print_row(row)
    return {
        "benchmark": "rollout",
        "model_parameters": checkpoints.parameters,
        "full_checkpoint_bytes": full_checkpoint,
        "cpu_count": os.cpu_count(),
        "max_unavailable": "100%",
        "engine": "one shared reference engine; one agent process per pod",
        "rows": rows,
    }


HEADER = (
    f"{'pods':>5} {'delta MB':>10} {'full MB':>10} {'ratio':>7} "
    f"{'delta s':>8} {'full s':>8} {'ratio':>7} {'1st delta s':>12} {'1st full s':>11}"
)


def print_row(row: dict[str, Any]) -> None:
    print(
        f"{row['pods']:>5} {row['delta_bytes'] / 1e6:>10.2f} {row['full_bytes'] / 1e6:>10.2f} "
        f"{row['bytes_ratio']:>7.3f} {row['delta_seconds']:>8.1f} {row['full_seconds']:>8.1f} "
        f"{row['seconds_ratio']:>7.2f} {row['first_rollout']['delta_seconds']:>12.1f} "
        f"{row['first_rollout']['full_seconds']:>11.1f}",
        file=sys.stderr,
    )


def print_json(result: dict[str, Any], json_out: Path | None) -> None:
    """The result as one JSON line: the last of stdout, and the whole of ``json_out``."""
    text = json.dumps(result, sort_keys=True)
    if json_out:
        json_out.write_text(text + "\n")
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4,16,64", help="comma-separated pod counts")
    parser.add_argument("--json-out", type=Path, help="also write the JSON result here")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the sandbox stops every pod process it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="deltaroll-rollout-") as tmp:
        result = run(sizes, Path(tmp))
    print_json(result, args.json_out)


if __name__ == "__main__":
    main()
