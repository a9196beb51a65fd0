"""vLLM's and SGLang's ``weight_version`` is a label whoever calls the admin routes sets, not a
digest of what the engine holds: the agent trusts it only when it set it itself. The vLLM and
SGLang stand-ins follow the real routes; the agent runs in-process on the sandbox's API."""

from __future__ import annotations

from pathlib import Path

import kubernetes
import pytest

from agent.helpers import Published, make_agent
from agent.test_reconcile import reach
from deltaroll.engines import engine_client
from engines.fake_engines import FakeEngine, FakeSGLang, FakeVLLM


def stand_in(kind: str, weights: Path) -> FakeEngine:
    """The engine as the pod starts it: on the agent's weights directory."""
    if kind == "vllm":
        return FakeVLLM(served_dir=str(weights))
    return FakeSGLang(model_path=str(weights))


@pytest.mark.parametrize("kind", ["vllm", "sglang"])
def test_a_weight_version_the_agent_did_not_set_is_not_trusted(
    kind: str, tmp_path: Path, core: kubernetes.client.CoreV1Api, published: Published
) -> None:
    """Someone with the admin path loads other weights under the wanted version's label before
    the agent (re)starts: the agent reloads its verified weights instead of going Ready on the
    label."""
    v1 = published.ids["v1"]
    weights = tmp_path / "models" / "weights"  # make_agent's volume, shared by both agents
    with stand_in(kind, weights) as engine:
        first = make_agent(
            tmp_path, core, published.uri, engine.url, f"label-{kind}", engine_kind=kind
        )
        first.want(v1)
        reach(first, v1)
        assert engine.model_path == str(weights.resolve())

        # Through the admin path (any client of the Service on main): other weights, v1's label
        engine_client(kind, engine.url, timeout=60).reload(published.paths["v3"], version=v1)
        assert engine.model_path == str(published.paths["v3"].resolve())

        engine.seen.clear()
        restarted = make_agent(
            tmp_path, core, published.uri, engine.url, f"restarted-{kind}", engine_kind=kind
        )
        restarted.want(v1)
        reach(restarted, v1)
        assert engine.model_path == str(weights.resolve())  # reloaded, label and all
        reload = {"vllm": "/update_weights", "sglang": "/update_weights_from_disk"}[kind]
        assert ("POST", reload) in engine.calls()
        assert restarted.reporter.violations == []
