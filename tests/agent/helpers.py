"""Helpers of the agent tests: pods in the API, the annotations file, a checking reporter."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
import numpy as np

from deltaroll.agent.config import AgentConfig
from deltaroll.agent.reconcile import Agent
from deltaroll.agent.report import PodReporter, Report
from deltaroll.agent.volume import WeightsVolume
from deltaroll.api.annotations import (
    POD_AGENT_STATE,
    POD_CURRENT_VERSION,
    POD_LAST_CHANGE,
    POD_VERSION,
    WEIGHTS_READY_CONDITION,
)
from deltaroll.api.weight_change import WeightChange, parse_weight_change
from deltaroll.checkpoint import checkpoint_version, open_checkpoint
from deltaroll.engines import engine_client
from deltaroll.store import Store
from deltaroll.store.retry import RetryPolicy
from deltaroll_sandbox.kubelet.volumes import field_text
from engines.checkpoints import TinyCheckpoints
from fixtures.s3 import MotoS3

NAMESPACE = "default"
MODEL = "tiny"
FAST_RETRY = RetryPolicy(attempts=2, initial_s=0.01, max_s=0.05)


@dataclass(frozen=True)
class Published:
    """A store holding v1 (anchor), v2 (delta from v1), v3 (delta from v2)."""

    uri: str
    root: Path
    paths: dict[str, Path]  # "v1" -> checkpoint directory
    ids: dict[str, str]  # "v1" -> version id

    def delta_bytes(self, label: str) -> int:
        """Bytes of the objects of the delta that made version ``label`` from its parent."""
        manifest = self.store().versions(MODEL)[self.ids[label]]
        assert manifest.delta is not None
        return sum(ref.size for ref in {r.digest: r for r in manifest.delta.objects}.values())

    def anchor_bytes(self, label: str) -> int:
        anchor = self.store().graph(MODEL).anchors[self.ids[label]]
        return sum(ref.size for ref in {r.digest: r for r in anchor.delta.objects}.values())

    def store(self, cache: Path | None = None) -> Store:
        return Store(self.uri, cache_dir=cache or self.root.parent / "inspect-cache")


def publish_versions(store: Store, llama: TinyCheckpoints) -> None:
    store.push(MODEL, llama.v1)
    store.push(MODEL, llama.v2, base=llama.v1)
    store.push(MODEL, llama.diverged, base=llama.v2)


def copy_store(published: Published, dest: Path) -> Published:
    shutil.copytree(published.root, dest)
    return Published(f"file://{dest}", dest, published.paths, published.ids)


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELTAROLL_CRASH")}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def create_pod(core: kubernetes.client.CoreV1Api, name: str) -> None:
    """A pod object (not run: the API-only sandbox has no kubelet) with the readiness gate."""
    core.create_namespaced_pod(
        NAMESPACE,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "readinessGates": [{"conditionType": WEIGHTS_READY_CONDITION}],
                "containers": [{"name": "engine", "image": "none", "command": ["true"]}],
            },
        },
    )


def annotate(core: kubernetes.client.CoreV1Api, name: str, version: str | None) -> dict[str, Any]:
    """Set the pod's wanted version and return the pod as the API now has it."""
    body = {"metadata": {"annotations": {POD_VERSION: version}}}
    core.patch_namespaced_pod(name, NAMESPACE, body, _content_type="application/merge-patch+json")
    return pod_dict(core, name)


def pod_dict(core: kubernetes.client.CoreV1Api, name: str) -> dict[str, Any]:
    pod = core.read_namespaced_pod(name, NAMESPACE)
    return kubernetes.client.ApiClient().sanitize_for_serialization(pod)


def write_downward_file(path: Path, pod: dict[str, Any]) -> None:
    """What the kubelet writes for ``fieldPath: metadata.annotations`` (the sandbox's renderer)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(field_text(pod, "metadata.annotations"))


def last_change(core: kubernetes.client.CoreV1Api, name: str) -> WeightChange | None:
    """The pod's last version change, as its annotation says."""
    annotations = pod_dict(core, name)["metadata"].get("annotations") or {}
    return parse_weight_change(annotations.get(POD_LAST_CHANGE))


def pod_report(core: kubernetes.client.CoreV1Api, name: str) -> dict[str, Any]:
    """The agent's report as the API holds it."""
    pod = pod_dict(core, name)
    annotations = pod["metadata"].get("annotations") or {}
    conditions = {c["type"]: c for c in (pod.get("status") or {}).get("conditions") or []}
    return {
        "state": annotations.get(POD_AGENT_STATE),
        "current": annotations.get(POD_CURRENT_VERSION),
        "weights_ready": conditions.get(WEIGHTS_READY_CONDITION, {}).get("status"),
        "condition": conditions.get(WEIGHTS_READY_CONDITION),
    }


@dataclass
class CheckingReporter:
    """The real reporter, plus a check at every publish: a report that says weights-ready must
    be true of the disk (hashed now) and of the engine (asked now)."""

    inner: PodReporter
    weights: Path
    engine_url: str
    engine_kind: str = "reference"
    reports: list[Report] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def publish(self, report: Report) -> None:
        if report.weights_ready:
            on_disk = checkpoint_version(self.weights)
            in_engine = engine_client(self.engine_kind, self.engine_url).loaded_version()
            if not (report.current_version == on_disk == in_engine):
                self.violations.append(f"{report}: disk holds {on_disk}, engine holds {in_engine}")
        self.inner.publish(report)
        self.reports.append(report)

    def states(self) -> list[str]:
        """The sequence of states, repeats folded."""
        names: list[str] = []
        for report in self.reports:
            if not names or names[-1] != report.state.value:
                names.append(report.state.value)
        return names


@dataclass
class AgentRig:
    agent: Agent
    reporter: CheckingReporter
    annotations_file: Path
    core: kubernetes.client.CoreV1Api
    pod: str

    def want(self, version: str | None) -> None:
        write_downward_file(self.annotations_file, annotate(self.core, self.pod, version))

    def downloaded(self) -> float:
        return self.agent.metrics.downloaded_bytes._value.get()

    def applied(self, kind: str) -> float:
        return self.agent.metrics.applied_deltas.labels(kind)._value.get()


def make_agent(
    tmp_path: Path,
    core: kubernetes.client.CoreV1Api,
    store_uri: str,
    engine_url: str,
    pod: str,
    clock: Callable[[], float] = time.monotonic,
    engine_kind: str = "reference",
    **settings: Any,
) -> AgentRig:
    """An in-process agent for ``pod`` with short intervals; the pod object is created. Agents
    made with the same ``tmp_path`` share one weights volume (a restarted agent)."""
    create_pod(core, pod)
    annotations_file = tmp_path / "podinfo" / "annotations"
    write_downward_file(annotations_file, pod_dict(core, pod))
    config = AgentConfig(
        store=store_uri,
        model=MODEL,
        annotations_file=annotations_file,
        weights_dir=tmp_path / "models" / "weights",
        engine=engine_kind,
        engine_url=engine_url,
        pod_name=pod,
        pod_namespace=NAMESPACE,
        poll_interval_s=0.05,
        retry_initial_s=0.01,
        retry_max_s=0.05,
        engine_timeout_s=120.0,
        **settings,
    )
    volume = WeightsVolume(config.weights_dir)
    reporter = CheckingReporter(
        PodReporter(core, NAMESPACE, pod), volume.weights, engine_url, engine_kind
    )
    agent = Agent(
        config,
        store=Store(store_uri, cache_dir=volume.cache_dir, retry=FAST_RETRY),
        engine=engine_client(engine_kind, engine_url, timeout=120.0),
        reporter=reporter,
        clock=clock,
    )
    return AgentRig(agent, reporter, annotations_file, core, pod)


def flip_untouched_byte(weights: Path, base: Path) -> tuple[str, Path]:
    """Flip one byte of ``weights`` that the last delta left as it was in ``base`` (an untouched
    region), with a plain write; returns the tensor's name and its file."""
    checkpoint, before = open_checkpoint(weights), open_checkpoint(base)
    for name, ref in checkpoint.tensors.items():
        now = np.fromfile(ref.path, dtype=np.uint8, count=ref.nbytes, offset=ref.begin)
        old = before.tensors[name]
        then = np.fromfile(old.path, dtype=np.uint8, count=old.nbytes, offset=old.begin)
        same = np.flatnonzero(now == then)
        if len(same):
            offset = ref.begin + int(same[len(same) // 2])
            with ref.path.open("r+b") as f:
                f.seek(offset)
                f.write(bytes([now[offset - ref.begin] ^ 0x01]))
            return name, ref.path
    raise AssertionError("the last delta changed every byte")


def assert_same_files(weights: Path, published: Path) -> None:
    """Every file of the published checkpoint is in ``weights``, byte for byte."""
    originals = sorted(p for p in published.iterdir() if p.is_file())
    assert originals
    for original in originals:
        assert (weights / original.name).read_bytes() == original.read_bytes(), original.name


class S3Server(MotoS3):
    """moto's S3 server that can go away and come back, with the agent's credentials."""

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "AKIAAGENTTEST",
            "AWS_SECRET_ACCESS_KEY": "agent-test-secret",
            "AWS_ALLOW_HTTP": "true",
        }

    def upload_store(self, published: Published, bucket: str) -> str:
        """Copy a file:// store into a new bucket, key for key; returns the s3:// URI."""
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="AKIAAGENTTEST",
            aws_secret_access_key="agent-test-secret",
        )
        client.create_bucket(Bucket=bucket)
        for path in sorted(published.root.rglob("*")):
            if path.is_file():
                key = f"models/{path.relative_to(published.root).as_posix()}"
                client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
        return f"s3://{bucket}/models"
