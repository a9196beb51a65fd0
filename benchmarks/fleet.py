"""Fleet delivery over a real link: a rollout's bytes across the bucket's egress, with and without
deltas and peers.

The store is moto's S3 server behind a link of fixed bandwidth (``--bucket-mbps``, the bucket's
egress for the whole fleet). Two ways to make that link, the first that works:

- ``tc``: the benchmark runs itself again in a network namespace it creates (as root), where
  everything (sandbox, agents, moto) talks over that namespace's loopback and the kernel shapes
  moto's answers: an htb class of ``--bucket-mbps`` selected by a u32 filter on moto's port
  (``tc qdisc/class/filter``), every other flow unshaped; the bytes that crossed are the class's
  own counter. Nothing of the host's network is touched;
- ``proxy``: a TCP proxy on loopback in this process, sending the store's answers through one
  shared token bucket (:class:`deltaroll.agent.throttle.TokenBucket`), counting what it sent.

The fleet is ``rollout.py``'s: the real operator rolls a ModelDeployment on a Deployment of
``--pods`` agent-only pods (each its own agent process, weights volume and cache) reloading one
shared reference engine. The model is a Llama of 23.9M parameters (47.7 MB in bf16) trained
for real (v1, then AdamW steps at a fine-tuning learning rate for v2 and v3). Modes, each a fresh
fleet brought up on v1, then measured on v2 -> v3:

- ``full``: the store holds full snapshots only (what a fleet without Deltaroll downloads);
- ``delta``: deltas, every agent from the store;
- ``delta_peers``: deltas, agents with ``--peers`` (each object from the store by at most 2
  seeders, the rest pod to pod).

Per mode: ``seconds`` (the spec.version patch to every pod Ready on v3), ``transfer_seconds``
(the patch to every agent past Pulling, i.e. holding the objects), ``bucket_bytes`` (bytes that
crossed the bucket link), ``agent_bucket_bytes`` and ``peer_bytes`` (the agents' counters),
``pods``, ``nodes``. The sandbox on this branch has one node, so ``--nodes`` and
``--node-mbps`` are recorded, not applied (``node_link`` says so). Prints a table on stderr and
one JSON object as the last line of stdout (and to --json-out).

Run (as root for tc): .venv/bin/python benchmarks/fleet.py --pods 4 --bucket-mbps 800
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from deltaroll.agent.throttle import TokenBucket
from deltaroll.api.agent_access import AGENT_SERVICE_ACCOUNT, agent_access_objects
from deltaroll.api.agent_state import AgentState, parse_agent_state
from deltaroll.api.annotations import POD_AGENT_STATE, POD_CURRENT_VERSION, POD_VERSION
from deltaroll.api.peers import DEFAULT_PEER_PORT, PEER_PORT_NAME
from deltaroll.store import Store
from deltaroll_demo.model import train
from deltaroll_sandbox.testing import running_sandbox
from rollout import (
    MODEL,
    NAMESPACE,
    REPO,
    Fleet,
    agent_only_pod_spec,
    fleet,
    free_port,
    print_json,
    publish,
    start_engine,
    start_operator,
    stop,
)

SCHEDULE = (("v1", 3, 1e-3), ("v2", 2, 1e-5), ("v3", 2, 1e-5))
SHAPE = {"hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 8}
BUCKET = "fleet-bench"
CREDENTIALS = {
    "AWS_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "AKIAFLEETBENCH",
    "AWS_SECRET_ACCESS_KEY": "fleet-bench-secret",
    "AWS_ALLOW_HTTP": "true",
}
MODES = ("full", "delta", "delta_peers")
SECRET = "bucket-credentials"


# ------------------------------------------------------------------ the bucket link


def wait_listening(host: str, port: int, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{what} did not listen on {host}:{port}")


class KernelLink:
    """moto on this network namespace's loopback, its answers (source port = moto's) put in an
    htb class of ``mbps`` by a u32 filter; every other loopback flow (the API server, the
    agents' peers) in an unshaped class. The bytes that crossed are the class's own counter."""

    kind = "tc"
    CLASS = "1:20"

    def __init__(self, mbps: int) -> None:
        from fixtures.s3 import MotoS3

        self.moto = MotoS3()
        self.moto.start()
        burst = str(max(64 * 1024, mbps * 1_000_000 // 8 // 100))  # 10 ms at the rate
        for command in (
            ["ip", "link", "set", "lo", "up"],
            ["tc", "qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "10",
             "r2q", "1000"],
            ["tc", "class", "add", "dev", "lo", "parent", "1:", "classid", "1:10", "htb",
             "rate", "100gbit"],
            ["tc", "class", "add", "dev", "lo", "parent", "1:", "classid", self.CLASS, "htb",
             "rate", f"{mbps}mbit", "ceil", f"{mbps}mbit", "burst", burst, "cburst", burst],
            ["tc", "filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1",
             "u32", "match", "ip", "sport", str(self.moto.port), "0xffff", "flowid", self.CLASS],
        ):  # fmt: skip
            _run(command)
        self.endpoint = self.moto.endpoint

    def bytes_sent(self) -> int:
        lines = _run(["tc", "-s", "class", "show", "dev", "lo"]).splitlines()
        for i, line in enumerate(lines):
            if line.startswith(f"class htb {self.CLASS} "):
                return int(lines[i + 1].split()[1])  # " Sent <bytes> bytes <packets> pkt ..."
        raise SystemExit(f"tc shows no class {self.CLASS}")

    def close(self) -> None:
        self.moto.stop()


def _run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise OSError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


def in_own_netns(argv: list[str]) -> int:
    """Run this benchmark again inside a network namespace made for it (as root), where tc may
    shape loopback without touching the host's network; the namespace is removed after."""
    netns = f"deltaroll-fleet-{os.getpid()}"
    _run(["ip", "netns", "add", netns])
    try:
        inside = ["ip", "netns", "exec", netns, sys.executable, __file__, *argv, "--inside-netns"]
        return subprocess.run(inside, check=False).returncode
    finally:
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, timeout=30)


def kernel_shaping_works() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None and shutil.which("tc") is not None


class ProxyLink:
    """moto on loopback behind a TCP proxy that sends its answers through one token bucket."""

    kind = "proxy"

    def __init__(self, mbps: int) -> None:
        from fixtures.s3 import MotoS3

        self.moto = MotoS3()
        self.moto.start()
        self.bucket = TokenBucket(mbps * 1_000_000 // 8)
        self.sent = 0
        self._lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.moto.port))
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, dest: socket.socket, shaped: bool) -> None:
        try:
            while data := source.recv(64 * 1024):
                if shaped:
                    self.bucket.take(len(data))
                    with self._lock:
                        self.sent += len(data)
                dest.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, dest):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def bytes_sent(self) -> int:
        with self._lock:
            return self.sent

    def close(self) -> None:
        self.listener.close()
        self.moto.stop()


def open_link(kind: str, mbps: int) -> KernelLink | ProxyLink:
    if kind == "tc":
        return KernelLink(mbps)
    return ProxyLink(mbps)


def upload(endpoint: str, store_root: Path, prefix: str) -> str:
    """Copy a file:// store into the bucket under ``prefix``; the s3:// URI."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=BUCKET)
    for path in sorted(store_root.rglob("*")):
        if path.is_file():
            key = f"{prefix}/{path.relative_to(store_root).as_posix()}"
            client.upload_file(str(path), BUCKET, key)
    return f"s3://{BUCKET}/{prefix}"


# ------------------------------------------------------------------ the fleet


def credentials(endpoint: str) -> dict[str, str]:
    return {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}


def pod_spec(store_uri: str, engine_url: str, endpoint: str, peers: str | None) -> dict[str, Any]:
    """``rollout.py``'s agent-only pod, reaching the store through the link, with peers."""
    spec = agent_only_pod_spec(store_uri, engine_url)
    spec["serviceAccountName"] = AGENT_SERVICE_ACCOUNT  # the chart's agent Role: pods list too
    (agent,) = spec["containers"]
    env = credentials(endpoint)
    agent["env"] = [*agent["env"], *({"name": k, "value": v} for k, v in env.items())]
    if peers is not None:
        agent["args"] = [*agent["args"], f"--peers=app={peers}", "--peer-host=127.0.0.1",
                         f"--peer-port={DEFAULT_PEER_PORT}", "--peer-serve-rate=0"]  # fmt: skip
        agent["ports"] = [
            *agent["ports"],
            {"name": PEER_PORT_NAME, "containerPort": DEFAULT_PEER_PORT},
        ]
    return spec


def agent_counter(pods: Fleet, name: str) -> int:
    """The sum over the fleet's agents of one counter of their /metrics."""
    import urllib.request

    total = 0.0
    for pod in pods.pods():
        port = pod.ports["agent-health"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
            for line in page.read().decode().splitlines():
                if line.startswith(name + " "):
                    total += float(line.rpartition(" ")[2])
    return int(total)


def past_pulling(pods: Fleet, wanted: str, version_id: str) -> set[str]:
    """The pods whose agent holds the objects of ``wanted`` (the name the operator writes):
    applying or reloading it, or Ready on it (a Ready on the old version is not yet pulling)."""
    done = set()
    for pod in pods.core.list_namespaced_pod(NAMESPACE, label_selector=f"app={pods.name}").items:
        annotations = pod.metadata.annotations or {}
        state, _ = parse_agent_state(annotations.get(POD_AGENT_STATE))
        current = annotations.get(POD_CURRENT_VERSION)
        working = state in (AgentState.APPLYING, AgentState.RELOADING)
        if annotations.get(POD_VERSION) == wanted and (working or current == version_id):
            done.add(pod.metadata.name)
    return done


def measure(
    sandbox: Any, mode: str, n: int, uri: str, engine_url: str, link: Any, ids: dict[str, str]
) -> dict[str, Any]:
    """A fresh fleet of ``n`` pods on v1 (then v2, the agents' warm-up); v2 -> v3 measured."""
    name = mode.replace("_", "-")
    peers = name if mode == "delta_peers" else None
    pods = Fleet(sandbox, name, n)
    deployment, rollout = fleet(name, n, uri, engine_url)
    deployment["spec"]["template"]["spec"] = pod_spec(uri, engine_url, link.endpoint, peers)
    rollout["spec"]["store"]["secretRef"] = {"name": SECRET}  # the operator reads the bucket too
    pods.create(deployment, rollout)
    pods.wait_on("v1", ids["v1"], replace_crashing=True)
    pods.set_version("v2")
    pods.wait_on("v2", ids["v2"])
    link_before = link.bytes_sent()
    agents_before = agent_counter(pods, "deltaroll_agent_downloaded_bytes_total")
    peers_before = agent_counter(pods, "deltaroll_agent_peer_bytes_total")
    started = time.perf_counter()
    pods.set_version("v3")
    transfer_s = None
    while transfer_s is None:
        if len(past_pulling(pods, "v3", ids["v3"])) == n:
            transfer_s = time.perf_counter() - started
        else:
            time.sleep(0.05)
    pods.wait_on("v3", ids["v3"])
    seconds = time.perf_counter() - started
    result = {
        "seconds": round(seconds, 2),
        "transfer_seconds": round(transfer_s, 2),
        "bucket_bytes": link.bytes_sent() - link_before,
        "agent_bucket_bytes": agent_counter(pods, "deltaroll_agent_downloaded_bytes_total")
        - agents_before,
        "peer_bytes": agent_counter(pods, "deltaroll_agent_peer_bytes_total") - peers_before,
        "pods": n,
        "nodes": 1,
    }
    pods.delete()
    return result


def object_bytes(store: Store, version: str, *, anchor: bool) -> int:
    graph = store.graph(MODEL)
    if anchor:
        refs = graph.anchors[version].delta.objects
    else:
        delta = store.versions(MODEL)[version].delta
        assert delta is not None
        refs = delta.objects
    return sum({ref.digest: ref.size for ref in refs}.values())


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    from deltaroll.checkpoint import checkpoint_version

    shape = SHAPE if args.model == "bench" else None  # demo: the demo's 2.5M parameters
    checkpoints = train(root / "checkpoints", schedule=SCHEDULE, shape=shape)
    paths = checkpoints.paths
    ids = {k: checkpoint_version(p) for k, p in paths.items()}
    stores = publish(root, paths)  # file:// stores: deltas from a v1 anchor, full snapshots
    delta, full = (Store(stores[k], cache_dir=root / "read-cache") for k in ("delta", "full"))
    link = open_link("tc" if args.inside_netns else "proxy", args.bucket_mbps)
    rows: dict[str, Any] = {}
    try:
        uris = {
            "full": upload(link.endpoint, root / "full-store", "full"),
            "delta": upload(link.endpoint, root / "delta-store", "delta"),
        }
        with running_sandbox(root / "sandbox") as sandbox:
            sandbox.kubectl("apply", "-f", str(REPO / "crds"))
            access = yaml.safe_dump_all(agent_access_objects(NAMESPACE))
            sandbox.kubectl("apply", "-f", "-", input=access)
            sandbox.kubectl(
                "create", "secret", "generic", SECRET, "-n", NAMESPACE,
                *(f"--from-literal={k}={v}" for k, v in credentials(link.endpoint).items()),
            )  # fmt: skip
            # controllers/modeldeployment/target.py opens the store without the Secret (with
            # the operator's environment): give that the bucket's, so it looks nowhere else.
            os.environ.update(credentials(link.endpoint))
            operator = start_operator(sandbox, root / "operator.log")
            port, admin = free_port(), free_port()
            engine = start_engine(paths["v1"], port, admin, root / "engine.log")
            try:
                for mode in MODES:
                    uri = uris["full" if mode == "full" else "delta"]
                    rows[mode] = measure(
                        sandbox, mode, args.pods, uri, f"http://127.0.0.1:{admin}", link, ids
                    )
                    print_row(mode, rows[mode])
            finally:
                stop(engine)
                stop(operator)
    finally:
        link.close()
    full_bytes = object_bytes(full, ids["v3"], anchor=True)
    delta_bytes = object_bytes(delta, ids["v3"], anchor=False)
    return {
        "benchmark": "fleet",
        "link": link.kind,
        "bucket_mbps": args.bucket_mbps,
        "node_mbps": args.node_mbps,
        "nodes_requested": args.nodes,
        "node_link": "not shaped: the sandbox on this branch runs every pod on one node",
        "model_parameters": checkpoints.parameters,
        "checkpoint_bytes": checkpoints.full_bytes("v3"),
        "delta_bytes": delta_bytes,
        "full_bytes": full_bytes,
        "cpu_count": os.cpu_count(),
        **rows,
        "ratios": {
            "transfer_full_over_delta_peers": round(
                rows["full"]["transfer_seconds"] / rows["delta_peers"]["transfer_seconds"], 2
            ),
            "seconds_full_over_delta_peers": round(
                rows["full"]["seconds"] / rows["delta_peers"]["seconds"], 2
            ),
            "bucket_bytes_delta_peers_over_delta_bytes": round(
                rows["delta_peers"]["bucket_bytes"] / delta_bytes, 2
            ),
        },
    }


def print_row(mode: str, row: dict[str, Any]) -> None:
    print(
        f"{mode:>12} {row['pods']:>4} pods  {row['seconds']:>7.1f} s  transfer "
        f"{row['transfer_seconds']:>6.1f} s  bucket {row['bucket_bytes'] / 1e6:>8.2f} MB  "
        f"peers {row['peer_bytes'] / 1e6:>8.2f} MB",
        file=sys.stderr,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=4)
    parser.add_argument("--nodes", type=int, default=1, help="recorded (one sandbox node)")
    parser.add_argument("--bucket-mbps", type=int, default=800)
    parser.add_argument("--node-mbps", type=int, default=2000, help="recorded, not applied")
    parser.add_argument("--link", choices=("auto", "tc", "proxy"), default="auto")
    parser.add_argument(
        "--model", choices=("bench", "demo"), default="bench", help="demo: a quick smoke run"
    )
    parser.add_argument("--json-out", type=Path, help="also write the JSON result here")
    parser.add_argument("--inside-netns", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.link != "proxy" and not args.inside_netns:
        if kernel_shaping_works():
            sys.exit(in_own_netns(sys.argv[1:]))
        if args.link == "tc":
            raise SystemExit("--link=tc needs root and iproute2 (ip, tc): apt-get install iproute2")
        print("no kernel shaping here (root and iproute2); using the proxy", file=sys.stderr)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.path.insert(0, str(REPO / "tests"))  # fixtures.s3 for the proxy link
    with tempfile.TemporaryDirectory(prefix="deltaroll-fleet-") as tmp:
        result = run(args, Path(tmp))
    print_json(result, args.json_out)


if __name__ == "__main__":
    main()
