"""The operator's indexes route an event to the ModelDeployments it concerns by looking up the
event's own keys (a pod's labels, a ModelDelta's model and store), never by scanning every
ModelDeployment of the namespace; and no handler makes Kopf put a finalizer on one."""

from __future__ import annotations

import importlib
from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import kopf

from deltaroll.controllers.modeldeployment.routing import (
    Lookups,
    PodRoutes,
    modeldelta_index,
    rollout_index,
    selector_index,
    yielding_index,
)

STORE = {"uri": "file:///store"}


def index(fn: Callable[[str, Mapping[str, Any]], dict[Hashable, Any]], *bodies: Any) -> Any:
    """What Kopf's index would hold after seeing ``bodies`` (all in namespace ``ml``)."""
    held: defaultdict[Hashable, list[Any]] = defaultdict(list)
    for body in bodies:
        for key, value in fn("ml", body).items():
            held[key].append(value)
    return dict(held)


def md(name: str, selector: dict[str, Any], **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"model": "qwen3", "store": STORE, "version": "v2", "selector": selector},
        "status": status,
    }


FLEET = [md(f"app-{i}", {"matchLabels": {"app": f"a{i}", "tier": "serve"}}) for i in range(500)]
BY_EXPRESSION = md("gpu", {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]})


def test_a_pod_finds_the_deployments_selecting_it_under_its_own_labels() -> None:
    selectors = index(selector_index, *FLEET, BY_EXPRESSION)
    assert len(selectors[("ml", "app", "a7")]) == 1  # filed under its first matchLabel only
    assert ("ml", "tier", "serve") not in selectors
    lookups = Lookups(selectors=selectors)
    names = {c.name for c in lookups.claimants("ml", {"app": "a7", "tier": "serve", "gpu": "1"})}
    assert names == {"app-7", "gpu"}
    assert lookups.claimants("ml", {"app": "a7"}) == []  # tier missing: not selected
    assert lookups.claimants("other", {"app": "a7", "tier": "serve"}) == []
    pods = [{"metadata": {"labels": {"app": f"a{i}", "tier": "serve"}}} for i in (1, 2, 2)]
    assert {c.name for c in lookups.claimants_of("ml", pods)} == {"app-1", "app-2"}


def test_a_modeldelta_wakes_the_deployments_rolling_out_its_version() -> None:
    other = md("other", {"matchLabels": {"app": "x"}})
    other["spec"]["version"] = "v3"
    elsewhere = md("elsewhere", {"matchLabels": {"app": "y"}})
    elsewhere["spec"]["store"] = {"uri": "file:///elsewhere"}
    delta = {
        "metadata": {"name": "qwen3-v2"},
        "spec": {"model": "qwen3", "store": STORE, "version": "v2", "parent": "v1"},
        "status": {"phase": "Ready", "versionId": "sha-v2", "startTime": "ignored"},
    }
    lookups = Lookups(
        rollouts=index(rollout_index, *FLEET[:3], other, elsewhere),
        modeldeltas=index(modeldelta_index, delta),
    )
    assert lookups.waiting_for("ml", delta) == ["app-0", "app-1", "app-2"]
    (kept,) = lookups.modeldeltas_of("ml", "qwen3", STORE["uri"])
    assert kept == {
        "metadata": {"name": "qwen3-v2"},
        "spec": {"model": "qwen3", "store": STORE, "version": "v2"},
        "status": {"phase": "Ready", "versionId": "sha-v2"},
    }
    assert lookups.modeldeltas_of("ml", "qwen3", "file:///elsewhere") == []


def test_a_pod_leaving_a_selector_is_routed_to_the_deployment_it_leaves() -> None:
    routes = PodRoutes()
    assert routes.route("ml", "p0", ["older", "younger"], gone=False) == ["older", "younger"]
    assert routes.route("ml", "p0", ["younger"], gone=False) == ["older", "younger"]
    assert routes.route("ml", "p0", ["younger"], gone=False) == ["younger"]
    assert routes.route("ml", "p0", [], gone=True) == ["younger"]  # gone: its last owner looks
    assert routes.route("ml", "p0", [], gone=False) == []


def test_only_deployments_yielding_their_pods_are_indexed_as_yielding() -> None:
    yielding = md(
        "young",
        {"matchLabels": {"app": "x"}},
        conditions=[{"type": "Degraded", "status": "True", "reason": "SelectorOverlap"}],
    )
    aborted = md(
        "aborted",
        {"matchLabels": {"app": "y"}},
        conditions=[{"type": "Degraded", "status": "True", "reason": "Aborted"}],
    )
    lookups = Lookups(yielding=index(yielding_index, yielding, aborted, FLEET[0]))
    assert lookups.yielders("ml") == ["young"]


def test_no_modeldeployment_handler_makes_kopf_add_a_finalizer() -> None:
    """Kopf adds its finalizer for a timer or daemon (``requires_finalizer=True``) and for a
    mandatory delete handler; a ModelDeployment must be deletable with the operator down."""
    import deltaroll.controllers.modeldelta.handlers as modeldelta
    import deltaroll.controllers.modeldeployment.handlers as modeldeployment

    registry = kopf.OperatorRegistry()
    default = kopf.get_default_registry()
    kopf.set_default_registry(registry)
    try:  # their decorators again, into a registry of this test's own
        importlib.reload(modeldeployment)
        importlib.reload(modeldelta)
    finally:
        kopf.set_default_registry(default)
    finalizing = [
        (h.id, h.selector)
        for h in [*registry._spawning.get_all_handlers(), *registry._changing.get_all_handlers()]
        if h.requires_finalizer
    ]
    # only ModelDelta's delete handler, and only with deletionPolicy: Delete (its `when`)
    assert [str(handler_id) for handler_id, _ in finalizing] == ["delete_version"]
    assert finalizing[0][1].any_name == "modeldeltas"
    assert registry._spawning.get_all_handlers() == []
