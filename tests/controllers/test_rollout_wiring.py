"""The small pure pieces around the planner: label selectors both ways, what a ModelDelta says
about spec.version, and whose look at its signature counts for whom."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controllers.rollout_world import make_spec
from deltaroll.api.modeldeployment import LabelSelector
from deltaroll.controllers.errors import SecretNotFoundError
from deltaroll.controllers.modeldeployment import signature
from deltaroll.controllers.modeldeployment.overlap import selects
from deltaroll.controllers.modeldeployment.planner import TargetVersion
from deltaroll.controllers.modeldeployment.target import (
    StoreIdentity,
    from_modeldeltas,
    from_store,
)
from deltaroll.controllers.modeldeployment.writes import label_selector
from deltaroll.store import Store
from deltaroll.store.signing import generate_key_pair, load_signing_key

SELECTOR = {
    "matchLabels": {"app": "llm", "tier": "serve"},
    "matchExpressions": [
        {"key": "zone", "operator": "In", "values": ["a", "b"]},
        {"key": "canary-off", "operator": "DoesNotExist"},
        {"key": "gpu", "operator": "Exists"},
        {"key": "pool", "operator": "NotIn", "values": ["batch"]},
    ],
}


def test_label_selector_query_parameter() -> None:
    assert label_selector(LabelSelector.model_validate(SELECTOR)) == (
        "app=llm,tier=serve,zone in (a,b),!canary-off,gpu,pool notin (batch)"
    )


@pytest.mark.parametrize(
    ("labels", "chosen"),
    [
        ({"app": "llm", "tier": "serve", "zone": "a", "gpu": "h100"}, True),
        ({"app": "llm", "tier": "serve", "zone": "c", "gpu": "h100"}, False),
        ({"app": "llm", "tier": "serve", "zone": "a"}, False),
        ({"app": "llm", "tier": "serve", "zone": "a", "gpu": "1", "canary-off": "x"}, False),
        ({"app": "llm", "tier": "serve", "zone": "b", "gpu": "1", "pool": "batch"}, False),
        ({"app": "other", "tier": "serve", "zone": "a", "gpu": "1"}, False),
    ],
)
def test_pod_events_reach_the_deployments_that_select_the_pod(
    labels: dict[str, str], chosen: bool
) -> None:
    assert selects(SELECTOR, labels) is chosen
    assert selects({}, labels) is False  # an empty selector never chooses every pod


def modeldelta(name: str, phase: str | None, **spec: Any) -> dict[str, Any]:
    status = {"phase": phase, "versionId": "sha-" + name, "message": "Job running"} if phase else {}
    return {
        "metadata": {"name": name},
        "spec": {"model": "qwen3", "store": {"uri": "file:///tmp/store"}, **spec},
        "status": status,
    }


def test_the_modeldelta_of_spec_version_decides() -> None:
    spec = make_spec()
    assert from_modeldeltas([modeldelta("v2", "Ready")], spec, "v2") == TargetVersion(
        "Ready", version_id="sha-v2"
    )
    computing = from_modeldeltas([modeldelta("v2", "Computing")], spec, "v2")
    assert computing == TargetVersion("Pending", "ModelDelta v2 is Computing: Job running")
    failed = from_modeldeltas([modeldelta("delta-2", "Failed", version="v2")], spec, "v2")
    assert failed is not None and failed.state == "Failed"
    other_store = modeldelta("v2", "Ready", store={"uri": "file:///elsewhere"})
    assert from_modeldeltas([other_store, modeldelta("v3", "Ready")], spec, "v2") is None


def test_without_a_modeldelta_the_store_is_asked(tmp_path: Any) -> None:
    spec = make_spec(store={"uri": f"file://{tmp_path}/store"})
    missing = from_store(spec, "v2", StoreIdentity("ml", lambda: None))
    assert missing.state == "Pending"
    assert "not in file://" in missing.message and "no ModelDelta publishes it" in missing.message


def test_a_signature_one_tenant_found_is_not_taken_as_found_for_another(
    tmp_path: Path, trained: list[Path]
) -> None:
    """Team A (its Secret reads the store) has step-0's signature checked; team B names the same
    store, version and keys with a Secret that does not exist: it is not told "signed"."""
    generate_key_pair(tmp_path / "key.pem", tmp_path / "key.pub")
    uri = f"file://{tmp_path / 'store'}"
    store = Store(uri, cache_dir=tmp_path / "cache")
    version = store.push("tiny", trained[0], name="step-0").version
    store.sign("tiny", version, load_signing_key(tmp_path / "key.pem"), names=["step-0"])
    spec = make_spec(
        model="tiny",
        version="step-0",
        store={"uri": uri, "secretRef": {"name": "creds"}},
        verification={"publicKeys": [(tmp_path / "key.pub").read_text()]},
    )
    target = TargetVersion("Ready", version_id=version)

    def no_secret() -> dict[str, str]:
        raise SecretNotFoundError("Secret creds (spec.store.secretRef) not found in namespace b")

    assert signature.check(spec, target, StoreIdentity("team-a", dict)) == target
    theirs = signature.check(spec, target, StoreIdentity("team-b", no_secret))
    assert theirs.state == "Pending" and "not found in namespace b" in theirs.message
