"""Fleet delivery over real links: a rollout's bytes across the bucket's egress and the nodes'
NICs, with full snapshots, deltas through the node cache, and deltas through node cache + peers.

The store is moto's S3 server behind a link of fixed bandwidth (``--bucket-mbps``, the bucket's
egress for the whole fleet). Two ways to make the links, the first that works:

- ``tc``: the benchmark runs itself again in a network namespace it creates (as root), where
  everything (sandbox, agents, moto) talks over that namespace's loopback and htb shapes it
  (:class:`KernelLink` says exactly which flows): the bucket's answers to ``--bucket-mbps``, each
  node's downlink from the bucket and its uplink to peers to ``--node-mbps``; the pods reach the
  bucket at their node's address (``127.0.1.<i>``), which is what tells the nodes apart on the
  wire. The bytes that crossed are the classes' own counters. Nothing of the host's network is
  touched;
- ``proxy``: a TCP proxy on loopback in this process, sending the store's answers through one
  shared token bucket (:class:`deltaroll.agent.throttle.TokenBucket`); the nodes' links are not
  shaped.

The fleet is ``rollout.py``'s: the real operator rolls a ModelDeployment on a Deployment of
``--pods`` agent-only pods (each its own agent process, weights volume and cache) reloading one
shared reference engine, spread over ``--nodes`` sandbox nodes (a topology spread constraint),
each node running the node cache DaemonSet. The model is a Llama of 26.8M parameters (53.6 MB in
bf16) trained for real (v1, then two AdamW steps at 7e-7 each for v2 and v3: at 1e-5 a sixth of
the bf16 elements changed per version, at 7e-7 about 2 %, a fine-tuning step's density; the JSON's
``delta_density``).
Modes, each a fresh fleet brought up on v1 from its own copy of the store (the node caches keep
what an earlier mode fetched), then measured on v2 -> v3:

- ``full``: full snapshots only, through the same agents as ``delta_peers``;
- ``delta``: deltas, through the node cache (one download per node);
- ``delta_peers``: deltas, node cache and ``--peers`` (each object from the store by at most 2
  seeders, the rest from the node's cache or pod to pod).

Per mode: ``seconds`` (the spec.version patch to every pod Ready on v3), ``transfer_seconds``
(the patch to every agent past Pulling, i.e. holding the objects: as the pods' annotations say
it, so it includes each agent's turn out of its Service before it says Applying),
``phase_seconds`` (when the transfer phase's first steps were over for every pod: ``annotated``,
the operator has told it v3; ``noticed``, its agent has said it pulls v3), ``bucket_bytes``
(bytes that crossed the bucket link), ``uplink_bytes`` (bytes the nodes sent peers), the agents'
counters ``agent_bucket_bytes``, ``node_cache_bytes`` and ``peer_bytes``, ``pods``, ``nodes``,
and ``api_requests`` (the one-off requests the sandbox's API server answered during the change,
the operator's and the agents', not the benchmark's own polling, watches left out;
``api_requests_by_kind`` by verb), ``cpu_seconds`` and ``transfer_cpu_seconds`` (the CPU time
the whole machine spent in each phase: where the links never bind, what the phase is made of),
``cpu_seconds_by_role`` and ``transfer_cpu_seconds_by_role`` (the change's and the transfer
phase's CPU by process: agents, node caches, operator, engine, this process with the sandbox's
API server, kubelet and moto, its exited children, and the kernel's share by elimination).
Prints a table on stderr and one JSON object as the last line of stdout (and to --json-out).

Run (as root for tc): .venv/bin/python benchmarks/fleet.py --pods 16 --nodes 4
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from deltaroll.agent.throttle import TokenBucket
from deltaroll.api.agent_access import agent_access_objects
from deltaroll.api.agent_state import AgentState
from deltaroll.api.peers import PEER_PORT_NAME
from deltaroll.store import Store
from deltaroll_demo.manifests import serve_peers
from deltaroll_demo.model import train
from deltaroll_demo.node_cache import node_cache_objects, spread_over_nodes, use_node_cache
from deltaroll_demo.observe import PORTS_ANNOTATION, Pod
from deltaroll_sandbox.testing import running_sandbox
from rollout import (
    MODEL,
    NAMESPACE,
    OBSERVER_USER_AGENT,
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

SCHEDULE = (("v1", 3, 1e-3), ("v2", 2, 7e-7), ("v3", 2, 7e-7))
SHAPE = {"hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 9}
BUCKET = "fleet-bench"
CREDENTIALS = {
    "AWS_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "AKIAFLEETBENCH",
    "AWS_SECRET_ACCESS_KEY": "fleet-bench-secret",
    "AWS_ALLOW_HTTP": "true",
}
MODES = ("full", "delta", "delta_peers")
STORE_OF = {"full": "full", "delta": "delta", "delta_peers": "delta"}
PEERS = frozenset({"full", "delta_peers"})  # full: the same agents as delta_peers
#: The agents' counters of where bytes came from, by the JSON's key.
COUNTERS = {
    "agent_bucket_bytes": "deltaroll_agent_downloaded_bytes_total",
    "peer_bytes": "deltaroll_agent_peer_bytes_total",
    "node_cache_bytes": "deltaroll_agent_node_cache_bytes_total",
}
NODE_LINK = {
    "tc": "each node's downlink from the bucket and uplink to peers shaped to --node-mbps; "
    "its downlink from peers not (every sandbox pod answers at 127.0.0.1)",
    "proxy": "not shaped (the proxy shapes the bucket link only)",
}
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
    """moto on this network namespace (its loopback only), reached by each node's pods at their
    node's address (``127.0.1.<i>``), shaped by htb on ``lo``:

    - ``1:20`` the bucket's egress (``mbps``): every answer from moto's port; under it one leaf
      per node (answers from that node's address, ``node_mbps`` at most: the node's NIC
      downlink from the bucket) and one for the rest (the operator's reads at 127.0.0.1);
    - ``1:2<i>`` node i's uplink to peers (``node_mbps``): answers from the peer ports of the
      pods on node i (filters set per fleet, :meth:`shape_peer_uploads`);
    - ``1:10`` everything else, unshaped: the API server, a node cache to its own node's agents
      (node-local), and a node's downlink from peers (every sandbox pod's address is 127.0.0.1,
      so the receiving node of a peer's answer cannot be told apart on the wire).

    The bucket bytes are the sum of the bucket class's leaves' counters."""

    kind = "tc"
    BUCKET = "1:20"

    def __init__(self, mbps: int, node_addresses: list[str], node_mbps: int) -> None:
        from fixtures.s3 import MotoS3

        self.moto = MotoS3(listen="0.0.0.0")  # noqa: S104 - the benchmark's own namespace
        self.moto.start()
        self.node_addresses = node_addresses
        self._peer_filters = False
        per_node = max(1, mbps // len(node_addresses))
        commands = [
            ["tc", "qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "10",
             "r2q", "1000"],
            ["tc", "class", "add", "dev", "lo", "parent", "1:", "classid", "1:10", "htb",
             "rate", "100gbit"],
            [*_htb_class("1:", self.BUCKET, mbps, mbps)],
            [*_htb_class(self.BUCKET, "1:1ff", 1, mbps)],
            [*_u32(3, "1:1ff"), "match", "ip", "sport", str(self.moto.port), "0xffff"],
        ]  # fmt: skip
        for i, address in enumerate(node_addresses, start=1):
            down, up = f"1:{0x100 + i:x}", f"1:{0x200 + i:x}"
            ceil = min(node_mbps, mbps)
            commands += [
                _htb_class(self.BUCKET, down, per_node, ceil),
                [*_u32(1, down), "match", "ip", "src", f"{address}/32",
                 "match", "ip", "sport", str(self.moto.port), "0xffff"],
                _htb_class("1:", up, node_mbps, node_mbps),
            ]  # fmt: skip
        for command in commands:
            _run(command)
        self.endpoint = self.moto.endpoint
        self.pod_endpoint = f"http://$(HOST_IP):{self.moto.port}"  # the pod's node's address

    def shape_peer_uploads(self, peer_ports: dict[str, list[int]]) -> None:
        """Put the answers from each node's pods' peer ports in that node's uplink class."""
        self.unshape_peer_uploads()
        for i, address in enumerate(self.node_addresses, start=1):
            for port in peer_ports.get(address, []):
                _run([*_u32(2, f"1:{0x200 + i:x}"), "match", "ip", "sport", str(port), "0xffff"])
                self._peer_filters = True

    def unshape_peer_uploads(self) -> None:
        if self._peer_filters:
            _run(["tc", "filter", "del", "dev", "lo", "parent", "1:", "prio", "2"])
            self._peer_filters = False

    def bytes_sent(self) -> int:
        return sum(sent for (parent, _), sent in self._sent().items() if parent == self.BUCKET)

    def uplink_bytes(self) -> int:
        """Bytes the nodes sent their peers across their uplinks."""
        uplinks = {f"1:{0x200 + i:x}" for i in range(1, len(self.node_addresses) + 1)}
        return sum(sent for (_, classid), sent in self._sent().items() if classid in uplinks)

    def _sent(self) -> dict[tuple[str, str], int]:
        """(parent, class id) -> bytes sent, of every htb class (a top one's parent: root)."""
        lines = _run(["tc", "-s", "class", "show", "dev", "lo"]).splitlines()
        sent = {}
        for i, line in enumerate(lines):
            words = line.split()
            if words[:2] == ["class", "htb"]:
                parent = words[4] if words[3] == "parent" else "root"
                sent[parent, words[2]] = int(lines[i + 1].split()[1])  # " Sent <bytes> bytes"
        return sent

    def close(self) -> None:
        self.moto.stop()


def _htb_class(parent: str, classid: str, rate_mbps: int, ceil_mbps: int) -> list[str]:
    burst = str(max(64 * 1024, ceil_mbps * 1_000_000 // 8 // 100))  # 10 ms at the ceiling
    return ["tc", "class", "add", "dev", "lo", "parent", parent, "classid", classid, "htb",
            "rate", f"{rate_mbps}mbit", "ceil", f"{ceil_mbps}mbit", "burst", burst,
            "cburst", burst]  # fmt: skip


def _u32(prio: int, flowid: str) -> list[str]:
    """A u32 filter into ``flowid``, its matches to be appended (they must all hold)."""
    return ["tc", "filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio",
            str(prio), "u32", "flowid", flowid]  # fmt: skip


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
        _run(["ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up"])
        inside = ["ip", "netns", "exec", netns, sys.executable, __file__, *argv, "--inside-netns"]
        return subprocess.run(inside, check=False).returncode
    finally:
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, timeout=30)


def kernel_shaping_works() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None and shutil.which("tc") is not None


class ProxyLink:
    """moto on loopback behind a TCP proxy that sends its answers through one token bucket; the
    nodes' links are not shaped."""

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
        self.pod_endpoint = self.endpoint
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

    def shape_peer_uploads(self, peer_ports: dict[str, list[int]]) -> None:
        pass  # no node links here

    def unshape_peer_uploads(self) -> None:
        pass

    def uplink_bytes(self) -> int:
        return 0

    def close(self) -> None:
        self.listener.close()
        self.moto.stop()


def open_link(args: argparse.Namespace, node_addresses: list[str]) -> KernelLink | ProxyLink:
    if args.inside_netns:
        return KernelLink(args.bucket_mbps, node_addresses, args.node_mbps)
    return ProxyLink(args.bucket_mbps)


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


def pod_spec(
    store_uri: str, engine_url: str, endpoint: str, app: str, *, peers: bool, setup: Setup
) -> dict[str, Any]:
    """``rollout.py``'s agent-only pod, reaching the store through the link (at its node's
    address), with its node's cache, with peers, spread over the nodes."""
    spec = agent_only_pod_spec(store_uri, engine_url)
    (agent,) = spec["containers"]
    agent["args"] = [*agent["args"], f"--log-level={setup.agent_log_level}"]
    env = credentials(endpoint)
    agent["env"] = [*agent["env"], *({"name": k, "value": v} for k, v in env.items())]
    if peers:
        serve_peers(agent, app)
        agent["args"] = [*agent["args"], "--peer-serve-rate=0"]
    use_node_cache(spec, agent, setup.cache_port)  # HOST_IP first: the endpoint above names it
    spread_over_nodes(spec, {"app": app})
    return spec


def agent_counters(pods: Fleet) -> dict[str, int]:
    """The sums over the fleet's agents of the counters of their /metrics that say where bytes
    came from."""
    import urllib.request

    totals = dict.fromkeys(COUNTERS.values(), 0.0)
    for pod in pods.pods():
        port = pod.ports["agent-health"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
            for line in page.read().decode().splitlines():
                name, _, value = line.rpartition(" ")
                if name in totals:
                    totals[name] += float(value)
    return {key: int(totals[name]) for key, name in COUNTERS.items()}


def peer_ports_by_node(pods: Fleet) -> dict[str, list[int]]:
    """The loopback port each pod's peer server got, by the address of the pod's node."""
    ports: dict[str, list[int]] = {}
    for pod in pods.core.list_namespaced_pod(NAMESPACE, label_selector=f"app={pods.name}").items:
        mapped = json.loads((pod.metadata.annotations or {}).get(PORTS_ANNOTATION, "{}"))
        if PEER_PORT_NAME in mapped:
            ports.setdefault(pod.status.host_ip, []).append(int(mapped[PEER_PORT_NAME]))
    return ports


def past_pulling(pods: list[Pod], wanted: str, version_id: str) -> set[str]:
    """The pods whose agent holds the objects of ``wanted`` (the name the operator writes):
    applying or reloading it, or Ready on it (a Ready on the old version is not yet pulling)."""
    working = (AgentState.APPLYING.value, AgentState.RELOADING.value)
    return {
        pod.name
        for pod in pods
        if pod.wanted == wanted and (pod.agent_state in working or pod.current == version_id)
    }


def phase_reached(pods: list[Pod], wanted: str, past: set[str]) -> dict[str, bool]:
    """Where the transfer's time goes: whether the operator has told every pod to serve
    ``wanted`` (``annotated``), and whether every agent has said it pulls it or is past that
    (``noticed``: its first report after reading the annotation from its downward-API file;
    ``past``, :func:`past_pulling`)."""
    pulling = AgentState.PULLING.value
    return {
        "annotated": all(pod.wanted == wanted for pod in pods),
        "noticed": all(
            pod.name in past or (pod.agent_state == pulling and pod.agent_message.endswith(wanted))
            for pod in pods
        ),
    }


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has been busy, every core and process (``/proc/stat``):
    what a phase cost the two cores that the agents, the API server and the bucket share."""
    with open("/proc/stat") as stat:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(
            int, stat.readline().split()[1:9]
        )
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


#: Each process of the fleet by what its command line runs, the rest by elimination.
ROLES = (
    ("agent run", "agents"),
    ("agent node-cache", "node caches"),
    ("operator run", "operator"),
    ("engine serve", "engine"),
)
SANDBOX_ROLE = "sandbox (API server, kubelet, moto, observer)"
EXITED_ROLE = "exited children (probes, hooks)"
OTHER_ROLE = "kernel and other (softirq, tc, write-back)"


def process_cpu_seconds() -> dict[int, tuple[str, float]]:
    """Every live process's own CPU seconds (user + system) with its role; this process (the
    sandbox runs in it) also counts, as EXITED_ROLE, what its reaped children used."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone since the listing
            continue
        user, system, child_user, child_system = (int(f) / tick for f in fields[11:15])
        pid = int(entry.name)
        if pid == os.getpid():
            found[pid] = (SANDBOX_ROLE, user + system)
            found[-pid] = (EXITED_ROLE, child_user + child_system)
            continue
        role = next((name for marker, name in ROLES if marker in command), "")
        if role:
            found[pid] = (role, user + system)
    return found


def cpu_by_role(before: dict[int, tuple[str, float]], busy_s: float) -> dict[str, float]:
    """CPU seconds per role since ``before`` (a process started since counts whole), the
    machine's busy seconds not in any of them as OTHER_ROLE."""
    totals: dict[str, float] = {}
    for pid, (role, seconds) in process_cpu_seconds().items():
        spent = seconds - before.get(pid, (role, 0.0))[1]
        totals[role] = totals.get(role, 0.0) + spent
    totals[OTHER_ROLE] = busy_s - sum(totals.values())
    return {role: round(seconds, 1) for role, seconds in sorted(totals.items())}


def measure(
    sandbox: Any, mode: str, setup: Setup, link: Any, ids: dict[str, str]
) -> dict[str, Any]:
    """A fresh fleet of ``setup.pods`` pods on v1 (then v2, the agents' warm-up); v2 -> v3
    measured."""
    name, n = mode.replace("_", "-"), setup.pods
    uri, engine_url = setup.uris[mode], setup.engine_url
    pods = Fleet(sandbox, name, n)
    deployment, rollout = fleet(name, n, uri, engine_url)
    deployment["spec"]["template"]["spec"] = pod_spec(
        uri, engine_url, link.pod_endpoint, name, peers=mode in PEERS, setup=setup
    )
    rollout["spec"]["store"]["secretRef"] = {"name": SECRET}  # the operator reads the bucket too
    pods.create(deployment, rollout)
    pods.wait_on("v1", ids["v1"], replace_crashing=True)
    pods.set_version("v2")
    pods.wait_on("v2", ids["v2"])
    link.shape_peer_uploads(peer_ports_by_node(pods))
    link_before, uplink_before = link.bytes_sent(), link.uplink_bytes()
    agents_before = agent_counters(pods)
    started, requests_since = time.perf_counter(), time.monotonic()
    cpu_before, processes_before = busy_cpu_seconds(), process_cpu_seconds()
    pods.set_version("v3")
    transfer_s = transfer_cpu_s = None
    transfer_roles: dict[str, float] = {}
    phases: dict[str, float] = {}
    while transfer_s is None:
        seen = pods.pods()
        past = past_pulling(seen, "v3", ids["v3"])
        for phase, reached in phase_reached(seen, "v3", past).items():
            if reached and phase not in phases:
                phases[phase] = round(time.perf_counter() - started, 2)
        if len(past) == n:
            transfer_s = time.perf_counter() - started
            transfer_cpu_s = busy_cpu_seconds() - cpu_before
            transfer_roles = cpu_by_role(processes_before, transfer_cpu_s)
        else:
            time.sleep(0.05)
    pods.wait_on("v3", ids["v3"])
    seconds = time.perf_counter() - started
    cpu_s = busy_cpu_seconds() - cpu_before
    roles = cpu_by_role(processes_before, cpu_s)
    requests = sandbox.requests(
        requests_since, time.monotonic(), ignore_user_agent=OBSERVER_USER_AGENT, timeout=60
    )
    agents = agent_counters(pods)
    result = {
        "seconds": round(seconds, 2),
        "transfer_seconds": round(transfer_s, 2),
        "phase_seconds": phases,
        "cpu_seconds": round(cpu_s, 1),
        "transfer_cpu_seconds": round(transfer_cpu_s or 0.0, 1),
        "cpu_seconds_by_role": roles,
        "transfer_cpu_seconds_by_role": transfer_roles,
        "bucket_bytes": link.bytes_sent() - link_before,
        **{key: agents[key] - agents_before[key] for key in COUNTERS},
        "uplink_bytes": link.uplink_bytes() - uplink_before,
        "pods": n,
        "nodes": setup.nodes,
        "api_requests": sum(requests.values()),
        "api_requests_by_kind": dict(requests.most_common()),
    }
    link.unshape_peer_uploads()
    pods.delete()
    return result


def delta_density(store: Store, version: str) -> float:
    """The fraction of the model's elements that ``version``'s delta changes."""
    delta = store.versions(MODEL)[version].delta
    assert delta is not None
    return delta.changed_elements / delta.total_elements


def object_bytes(store: Store, version: str, *, anchor: bool) -> int:
    graph = store.graph(MODEL)
    if anchor:
        refs = graph.anchors[version].delta.objects
    else:
        delta = store.versions(MODEL)[version].delta
        assert delta is not None
        refs = delta.objects
    return sum({ref.digest: ref.size for ref in refs}.values())


@dataclass(frozen=True)
class Setup:
    """What every mode's fleet shares."""

    pods: int
    nodes: int
    uris: dict[str, str]  # by mode
    engine_url: str
    cache_port: int
    agent_log_level: str


def node_addresses(sandbox: Any) -> list[str]:
    """Each node's address (its pods' ``status.hostIP``), in the nodes' order."""
    import kubernetes

    core = kubernetes.client.CoreV1Api(sandbox.api_client())
    nodes = sorted(core.list_node().items, key=lambda node: node.metadata.name)
    return [
        next(a.address for a in node.status.addresses if a.type == "InternalIP") for node in nodes
    ]


def start_node_caches(sandbox: Any, addresses: list[str]) -> int:
    """The node cache DaemonSet; its port, once every node's copy answers."""
    with socket.socket() as probe:
        probe.bind((addresses[0], 0))
        port = int(probe.getsockname()[1])
    sandbox.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(node_cache_objects(port)))
    for address in addresses:
        wait_listening(address, port, "the node cache")
    return port


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    from deltaroll.checkpoint import checkpoint_version

    shape = SHAPE if args.model == "bench" else None  # demo: the demo's 2.5M parameters
    checkpoints = train(root / "checkpoints", schedule=SCHEDULE, shape=shape)
    paths = checkpoints.paths
    ids = {k: checkpoint_version(p) for k, p in paths.items()}
    stores = publish(root, paths)  # file:// stores: deltas from a v1 anchor, full snapshots
    delta, full = (Store(stores[k], cache_dir=root / "read-cache") for k in ("delta", "full"))
    rows: dict[str, Any] = {}
    with running_sandbox(root / "sandbox", nodes=args.nodes) as sandbox:
        addresses = node_addresses(sandbox)
        link = open_link(args, addresses)
        try:
            # each mode its own copy (prefix): the node caches keep what one mode fetched
            uris = {
                mode: upload(
                    link.endpoint, root / f"{STORE_OF[mode]}-store", mode.replace("_", "-")
                )
                for mode in args.modes
            }
            sandbox.kubectl("apply", "-f", str(REPO / "crds"))
            access = yaml.safe_dump_all(agent_access_objects(NAMESPACE))
            sandbox.kubectl("apply", "-f", "-", input=access)
            sandbox.kubectl(
                "create", "secret", "generic", SECRET, "-n", NAMESPACE,
                *(f"--from-literal={k}={v}" for k, v in credentials(link.endpoint).items()),
            )  # fmt: skip
            cache_port = start_node_caches(sandbox, addresses)
            # controllers/modeldeployment/target.py opens the store without the Secret (with
            # the operator's environment): give that the bucket's, so it looks nowhere else.
            os.environ.update(credentials(link.endpoint))
            operator = start_operator(sandbox, root / "operator.log")
            port, admin = free_port(), free_port()
            engine = start_engine(paths["v1"], port, admin, root / "engine.log")
            setup = Setup(
                args.pods, len(addresses), uris, f"http://127.0.0.1:{admin}", cache_port,
                args.agent_log_level,
            )  # fmt: skip
            try:
                for mode in args.modes:
                    rows[mode] = measure(sandbox, mode, setup, link, ids)
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
        "node_link": NODE_LINK[link.kind],
        "full_mode": "full snapshots through the same agents (node cache and peers on)",
        "model_parameters": checkpoints.parameters,
        "checkpoint_bytes": checkpoints.full_bytes("v3"),
        "delta_bytes": delta_bytes,
        "delta_density": round(delta_density(delta, ids["v3"]), 4),
        "full_bytes": full_bytes,
        "cpu_count": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        **rows,
        "ratios": ratios(rows, delta_bytes),
    }


def ratios(rows: dict[str, Any], delta_bytes: int) -> dict[str, float]:
    """The issue's targets, for the modes that ran."""
    found: dict[str, float] = {}
    if "full" in rows and "delta_peers" in rows:
        full, peers = rows["full"], rows["delta_peers"]
        found["transfer_full_over_delta_peers"] = (
            full["transfer_seconds"] / peers["transfer_seconds"]
        )
        found["seconds_full_over_delta_peers"] = full["seconds"] / peers["seconds"]
    for mode in ("delta_peers", "delta"):
        if mode in rows:
            found[f"bucket_bytes_{mode}_over_delta_bytes"] = (
                rows[mode]["bucket_bytes"] / delta_bytes
            )
    return {key: round(value, 2) for key, value in found.items()}


def print_row(mode: str, row: dict[str, Any]) -> None:
    print(
        f"{mode:>12} {row['pods']:>4} pods  {row['seconds']:>7.1f} s  transfer "
        f"{row['transfer_seconds']:>6.1f} s  bucket {row['bucket_bytes'] / 1e6:>8.2f} MB  "
        f"node cache {row['node_cache_bytes'] / 1e6:>8.2f} MB  "
        f"peers {row['peer_bytes'] / 1e6:>8.2f} MB  API requests {row['api_requests']}",
        file=sys.stderr,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=4)
    parser.add_argument("--nodes", type=int, default=1, help="sandbox nodes, pods spread over them")
    parser.add_argument("--bucket-mbps", type=int, default=800)
    parser.add_argument("--node-mbps", type=int, default=2000, help="each node's link (tc only)")
    parser.add_argument("--link", choices=("auto", "tc", "proxy"), default="auto")
    parser.add_argument(
        "--modes",
        type=lambda value: value.split(","),
        default=list(MODES),
        help=f"comma-separated, of {','.join(MODES)}",
    )
    parser.add_argument(
        "--model", choices=("bench", "demo"), default="bench", help="demo: a quick smoke run"
    )
    parser.add_argument(
        "--agent-log-level", default="warning", help="info: the agents log each step (--keep)"
    )
    parser.add_argument("--json-out", type=Path, help="also write the JSON result here")
    parser.add_argument(
        "--keep", type=Path, help="work in this new directory and keep it (the agents' logs)"
    )
    parser.add_argument("--inside-netns", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if unknown := set(args.modes) - set(MODES):
        parser.error(f"--modes: no mode {', '.join(sorted(unknown))}; the modes are {MODES}")
    if args.link != "proxy" and not args.inside_netns:
        if kernel_shaping_works():
            sys.exit(in_own_netns(sys.argv[1:]))
        if args.link == "tc":
            raise SystemExit("--link=tc needs root and iproute2 (ip, tc): apt-get install iproute2")
        print("no kernel shaping here (root and iproute2); using the proxy", file=sys.stderr)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.path.insert(0, str(REPO / "tests"))  # fixtures.s3 for the proxy link
    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            args.keep.mkdir(parents=True)
        root = args.keep or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="deltaroll-fleet-"))
        )
        result = run(args, root)
    print_json(result, args.json_out)


if __name__ == "__main__":
    main()
