"""The GitOps health checks judge real planner statuses: Argo CD's Lua (run with lupa) and the
Flux healthCheckExprs example (CEL, run with celpy)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from controllers.flux_cel import flux_status
from controllers.rollout_world import World, canary, make_spec

REPO = Path(__file__).resolve().parents[2]
ARGOCD_CM = REPO / "charts" / "deltaroll" / "health" / "argocd-cm.yaml"


def argocd_script(kind: str) -> str:
    """The health script for ``kind`` from the argocd-cm file users apply."""
    config_map = yaml.safe_load(ARGOCD_CM.read_text())
    return str(config_map["data"][f"resource.customizations.health.deltaroll.dev_{kind}"])


def lua_health(script: str, obj: dict[str, Any]) -> dict[str, str]:
    import lupa

    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script)
    return {"status": result["status"], "message": result["message"]}


def flux_health(kind: str, obj: dict[str, Any]) -> str:
    manifest = yaml.safe_load((REPO / "examples" / "flux-kustomization.yaml").read_text())
    (check,) = [c for c in manifest["spec"]["healthCheckExprs"] if c["kind"] == kind]
    return flux_status(check, obj)


def deployment(status: Any, generation: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"name": "qwen3", "generation": generation},
        "spec": {},
        "status": status.to_wire(),
    }


@pytest.fixture(scope="module")
def samples() -> dict[str, Any]:
    """Statuses the planner itself wrote along a rollout that pauses and then is aborted."""
    world = World.on("v1", 2, make_spec(strategy=canary({"setWeight": 50}, {"pause": {}})))
    progressing = world.tick().status
    world.agents_obey = True
    paused = world.until("Paused").status
    world.annotations["deltaroll.dev/abort"] = "true"
    degraded = world.tick().status
    world.spec = world.spec.model_copy(update={"version": "v1"})
    healthy = world.until("Healthy").status
    return {
        "progressing": progressing,
        "paused": paused,
        "degraded": degraded,
        "healthy": healthy,
    }


@pytest.mark.parametrize(
    ("sample", "argo", "flux"),
    [
        ("progressing", "Progressing", "InProgress"),
        ("paused", "Suspended", "InProgress"),
        ("degraded", "Degraded", "Failed"),
        ("healthy", "Healthy", "Current"),
    ],
)
def test_modeldeployment_health(samples: dict[str, Any], sample: str, argo: str, flux: str) -> None:
    script = argocd_script("ModelDeployment")
    obj = deployment(samples[sample])
    judged = lua_health(script, obj)
    assert judged["status"] == argo
    assert judged["message"] == samples[sample].message
    assert flux_health("ModelDeployment", obj) == flux


def test_a_status_from_an_older_generation_is_progressing(samples: dict[str, Any]) -> None:
    script = argocd_script("ModelDeployment")
    obj = deployment(samples["healthy"], generation=2)  # git changed spec.version just now
    judged = lua_health(script, obj)
    assert judged["status"] == "Progressing"
    assert "generation 2" in judged["message"]
    assert flux_health("ModelDeployment", obj) == "InProgress"
    no_status = lua_health(script, {"metadata": {"generation": 1}})
    assert no_status["status"] == "Progressing"


def test_degraded_message_says_why_and_what_to_do(samples: dict[str, Any]) -> None:
    judged = lua_health(argocd_script("ModelDeployment"), deployment(samples["degraded"]))
    assert "aborted by request" in judged["message"]
    assert "kubectl deltaroll retry" in judged["message"]


@pytest.mark.parametrize(
    ("phase", "argo", "flux"),
    [
        ("Pending", "Progressing", "InProgress"),
        ("Computing", "Progressing", "InProgress"),
        ("Ready", "Healthy", "Current"),
        ("Failed", "Degraded", "Failed"),
    ],
)
def test_modeldelta_health(phase: str, argo: str, flux: str) -> None:
    status = {"phase": phase, "observedGeneration": 1, "versionId": "ab12"}
    if phase == "Failed":
        status["message"] = "parent step-119 not found in s3://models/qwen3"
    obj = {"metadata": {"name": "step-120", "generation": 1}, "spec": {}, "status": status}
    judged = lua_health(argocd_script("ModelDelta"), obj)
    assert judged["status"] == argo
    if phase == "Failed":
        assert judged["message"] == status["message"]
    assert flux_health("ModelDelta", obj) == flux


@pytest.mark.parametrize(
    "status",
    [
        None,  # before the operator's first write
        {"phase": "Ready", "versionId": "ab12"},  # no observedGeneration: not judged yet
        {"phase": "Failed", "observedGeneration": 1},  # judged an older spec
    ],
)
def test_a_modeldelta_not_judged_at_this_generation_is_progressing(
    status: dict[str, Any] | None,
) -> None:
    obj: dict[str, Any] = {"metadata": {"name": "step-120", "generation": 2}, "spec": {}}
    if status is not None:
        obj["status"] = status
    assert lua_health(argocd_script("ModelDelta"), obj)["status"] == "Progressing"


def test_the_argocd_cm_file_applies_only_the_health_keys() -> None:
    config_map = yaml.safe_load(ARGOCD_CM.read_text())
    assert (config_map["apiVersion"], config_map["kind"]) == ("v1", "ConfigMap")
    assert config_map["metadata"] == {"name": "argocd-cm", "namespace": "argocd"}
    assert sorted(config_map["data"]) == [
        "resource.customizations.health.deltaroll.dev_ModelDelta",
        "resource.customizations.health.deltaroll.dev_ModelDeployment",
    ]


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("ModelDeployment", {}),  # a status object with none of the operator's fields yet
        ("ModelDeployment", {"phase": "Healthy"}),  # no observedGeneration: not yet judged
        ("ModelDeployment", {"observedGeneration": 1}),
        ("ModelDelta", {}),
        ("ModelDelta", {"phase": "Ready"}),
        ("ModelDelta", {"observedGeneration": 1}),
    ],
)
def test_flux_reads_a_status_without_its_fields_yet_as_in_progress(
    kind: str, status: dict[str, Any]
) -> None:
    obj = {"metadata": {"name": "qwen3", "generation": 1}, "spec": {}, "status": status}
    assert flux_health(kind, obj) == "InProgress"


@pytest.mark.parametrize("kind", ["ModelDeployment", "ModelDelta"])
def test_before_the_first_status_flux_polls_again(kind: str) -> None:
    """No expression can see a status that is not there (cel-go errors even in has()): Unknown
    until the operator's first write, which then decides."""
    obj = {"metadata": {"name": "qwen3", "generation": 1}, "spec": {}}
    assert flux_health(kind, obj) == "Unknown"
