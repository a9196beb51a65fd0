"""A small world for driving the pure rollout planner: a spec, pods whose agents obey, a clock.

``World.tick()`` runs the planner once, applies its pod annotations and status, removes the
request annotations it handled, and (unless told otherwise) lets every agent reach the version
its pod asks for, so a test reads as a sequence of reconciles.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from deltaroll.api.agent_state import AgentState
from deltaroll.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from deltaroll.controllers.modeldeployment.overlap import Overlap
from deltaroll.controllers.modeldeployment.planner import Observed, Plan, TargetVersion, plan
from deltaroll.controllers.modeldeployment.pods import PodView

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def make_spec(**overrides: Any) -> ModelDeploymentSpec:
    """A valid spec (wire form keys) with the given top-level fields replaced."""
    body: dict[str, Any] = {
        "model": "qwen3",
        "store": {"uri": "file:///tmp/store"},
        "version": "v2",
        "selector": {"matchLabels": {"app": "llm"}},
        "engine": {"kind": "reference"},
        "maxUnavailable": 1,
    }
    body.update(overrides)
    return ModelDeploymentSpec.model_validate(body)


def canary(*steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"canary": {"steps": list(steps), **extra}}


HTTP_TEMPLATE = {
    "name": "loss",
    "provider": {"http": {"body": '{"texts": ["hello"]}'}},
    "successCondition": "result <= baseline * 1.05",
}


@dataclass
class World:
    spec: ModelDeploymentSpec
    pods: dict[str, PodView]
    status: ModelDeploymentStatus | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    target: TargetVersion = field(default_factory=TargetVersion)
    version_ids: dict[str, str] = field(default_factory=dict)
    now: datetime = T0
    generation: int = 1
    agents_obey: bool = True
    overlap: Overlap | None = None
    plans: list[Plan] = field(default_factory=list)
    written: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def on(cls, version: str | None, count: int, spec: ModelDeploymentSpec, **kw: Any) -> World:
        """``count`` pods serving ``version`` (None: brand-new pods), ``version`` stable."""
        pods = {f"pod-{i}": serving(f"pod-{i}", version) for i in range(count)}
        status = None
        if version is not None:
            status = ModelDeploymentStatus.model_validate(
                {
                    "phase": "Healthy",
                    "stableVersion": version,
                    "history": [{"version": version, "promotedAt": "2026-01-01T00:00:00Z"}],
                }
            )
        return cls(spec=spec, pods=pods, status=status, **kw)

    def tick(
        self, advance_s: float = 1, measured: frozenset[tuple[str, int | None]] = frozenset()
    ) -> Plan:
        """Plan once, ``advance_s`` later; ``measured``: the runs the handler measured before."""
        self.now += timedelta(seconds=advance_s)
        result = plan(
            self.spec,
            self.status,
            Observed(
                generation=self.generation,
                pods=tuple(self.pods.values()),
                annotations=dict(self.annotations),
                target=self.target,
                version_ids=self.version_ids,
                overlap=self.overlap,
                measured=measured,
            ),
            self.now,
        )
        self.plans.append(result)
        self.written.append(result.pod_versions)
        for name, version in result.pod_versions.items():
            self.pods[name] = replace(
                self.pods[name],
                wanted=version,
                version_set_at=self.now,
                ready=False,
                agent_state=AgentState.PULLING,
            )
        for name, keys in result.pod_keys.items():
            self.pods[name] = replace(self.pods[name], verify_keys=keys)
        for key in result.handled_requests:
            self.annotations.pop(key, None)
        self.status = result.status
        if self.agents_obey:
            self.settle()
        return result

    def settle(self) -> None:
        """Every agent reaches the version its pod wants."""
        for name, pod in self.pods.items():
            if pod.wanted is not None:
                self.pods[name] = replace(
                    pod, current=pod.wanted, agent_state=AgentState.READY, ready=True
                )

    def until(self, phase: str, limit: int = 50, advance_s: float = 1) -> Plan:
        for _ in range(limit):
            result = self.tick(advance_s)
            if result.status.phase == phase:
                return result
        raise AssertionError(f"never reached {phase}: {self.status}")

    def versions(self) -> dict[str, str | None]:
        return {name: pod.wanted for name, pod in self.pods.items()}

    def count(self, version: str) -> int:
        return sum(1 for pod in self.pods.values() if pod.wanted == version)

    def events(self) -> list[tuple[str, str]]:
        return [(e.type, e.reason) for p in self.plans for e in p.events]


def serving(name: str, version: str | None) -> PodView:
    if version is None:
        return PodView(name=name)
    return PodView(
        name=name, wanted=version, current=version, agent_state=AgentState.READY, ready=True
    )
