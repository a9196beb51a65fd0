"""The rollout story, step by step, on the sandbox with the real operator, agents and engines.

Each step acts as a user would (kubectl-equivalent API calls, ``deltaroll push``), then waits
for the cluster to report the expected state; every wait refreshes the narration. What the
summary and the final JSON say is read back from the API, the agents and the store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deltaroll_demo import manifests
from deltaroll_demo.errors import DemoStepFailed
from deltaroll_demo.manifests import (
    API_VERSION,
    DEPLOYMENT,
    GROUP,
    MODEL,
    NAMESPACE,
    RESTRICTED,
)
from deltaroll_demo.model import TRAINING_STEPS, Checkpoints, eval_texts, train
from deltaroll_demo.narration import Narrator, Snapshot
from deltaroll_demo.observe import Cluster, Pod, WantedWatch, downloaded_bytes
from deltaroll_sandbox.policy import write_local_policy

REPLICAS = 4
WAIT_S = float(os.environ.get("DELTAROLL_DEMO_WAIT_S", "300"))  # per step of the rollout
PUSH_TIMEOUT_S = 300.0
DELTAROLL = Path(sys.executable).parent / "deltaroll"


@dataclass
class Record:
    """What the story saw: the facts the summary and the checks are made of."""

    ids: dict[str, str] = field(default_factory=dict)  # v1/v2/v3 -> version id
    full_checkpoint_bytes: int = 0
    parameters: int = 0
    downloaded_after: dict[str, dict[str, int]] = field(default_factory=dict)  # version -> pod ->
    wanted_counts: dict[str, set[int]] = field(default_factory=dict)  # version -> pods asked, seen
    deltas: dict[str, dict[str, Any]] = field(default_factory=dict)  # v2/v3 -> ModelDelta status
    after: dict[str, dict[str, Any]] = field(default_factory=dict)  # v1/v2/v3 -> rollout status
    pods_after: dict[str, list[Pod]] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)  # reasons of the ModelDeployment's Events


def crds_directory() -> Path:
    """The repository's crds/ (what a user applies)."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "crds" / "modeldeployments.yaml").exists():
            return parent / "crds"
    raise DemoStepFailed("crds/ not found: run the demo from a checkout of the repository")


class Story:
    """One run of the demo in ``workdir`` on the running sandbox ``sandbox``."""

    def __init__(self, sandbox: Any, workdir: Path, narrator: Narrator) -> None:
        self.sandbox = sandbox
        self.workdir = workdir
        self.narrator = narrator
        self.store_uri = f"file://{workdir / 'store'}"
        self.cluster = Cluster(sandbox.api_client())
        self.record = Record()
        self.operator: subprocess.Popen[bytes] | None = None
        self.checkpoints: Checkpoints | None = None

    # -- the steps -------------------------------------------------------------------------

    def install(self) -> None:
        with self.narrator.step("crds", "kubectl apply -f crds/") as bar:
            done = self.sandbox.kubectl("apply", "-f", str(crds_directory()), check=False)
            if done.returncode != 0:
                raise DemoStepFailed(f"applying the CRDs failed: {done.stderr.strip()}")
            crds = len(done.stdout.splitlines())
            # the chart's agent identity: ServiceAccount, Role, the own-pod admission policy
            body = yaml.safe_dump_all(manifests.agent_access())
            done = self.sandbox.kubectl("apply", "-f", "-", input=body, check=False)
            if done.returncode != 0:
                raise DemoStepFailed(f"applying the agent's access failed: {done.stderr.strip()}")
            bar.show(f"{crds} CRDs")
        with self.narrator.step("namespace", f"enforce Pod Security restricted in {NAMESPACE}"):
            self.sandbox.kubectl("label", "namespace", NAMESPACE, *RESTRICTED)
        with self.narrator.step("operator", "start the operator (deltaroll operator run)"):
            self.start_operator()

    def start_operator(self) -> None:
        env = {
            **self.sandbox.env(),
            "DELTAROLL_LOG_FORMAT": "console",
        }
        policy = write_local_policy(self.workdir / "policy.json", self.workdir)
        with (self.workdir / "operator.log").open("ab") as log:
            self.operator = subprocess.Popen(
                # Namespace scope, as the Helm chart installs it by default.
                [
                    str(DELTAROLL),
                    "operator",
                    "run",
                    f"--namespace={NAMESPACE}",
                    "--standalone",
                    f"--policy={policy}",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop_operator(self) -> None:
        if self.operator is not None and self.operator.poll() is None:
            os.killpg(self.operator.pid, signal.SIGTERM)
            try:
                self.operator.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.operator.pid, signal.SIGKILL)

    def train(self) -> Checkpoints:
        from deltaroll.checkpoint import checkpoint_version

        title = "train a small Llama (AdamW, bf16 v1 v2 v3)"
        with self.narrator.step("train", title, total=TRAINING_STEPS) as bar:

            def on_step(label: str, step: int, count: int) -> None:
                bar.advance()
                bar.show(f"{label} step {step}/{count}")

            checkpoints = train(self.workdir / "checkpoints", on_step)
            bar.show(f"{checkpoints.parameters / 1e6:.1f}M parameters")
        self.checkpoints = checkpoints
        self.record.parameters = checkpoints.parameters
        self.record.full_checkpoint_bytes = checkpoints.full_bytes("v1")
        for label, path in checkpoints.paths.items():
            self.record.ids[label] = checkpoint_version(path)
            self.narrator.names[self.record.ids[label]] = label
        return checkpoints

    def publish_anchor(self) -> None:
        assert self.checkpoints is not None
        path = self.checkpoints.paths["v1"]
        with self.narrator.step("push_v1", "deltaroll push --anchor v1 (file:// store)") as bar:
            try:
                done = subprocess.run(
                    [str(DELTAROLL), "push", self.store_uri, MODEL, str(path), "--name", "v1"]
                    + ["--anchor", "--json"],
                    capture_output=True,
                    text=True,
                    env={**os.environ, "DELTAROLL_CACHE_DIR": str(self.workdir / "push-cache")},
                    timeout=PUSH_TIMEOUT_S,
                )
            except subprocess.TimeoutExpired:
                raise DemoStepFailed(f"deltaroll push took over {PUSH_TIMEOUT_S:.0f} s") from None
            if done.returncode != 0:
                raise DemoStepFailed(f"deltaroll push failed: {done.stderr.strip()}")
            bar.show(f"{self.record.full_checkpoint_bytes / 1e6:.1f} MB anchor")

    def deploy_v1(self) -> None:
        assert self.checkpoints is not None
        with self.narrator.step("deploy_v1", f"{REPLICAS} inference pods come up on v1") as bar:
            apps = self._apps()
            apps.create_namespaced_deployment(
                NAMESPACE, manifests.inference_deployment(self.store_uri, REPLICAS)
            )
            self.cluster.custom.create_namespaced_custom_object(
                GROUP, API_VERSION, NAMESPACE, "modeldeployments",
                manifests.model_deployment(self.store_uri, "v1", eval_texts()),
            )  # fmt: skip
            self.wait_settled("v1", bar, phase="Healthy")

    def compute_delta(self, label: str, parent: str) -> None:
        assert self.checkpoints is not None
        name = f"{MODEL}-{label}"
        title = f"ModelDelta {label} (parent {parent}) computed by a Job"
        with self.narrator.step(f"delta_{label}", title) as bar:
            self.cluster.custom.create_namespaced_custom_object(
                GROUP, API_VERSION, NAMESPACE, "modeldeltas",
                manifests.model_delta(
                    self.store_uri, label, parent, self.checkpoints.paths[label]
                ),
            )  # fmt: skip

            def ready() -> dict[str, Any] | None:
                status = self.cluster.delta_status(name)
                bar.show(str(status.get("phase", "Pending")))
                if status.get("phase") == "Failed":
                    raise DemoStepFailed(f"ModelDelta {name} failed: {status.get('message')}")
                return status if status.get("phase") == "Ready" else None

            status = self.wait(ready, f"ModelDelta {name} Ready")
            self.record.deltas[label] = status
            delta = status.get("deltaBytes")
            bar.show(f"Ready, {delta} bytes ({status.get('changedPercent')} changed)")

    def roll_out(self, label: str, *, expect: str, events: set[str]) -> None:
        """spec.version -> ``label``; wait for Healthy on it, or Degraded back on the stable,
        and for the ModelDeployment's ``events`` (Kopf posts them after the status write)."""
        title = f"spec.version -> {label}: canary 25% -> eval analysis -> 50% -> 100%"
        with self.narrator.step(f"rollout_{label}", title) as bar:
            with WantedWatch(self.cluster.core) as watch:
                self.cluster.custom.patch_namespaced_custom_object(
                    GROUP, API_VERSION, NAMESPACE, "modeldeployments", DEPLOYMENT,
                    {"spec": {"version": label}},
                )  # fmt: skip
                self.wait_settled(label, bar, phase=expect)
            self.record.wanted_counts[label] = watch.seen(label, self.record.ids[label])

            def posted() -> list[str] | None:
                reasons = self.cluster.events(DEPLOYMENT)
                return reasons if events <= set(reasons) else None

            self.record.events = self.wait(posted, f"the ModelDeployment's {sorted(events)} Events")

    # -- waiting and recording -------------------------------------------------------------

    def wait_settled(self, label: str, bar: Any, *, phase: str) -> None:
        """Until the ModelDeployment is in ``phase`` and every pod serves what it should then:
        ``label`` when Healthy, the stable version when Degraded (rolled back)."""
        wanted_id = self.record.ids[label]

        def settled() -> bool:
            snapshot = self.refresh()
            rollout = snapshot.rollout
            bar.show(f"{rollout.get('phase', '-')}, step {rollout.get('currentStepIndex', '-')}")
            serving = wanted_id if phase == "Healthy" else self._stable_id(rollout)
            return (
                rollout.get("phase") == phase
                and rollout.get("observedGeneration") is not None
                and len(snapshot.pods) == REPLICAS
                and all(p.current == serving and p.ready for p in snapshot.pods)
                and (phase != "Healthy" or rollout.get("stableVersion") == label)
            )

        self.wait(settled, f"{label}: phase {phase} with every pod Ready on its version")

        def counted() -> Snapshot | None:  # a busy agent may miss one scrape of its /metrics
            snapshot = self.refresh()
            return snapshot if None not in snapshot.downloaded.values() else None

        snapshot = self.wait(counted, f"{label}: every agent's count of downloaded bytes")
        self.record.after[label] = snapshot.rollout
        self.record.pods_after[label] = snapshot.pods
        self.record.downloaded_after[label] = {
            pod: count for pod, count in snapshot.downloaded.items() if count is not None
        }

    def _stable_id(self, rollout: dict[str, Any]) -> str | None:
        stable = rollout.get("stableVersion")
        return self.record.ids.get(stable, stable) if stable else None

    def refresh(self) -> Snapshot:
        pods = self.cluster.pods()
        snapshot = Snapshot(
            pods=pods,
            rollout=self.cluster.deployment_status(),
            downloaded={pod.name: downloaded_bytes(pod) for pod in pods},
        )
        self.narrator.observe(snapshot)
        return snapshot

    def wait(self, predicate: Callable[[], Any], what: str) -> Any:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if self.operator is not None and self.operator.poll() is not None:
                raise DemoStepFailed(
                    f"the operator exited ({self.operator.returncode}) while waiting for {what}; "
                    f"see {self.workdir / 'operator.log'}"
                )
            value = predicate()
            if value:
                return value
            time.sleep(0.3)
        raise DemoStepFailed(
            f"timed out after {WAIT_S:.0f} s waiting for {what}; last rollout status: "
            f"{json.dumps(self.cluster.deployment_status())[:1500]}; "
            f"operator log: {self.workdir / 'operator.log'}"
        )

    def _apps(self) -> Any:
        import kubernetes

        return kubernetes.client.AppsV1Api(self.cluster.core.api_client)
