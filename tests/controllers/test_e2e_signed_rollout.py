"""Signed versions in the cluster, end to end on the sandbox: the real operator holding the
signing key (as the chart mounts it: in the operator only), a ModelDelta Job in the tenant's
namespace, an inference pod with the real agent and reference engine, a ModelDeployment that
requires signatures.

- The operator checks what the ModelDelta's Job published and signs it with its key (the Job
  never sees the key); the ModelDeployment, naming that key's public half, rolls v1 -> v2.
- Every pod carries the key (``deltaroll.dev/verify-keys``) from the patch that gave it a
  version: the agent was given no key of its own.
- v3, pushed to the bucket without a signature, is refused: the ModelDeployment is Degraded with
  reason VersionNotSigned and moves no pod; with the operator stopped and the pod pointed at v3
  by hand, the agent itself refuses it and the pod stays Ready on its verified v2.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from agent.helpers import MODEL, NAMESPACE, Published
from agent.sandbox_pods import inference_pod, view
from controllers.conftest import Operator, wait_for
from controllers.modeldelta_world import apply, get, modeldelta
from controllers.test_e2e_rollout import deployment as rollout_deployment
from deltaroll.api.agent_state import AgentState
from deltaroll.api.annotations import POD_VERIFY_KEYS, POD_VERSION
from deltaroll.checkpoint import checkpoint_version
from deltaroll.store import Store
from deltaroll.store.signing import SigningKey, generate_key_pair, load_signing_key
from deltaroll_sandbox.testing import RunningSandbox
from engines.checkpoints import TinyCheckpoints, build_with_one_thread

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
GROUP, VERSION, PLURAL = "deltaroll.dev", "v1alpha1", "modeldeployments"
NAME, POD = "signed-serving", "signed-0"
TIMEOUT_S = 300.0  # an engine imports torch and transformers on two busy cores


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> TinyCheckpoints:
    return build_with_one_thread(tmp_path_factory.mktemp("llama"))


@pytest.fixture
def operator_key(tmp_path: Path) -> tuple[SigningKey, str]:
    """The operator's key pair: (private key, public PEM for spec.verification)."""
    generate_key_pair(tmp_path / "operator.pem", tmp_path / "operator.pub")
    return load_signing_key(tmp_path / "operator.pem"), (tmp_path / "operator.pub").read_text()


@pytest.fixture
def signing_operator(
    cluster: RunningSandbox,
    tmp_path: Path,
    operator_key: tuple[SigningKey, str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Operator]:
    """``deltaroll operator run`` with DELTAROLL_SIGNING_KEY, as the chart's signing values set."""
    monkeypatch.setenv("DELTAROLL_SIGNING_KEY", str(tmp_path / "operator.pem"))
    running = Operator(cluster, tmp_path / "operator.log")
    running.start()
    yield running
    running.stop()


def deployment(uri: str, version: str, public_pem: str) -> dict[str, Any]:
    """The rollout tests' ModelDeployment, all at once (no steps), requiring signatures."""
    body = rollout_deployment(Published(uri, Path(), {}, {}), version)
    body["metadata"]["name"] = NAME
    spec = body["spec"]
    del spec["strategy"], spec["analysisTemplates"]
    spec["selector"] = {"matchLabels": {"app": "tiny-signed"}}
    spec["verification"] = {"publicKeys": [public_pem]}
    return body


def test_a_deployment_requiring_signatures_rolls_out_what_the_operator_signed_and_refuses_the_rest(
    cluster: RunningSandbox,
    signing_operator: Operator,
    operator_key: tuple[SigningKey, str],
    llama: TinyCheckpoints,
    tmp_path: Path,
) -> None:
    key, public_pem = operator_key
    uri = f"file://{tmp_path / 'store'}"
    store = Store(uri, cache_dir=tmp_path / "push-cache")
    v1 = store.push(MODEL, llama.v1, name="v1").version
    store.sign(MODEL, v1, key, names=["v1"])  # the first version, signed by its publisher
    v2 = checkpoint_version(llama.v2)
    v3 = store.push(MODEL, llama.diverged, base=llama.v1, name="v3").version  # nobody signed it
    apply(cluster, modeldelta("v2", uri, llama.v2, parent="v1"))

    client = cluster.api_client()
    core = kubernetes.client.CoreV1Api(client)
    custom = kubernetes.client.CustomObjectsApi(client)
    pod = inference_pod(POD, store_uri=uri, version="", store_env={})
    del pod["metadata"]["annotations"][POD_VERSION]  # the operator gives it one, with the keys
    pod["metadata"]["labels"] = {"app": "tiny-signed"}
    core.create_namespaced_pod(NAMESPACE, pod)
    custom.create_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL, deployment(uri, "v1", public_pem)
    )

    def status() -> dict[str, Any]:
        body = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, NAME)
        return dict(body.get("status") or {})

    def phase(wanted: str, **fields: Any) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            now = status()
            ok = now.get("phase") == wanted and all(now.get(k) == v for k, v in fields.items())
            return now if ok else None

        return wait_for(  # type: ignore[no-any-return]
            check,
            TIMEOUT_S,
            f"{NAME} {wanted} {fields}",
            lambda: json.dumps(status()) + "\n" + signing_operator.log(),
        )

    def serves(version_id: str) -> bool:
        seen = view(core, POD)
        return (
            seen.current == version_id and seen.state is AgentState.READY and seen.ready == "True"
        )

    phase("Healthy", stableVersion="v1")
    annotations = core.read_namespaced_pod(POD, NAMESPACE).metadata.annotations
    assert annotations[POD_VERIFY_KEYS] == key.public.inline()
    assert serves(v1)

    # The ModelDelta's Job published v2 in the tenant's namespace; the operator signed it.
    def published() -> dict[str, Any] | None:
        body = get(cluster, "modeldelta", "v2") or {}
        return body if (body.get("status") or {}).get("phase") in ("Ready", "Failed") else None

    delta = wait_for(published, TIMEOUT_S, "ModelDelta v2 published", signing_operator.log)
    assert (delta["status"]["phase"], delta["status"]["versionId"]) == ("Ready", v2), delta
    assert delta["status"]["signedBy"] == key.public.key_id
    signed = store.signed(MODEL, v2, [key.public], name="v2").statement
    assert signed.origin == f"operator:modeldelta/{NAMESPACE}/v2" and list(signed.names) == ["v2"]
    assert (signed.namespace, signed.store) == (NAMESPACE, store.catalog.backend.uri)

    custom.patch_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL, NAME, {"spec": {"version": "v2"}}
    )
    phase("Healthy", stableVersion="v2")
    assert serves(v2)

    # v3 is in the bucket, unsigned: held with its reason, no pod moves.
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL, NAME, {"spec": {"version": "v3"}}
    )
    held = phase("Degraded")
    degraded = next(c for c in held["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "VersionNotSigned", held
    assert f"{v3} of '{MODEL}' is not signed by an accepted key" in degraded["message"]
    assert view(core, POD).wanted == "v2" and serves(v2)

    # Even pointed at v3 behind the operator's back, the agent refuses it with the keys the
    # operator wrote, and the pod keeps serving v2.
    signing_operator.stop()
    core.patch_namespaced_pod(POD, NAMESPACE, {"metadata": {"annotations": {POD_VERSION: "v3"}}})

    def failed() -> Any:
        seen = view(core, POD)
        return seen if seen.state is AgentState.FAILED else None

    refused = wait_for(failed, TIMEOUT_S, "the agent refusing v3")
    assert "not signed by an accepted key" in refused.message, refused
    assert refused.current == v2 and refused.ready == "True"
    assert not (tmp_path / "store" / MODEL / "signatures" / v3).exists()
