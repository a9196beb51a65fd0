"""The agent's Prometheus metrics, in a registry of their own (served on ``/metrics``).

A registry per agent, not the global one, so tests can run several agents in one process and
the exposition holds only what the agent means to publish.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram

from deltaroll.api.agent_state import AgentState


class AgentMetrics:
    """Counters and gauges the reconcile loop updates."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.state = Enum(
            "deltaroll_agent_state",
            "The agent's current state.",
            states=[state.value for state in AgentState],
            registry=self.registry,
        )
        self.downloaded_bytes = Counter(
            "deltaroll_agent_downloaded_bytes",
            "Bytes of delta objects downloaded from the store, across the bucket link (cache "
            "hits and objects from peers excluded).",
            registry=self.registry,
        )
        self.bucket_objects = Counter(
            "deltaroll_agent_bucket_objects",
            "Objects downloaded from the store (cache hits and objects from peers excluded).",
            registry=self.registry,
        )
        self.peer_bytes = Counter(
            "deltaroll_agent_peer_bytes",
            "Bytes of objects received from peer agents and verified.",
            registry=self.registry,
        )
        self.unpeered_objects = Counter(
            "deltaroll_agent_unpeered_objects",
            "Objects downloaded from the store that peers should have served: none did in time, "
            "or no peer was listed (the agent then seeds everything itself).",
            registry=self.registry,
        )
        self.peer_rejected = Counter(
            "deltaroll_agent_peer_rejected",
            "Objects a peer sent whose bytes did not match their name (discarded).",
            registry=self.registry,
        )
        self.peer_refused = Counter(
            "deltaroll_agent_peer_refused",
            "Requests to this agent's peer server refused: no token, a token the API server did "
            "not vouch for, or a pod of another namespace or ModelDeployment.",
            registry=self.registry,
        )
        self.peer_requests = Counter(
            "deltaroll_agent_peer_requests",
            "Requests to this agent's peer server, by answer: served, missing (404, after any "
            "wait the request asked for), busy (503), refused (401/403), bad (400).",
            ["answer"],
            registry=self.registry,
        )
        self.served_bytes = Counter(
            "deltaroll_agent_served_bytes",
            "Bytes of verified objects this agent served to peer agents.",
            registry=self.registry,
        )
        self.node_cache_bytes = Counter(
            "deltaroll_agent_node_cache_bytes",
            "Bytes of delta objects received from the node cache instead of the store.",
            registry=self.registry,
        )
        self.applied_deltas = Counter(
            "deltaroll_agent_applied_deltas",
            "Deltas applied to the weights volume, by kind (anchor, forward, reverse).",
            ["kind"],
            registry=self.registry,
        )
        self.reloads = Counter(
            "deltaroll_agent_engine_reloads",
            "Engine reloads requested, by outcome (ok, refused, unreachable).",
            ["outcome"],
            registry=self.registry,
        )
        self.retries = Counter(
            "deltaroll_agent_retries",
            "Passes that hit a passing failure (store or engine unreachable) and backed off.",
            ["state"],
            registry=self.registry,
        )
        self.pulls_superseded = Counter(
            "deltaroll_agent_pulls_superseded",
            "Pulls abandoned because the pod's wanted version changed before they were applied.",
            registry=self.registry,
        )
        self.failures = Counter(
            "deltaroll_agent_failures",
            "Passes that ended Failed (corrupt delta, no path, engine refused the weights).",
            registry=self.registry,
        )
        self.weights_ready = Gauge(
            "deltaroll_agent_weights_ready",
            "1 when the engine holds the wanted version, verified; 0 otherwise.",
            registry=self.registry,
        )
        self.apply_seconds = Histogram(
            "deltaroll_agent_apply_seconds",
            "Seconds spent applying the deltas of one version change to the weights volume.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.bytes_read = Counter(
            "deltaroll_agent_bytes_read",
            "Bytes the agent read from storage while applying deltas (/proc/self/io read_bytes).",
            registry=self.registry,
        )
        self.bytes_written = Counter(
            "deltaroll_agent_bytes_written",
            "Bytes the agent caused to be written to storage while applying deltas, write-back "
            "of dirtied pages included (/proc/self/io write_bytes).",
            registry=self.registry,
        )
        self.scrub_bytes = Counter(
            "deltaroll_agent_scrub_bytes",
            "Bytes of the served weights the background scrub has re-hashed.",
            registry=self.registry,
        )
        self.scrub_passes = Counter(
            "deltaroll_agent_scrub_passes",
            "Full scrub passes that found every tensor and file as its version says.",
            registry=self.registry,
        )
        self.scrub_mismatches = Counter(
            "deltaroll_agent_scrub_mismatches",
            "Scrub passes that found the served weights differing from their version's digests.",
            registry=self.registry,
        )
        self.scrub_last_pass = Gauge(
            "deltaroll_agent_scrub_last_pass_timestamp_seconds",
            "Unix time the last clean full scrub pass ended (0 before the first).",
            registry=self.registry,
        )
        self.pause_seconds = Histogram(
            "deltaroll_agent_pause_seconds",
            "Per version change: seconds the engine held requests (in-memory) or the pod was out "
            "of its Service (disk reload), by method.",
            ["method"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.change_bytes = Counter(
            "deltaroll_agent_change_bytes",
            "Bytes written into the engine's memory by version changes, by method (a disk "
            "reload counts the whole model).",
            ["method"],
            registry=self.registry,
        )
        self.served_mismatches = Counter(
            "deltaroll_agent_served_mismatches",
            "Served-copy checks that found a tensor in the engine's memory differing from its "
            "version's digest (the engine then reloads from disk).",
            registry=self.registry,
        )
        self.version_changes = Histogram(
            "deltaroll_agent_version_change_seconds",
            "Seconds from starting to pull a new version to the engine serving it.",
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800),
            registry=self.registry,
        )


def process_io() -> tuple[int, int]:
    """(read_bytes, write_bytes) of this process so far; zeros where /proc has no io file."""
    try:
        lines = Path("/proc/self/io").read_text().splitlines()
    except OSError:
        return 0, 0
    fields = dict(line.split(": ", 1) for line in lines if ": " in line)
    return int(fields.get("read_bytes", 0)), int(fields.get("write_bytes", 0))
