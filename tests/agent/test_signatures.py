"""An agent that requires signatures, in-process on a real store, engine and API: an unsigned,
a wrongly signed or a renamed version is refused before a byte is fetched or applied, and the
pod stays Ready on its verified version; a rotation (two keys, from the flags and the pod's
annotation) accepts either."""

from __future__ import annotations

from pathlib import Path

import kubernetes
import pytest

from agent.helpers import MODEL, AgentRig, Published, copy_store, make_agent, pod_report
from agent.test_reconcile import reach, served
from deltaroll.api.agent_state import AgentState, parse_agent_state
from deltaroll.api.annotations import POD_VERIFY_KEYS, POD_VERSION
from deltaroll.store.signing import generate_key_pair, load_signing_key
from deltaroll.store.vouch import vouch_and_sign
from engines.processes import RunningEngine

from .helpers import pod_dict, write_downward_file


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    """Two publisher key pairs: ``a``/``a.pub`` and ``b``/``b.pub``."""
    found = {}
    for label in ("a", "b"):
        found[label], found[f"{label}.pub"] = tmp_path / f"{label}.pem", tmp_path / f"{label}.pub"
        generate_key_pair(found[label], found[f"{label}.pub"])
    return found


@pytest.fixture
def copied(tmp_path: Path, published: Published) -> Published:
    """A store of its own (the tests sign and forge in it)."""
    return copy_store(published, tmp_path / "store")


def annotate(rig: AgentRig, annotations: dict[str, str]) -> None:
    rig.core.patch_namespaced_pod(
        rig.pod, "default", {"metadata": {"annotations": annotations}},
        _content_type="application/merge-patch+json",
    )  # fmt: skip
    write_downward_file(rig.annotations_file, pod_dict(rig.core, rig.pod))


def want_again(rig: AgentRig, version: str) -> None:
    """Want ``version`` again after a failure: another version first, for one pass."""
    rig.want(None)
    rig.agent.reconcile_once()
    rig.want(version)


def refused(rig: AgentRig, v1: str, engine: RunningEngine) -> str:
    """One pass must leave the pod Failed, still Ready on ``v1``, with nothing applied."""
    before = {p.name: p.read_bytes() for p in rig.agent.volume.weights.iterdir() if p.is_file()}
    downloaded = rig.downloaded()
    rig.agent.reconcile_once()
    report = pod_report(rig.core, rig.pod)
    state, message = parse_agent_state(report["state"])
    assert state is AgentState.FAILED, message
    assert (report["current"], report["weights_ready"]) == (v1, "True")
    after = {p.name: p.read_bytes() for p in rig.agent.volume.weights.iterdir() if p.is_file()}
    assert after == before and served(engine)["version"] == v1
    assert rig.downloaded() == downloaded  # refused before anything was fetched
    assert rig.reporter.violations == []
    return message


def test_unsigned_and_wrongly_signed_versions_are_refused_and_either_key_of_a_rotation_works(
    tmp_path: Path, core: kubernetes.client.CoreV1Api, copied: Published, engine: RunningEngine,
    keys: dict[str, Path],
) -> None:  # fmt: skip
    store = copied.store()
    v1, v2 = copied.ids["v1"], copied.ids["v2"]
    store.sign(MODEL, v1, load_signing_key(keys["a"]))
    rig = make_agent(
        tmp_path, core, copied.uri, engine.admin_url, "signed", verify_keys=[keys["a.pub"]]
    )
    rig.want(v1)
    reach(rig, v1)

    rig.want(v2)  # published, not signed
    assert "not signed by an accepted key" in refused(rig, v1, engine)

    store.sign(MODEL, v2, load_signing_key(keys["b"]))  # a key this pod does not accept
    want_again(rig, v2)
    assert "not signed by an accepted key" in refused(rig, v1, engine)

    public_b = load_signing_key(keys["b"]).public.inline()
    annotate(rig, {POD_VERIFY_KEYS: public_b})  # the rotation: a second key, from the operator
    want_again(rig, v2)
    reach(rig, v2)
    assert served(engine)["version"] == v2 and rig.reporter.violations == []


def test_a_signature_copied_from_another_version_is_refused(
    tmp_path: Path, core: kubernetes.client.CoreV1Api, copied: Published, engine: RunningEngine,
    keys: dict[str, Path],
) -> None:  # fmt: skip
    key = load_signing_key(keys["a"])
    v1, v2, v3 = (copied.ids[label] for label in ("v1", "v2", "v3"))
    for version in (v1, v2):
        copied.store().sign(MODEL, version, key)
    rig = make_agent(tmp_path, core, copied.uri, engine.admin_url, "forged")
    annotate(rig, {POD_VERIFY_KEYS: key.public.inline(), POD_VERSION: v1})
    reach(rig, v1)

    # A bucket writer copies v2's signature beside v3: the key made it, for another version.
    signatures = copied.root / MODEL / "signatures"
    (signatures / v3).mkdir()
    name = f"{key.public.key_id}.json"
    (signatures / v3 / name).write_bytes((signatures / v2 / name).read_bytes())
    rig.want(v3)
    assert "does not verify" in refused(rig, v1, engine)


def requiring(
    tmp_path: Path, core: kubernetes.client.CoreV1Api, copied: Published, engine: RunningEngine,
    keys: dict[str, Path], pod: str,
) -> AgentRig:  # fmt: skip
    """An agent for ``pod`` that accepts key ``a`` only (same ``tmp_path``: same volume)."""
    return make_agent(
        tmp_path, core, copied.uri, engine.admin_url, pod, verify_keys=[keys["a.pub"]]
    )


def test_a_name_moved_back_is_refused_even_after_the_agent_restarts(
    tmp_path: Path, core: kubernetes.client.CoreV1Api, copied: Published, engine: RunningEngine,
    keys: dict[str, Path],
) -> None:  # fmt: skip
    store, key = copied.store(), load_signing_key(keys["a"])
    v1, v2 = copied.ids["v1"], copied.ids["v2"]
    store.set_name(MODEL, "prod", v1, force=True)
    store.sign(MODEL, v1, key, names=["prod"])
    store.set_name(MODEL, "prod", v2, force=True)
    store.sign(MODEL, v2, key, names=["prod"])
    rig = requiring(tmp_path, core, copied, engine, keys, "rolled")
    rig.want("prod")
    reach(rig, v2)

    # A bucket writer points the name back at v1 (signed under it, at an older sequence); the
    # pod's agent restarts and reads the name afresh.
    store.set_name(MODEL, "prod", v1, force=True)
    restarted = requiring(tmp_path, core, copied, engine, keys, "rolled-again")
    restarted.want("prod")
    assert "was moved back" in refused(restarted, v2, engine)


def test_a_signature_the_operator_made_for_another_namespace_is_refused(
    tmp_path: Path, core: kubernetes.client.CoreV1Api, copied: Published, engine: RunningEngine,
    keys: dict[str, Path],
) -> None:  # fmt: skip
    store, key = copied.store(), load_signing_key(keys["a"])
    v1, v2 = copied.ids["v1"], copied.ids["v2"]
    store.sign(MODEL, v1, key)
    store.set_name(MODEL, "team-x-latest", v2)
    vouch_and_sign(store.catalog, MODEL, v2, key, parent=v1, name="team-x-latest",
                   origin="operator:modeldelta/team-x/m", namespace="team-x")  # fmt: skip
    rig = requiring(tmp_path, core, copied, engine, keys, "other-namespace")
    rig.want(v1)
    reach(rig, v1)
    rig.want(v2)
    assert "signed for namespace 'team-x'" in refused(rig, v1, engine)
