"""The reconcile loop in-process: a real file:// store, the reference engine as a subprocess,
the sandbox's Kubernetes API for reporting. Every publish is checked against the disk and the
engine by :class:`~agent.helpers.CheckingReporter`."""

from __future__ import annotations

import hashlib
import json
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes

from agent.helpers import (
    MODEL,
    AgentRig,
    Published,
    copy_store,
    last_change,
    make_agent,
    pod_report,
)
from deltaroll.agent.health import HealthServer
from deltaroll.api.agent_state import AgentState, parse_agent_state
from deltaroll.checkpoint import checkpoint_version
from deltaroll.checkpoint.journal import Journal
from deltaroll.engines.reference.client import ReferenceEngineClient
from engines.processes import RunningEngine


def served(engine: RunningEngine) -> dict[str, Any]:
    return ReferenceEngineClient(engine.admin_url, timeout=60).weights_checksum()


def reach(rig: AgentRig, version: str, passes: int = 3) -> None:
    for _ in range(passes):
        rig.agent.reconcile_once()
        if rig.agent.state is AgentState.READY and rig.agent.engine_version == version:
            return
    raise AssertionError(f"not Ready on {version}: {rig.agent.state} {rig.agent.message}")


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_first_version_then_forward_then_rollback(
    tmp_path: Path,
    core: kubernetes.client.CoreV1Api,
    published: Published,
    engine: RunningEngine,
) -> None:
    rig = make_agent(tmp_path, core, published.uri, engine.admin_url, "walk")
    v1, v2 = published.ids["v1"], published.ids["v2"]
    health = HealthServer("127.0.0.1", 0, rig.agent.healthz, rig.agent.metrics.registry)
    health.start()
    try:
        base = f"http://127.0.0.1:{health.port}"
        rig.agent.reconcile_once()
        assert rig.agent.state is AgentState.IDLE
        assert pod_report(core, "walk")["weights_ready"] == "False"
        assert get(base + "/healthz")[0] == 503  # the startup probe holds the engine back

        rig.want(v1)  # nothing on disk: the anchor is built beside and swapped in
        reach(rig, v1)
        assert checkpoint_version(rig.agent.volume.weights) == v1
        assert served(engine)["model_path"] == str(rig.agent.volume.weights)
        assert rig.downloaded() == published.anchor_bytes("v1")
        assert pod_report(core, "walk") | {"condition": None} == {
            "state": "Ready", "current": v1, "weights_ready": "True", "condition": None,
        }  # fmt: skip
        status, body = get(base + "/healthz")
        assert status == 200 and json.loads(body)["current_version"] == v1

        first = last_change(core, "walk")
        assert first is not None and (first.version, first.method) == (v1, "disk-reload")
        assert first.reason == "the plan starts from an anchor" and first.pause_s > 0

        rig.reporter.reports.clear()
        rig.want(v2)  # one forward delta, in place on disk, then in the engine's memory
        reach(rig, v2)
        assert rig.reporter.states() == ["Pulling", "Applying", "Ready"]  # no reload
        assert all(r.weights_ready for r in rig.reporter.reports)  # never out of its Service
        applying = next(r for r in rig.reporter.reports if r.state is AgentState.APPLYING)
        assert applying.current_version == v1  # the old version still served meanwhile
        change = last_change(core, "walk")
        assert change is not None and (change.version, change.method) == (v2, "in-memory")
        assert 0 < change.bytes_applied < first.bytes_applied
        assert rig.downloaded() == published.anchor_bytes("v1") + published.delta_bytes("v2")
        assert rig.applied("forward") == 1
        assert served(engine)["version"] == v2 == checkpoint_version(published.paths["v2"])

        rig.want(v1)  # rollback: the same delta reversed, its objects still cached
        reach(rig, v1)
        assert rig.applied("reverse") == 1 and rig.applied("anchor") == 1
        assert rig.downloaded() == published.anchor_bytes("v1") + published.delta_bytes("v2")
        assert served(engine)["version"] == v1
        assert rig.reporter.violations == []
        rollback = last_change(core, "walk")
        assert rollback is not None and (rollback.version, rollback.method) == (v1, "in-memory")

        metrics = get(base + "/metrics")[1].decode()
        assert 'deltaroll_agent_applied_deltas_total{kind="reverse"} 1.0' in metrics
        assert 'deltaroll_agent_state{deltaroll_agent_state="Ready"} 1.0' in metrics
        assert 'deltaroll_agent_pause_seconds_count{method="in-memory"} 2.0' in metrics
    finally:
        health.stop()


def test_corrupt_delta_fails_naming_the_object_and_keeps_the_old_version(
    tmp_path: Path,
    core: kubernetes.client.CoreV1Api,
    published: Published,
    engine: RunningEngine,
) -> None:
    damaged = copy_store(published, tmp_path / "store")
    now = [0.0]
    rig = make_agent(
        tmp_path, core, damaged.uri, engine.admin_url, "corrupt", clock=lambda: now[0],
        failed_retry_s=300.0,
    )  # fmt: skip
    v1, v2 = published.ids["v1"], published.ids["v2"]
    rig.want(v1)
    reach(rig, v1)
    delta = damaged.store().versions(MODEL)[v2].delta
    assert delta is not None
    victim = max(delta.objects, key=lambda ref: ref.size)
    path = damaged.root / MODEL / "objects" / victim.digest
    intact = path.read_bytes()
    data = bytearray(intact)
    data[len(data) // 2] ^= 0x01  # one flipped bit
    path.write_bytes(bytes(data))

    rig.want(v2)
    rig.agent.reconcile_once()
    state, message = parse_agent_state(pod_report(core, "corrupt")["state"])
    assert state is AgentState.FAILED
    assert victim.digest in message and "corrupt" in message
    assert pod_report(core, "corrupt")["current"] == v1
    assert pod_report(core, "corrupt")["weights_ready"] == "True"  # v1 is still served, verified
    assert checkpoint_version(rig.agent.volume.weights) == v1
    assert served(engine)["version"] == v1
    assert Journal(rig.agent.volume.weights).load() is None

    path.write_bytes(intact)  # the store is repaired
    now[0] += 299.0
    rig.agent.reconcile_once()  # a Failed version waits failed_retry_s (or another version)
    assert rig.agent.state is AgentState.FAILED
    assert rig.agent.metrics.failures._value.get() == 1
    now[0] += 2.0
    reach(rig, v2)
    assert served(engine)["version"] == v2
    assert rig.reporter.violations == []


def test_unknown_version_fails_with_what_to_do(
    tmp_path: Path,
    core: kubernetes.client.CoreV1Api,
    published: Published,
    engine: RunningEngine,
) -> None:
    rig = make_agent(tmp_path, core, published.uri, engine.admin_url, "unknown")
    rig.want("0" * 32)
    rig.agent.reconcile_once()
    state, message = parse_agent_state(pod_report(core, "unknown")["state"])
    assert state is AgentState.FAILED and "0" * 32 in message
    assert pod_report(core, "unknown")["weights_ready"] == "False"
    assert not rig.agent.healthz()[0]


def test_engine_unreachable_is_retried_in_reloading(
    tmp_path: Path, core: kubernetes.client.CoreV1Api, published: Published
) -> None:
    from fixtures.ports import free_port

    nowhere = f"http://127.0.0.1:{free_port()}"
    rig = make_agent(tmp_path, core, published.uri, nowhere, "no-engine")
    rig.want(published.ids["v1"])
    delay = rig.agent.reconcile_once()
    assert delay > 0 and rig.agent.state is AgentState.RELOADING
    state, message = parse_agent_state(pod_report(core, "no-engine")["state"])
    assert state is AgentState.RELOADING and "unreachable" in message
    assert pod_report(core, "no-engine")["weights_ready"] == "False"
    assert rig.agent.healthz()[0]  # weights are on disk: the engine may start now


def test_a_name_is_resolved_once_and_a_settled_agent_writes_nothing(
    tmp_path: Path,
    core: kubernetes.client.CoreV1Api,
    published: Published,
    engine: RunningEngine,
) -> None:
    named = copy_store(published, tmp_path / "store")
    named.store().set_name(MODEL, "stable", published.ids["v2"])
    rig = make_agent(tmp_path, core, named.uri, engine.admin_url, "named")
    rig.want("stable")
    reach(rig, published.ids["v2"])
    assert rig.applied("anchor") == 1 and rig.applied("forward") == 1  # v1 anchor, then v2
    # Pulling is said once, in the words the pod was told (the resolved id cost two more writes)
    pulling = {r.message for r in rig.reporter.reports if r.state is AgentState.PULLING}
    assert pulling == {"fetching the deltas to stable"}
    version = core.read_namespaced_pod("named", "default").metadata.resource_version
    for _ in range(5):
        rig.agent.reconcile_once()
    assert core.read_namespaced_pod("named", "default").metadata.resource_version == version


def _republish_as_format(store: Published, version: str, schema: str) -> None:
    """Rewrite one published version as a newer Deltaroll would have written it: the delta
    manifest in another format (a new object), the record naming it."""
    from deltaroll.checkpoint.manifest import decode_document, encode_document
    from deltaroll.store import keys

    key = store.root / keys.version_key(MODEL, version)
    record = json.loads(key.read_bytes())
    old = store.root / keys.object_key(MODEL, record["delta"]["manifest"]["digest"])
    manifest = decode_document(old.read_bytes(), str(old))
    manifest["schema"] = schema
    data = encode_document(manifest)
    digest = hashlib.sha256(data).hexdigest()
    (store.root / keys.object_key(MODEL, digest)).write_bytes(data)
    record["delta"]["manifest"] = {"digest": digest, "size": len(data)}
    key.write_text(json.dumps(record))


def test_a_delta_of_a_newer_format_stalls_the_pod_on_its_verified_version(
    tmp_path: Path,
    core: kubernetes.client.CoreV1Api,
    published: Published,
    engine: RunningEngine,
) -> None:
    newer = copy_store(published, tmp_path / "store")
    rig = make_agent(tmp_path, core, newer.uri, engine.admin_url, "newer", failed_retry_s=300.0)
    v1, v2 = published.ids["v1"], published.ids["v2"]
    rig.want(v1)
    reach(rig, v1)
    before = {p.name: p.read_bytes() for p in rig.agent.volume.weights.iterdir() if p.is_file()}
    _republish_as_format(newer, v2, "deltaroll.delta/v3")

    rig.want(v2)
    rig.agent.reconcile_once()
    state, message = parse_agent_state(pod_report(core, "newer")["state"])
    assert state is AgentState.FAILED
    assert "deltaroll.delta/v3" in message and "upgrade Deltaroll" in message
    assert pod_report(core, "newer")["current"] == v1, message
    assert pod_report(core, "newer")["weights_ready"] == "True"  # v1 still served, verified
    after = {p.name: p.read_bytes() for p in rig.agent.volume.weights.iterdir() if p.is_file()}
    assert after == before  # not one byte applied
    assert Journal(rig.agent.volume.weights).load() is None
    assert served(engine)["version"] == v1
