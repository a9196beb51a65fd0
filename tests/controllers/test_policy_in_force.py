"""The policy in force: parsed once per change of its file, and what it lends.

With ``allowInstanceMetadata`` the node's role (instance metadata) is lent only to the stores the
admin lists in ``operatorIdentityStores``: a worker Job gets it for exactly its own store, a Job
of any other store gets nothing (and :mod:`store.test_no_instance_metadata` shows such a Job's
clients never ask). A policy reload turns the operator's own instance-metadata switch too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deltaroll.api.policy import INSTANCE_METADATA_ENV, POLICY_ENV
from deltaroll.controllers import policy as policy_in_force
from deltaroll.controllers.job_defaults import JobDefaults
from deltaroll.controllers.modeldelta.jobs import build_job
from deltaroll.store.backends import metadata_access

LENT = "s3://shared-models/team-a"


@pytest.fixture
def policy_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "policy.yaml"
    monkeypatch.setenv(POLICY_ENV, str(path))
    yield path
    metadata_access.allow_in_this_process(None)
    policy_in_force._loaded.clear()


def write(path: Path, document: dict[str, Any], stamp: int) -> None:
    """Write the policy with mtime ``stamp`` seconds (a ConfigMap update changes it)."""
    path.write_text(json.dumps(document))
    os.utime(path, ns=(stamp * 10**9, stamp * 10**9))


def lending(allow: bool) -> dict[str, Any]:
    return {
        "allowInstanceMetadata": allow,
        "default": {"storePrefixes": ["s3://"]},
        "namespaces": {"team-a": {"operatorIdentityStores": [LENT]}},
    }


def worker_env_of(namespace: str, store: dict[str, Any]) -> dict[str, str]:
    """The environment of the worker Job the operator builds for a ModelDelta of ``store``."""
    from deltaroll.api import ModelDelta

    delta = ModelDelta.model_validate(
        {
            "apiVersion": "deltaroll.dev/v1alpha1",
            "kind": "ModelDelta",
            "metadata": {"name": "v2", "namespace": namespace, "uid": "u-1", "generation": 1},
            "spec": {
                "model": "m",
                "store": store,
                "source": {"checkpoint": {"uri": "s3://ckpts/v2"}},
                "parent": "v1",
            },
        }
    )
    policy = policy_in_force.namespace_policy(namespace)
    env = policy_in_force.worker_env(delta.spec.store, policy)
    job = build_job(delta, defaults=JobDefaults.of("worker", policy.worker, "w:1", env))
    [container] = job["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_a_job_gets_instance_metadata_for_exactly_its_own_lent_store(policy_file: Path) -> None:
    write(policy_file, lending(True), 1)
    assert worker_env_of("team-a", {"uri": LENT})[INSTANCE_METADATA_ENV] == LENT
    assert worker_env_of("team-a", {"uri": LENT + "/sub"}).get(INSTANCE_METADATA_ENV) is None
    # Another store, the same store with a Secret of its own, another namespace: nothing lent.
    assert INSTANCE_METADATA_ENV not in worker_env_of("team-a", {"uri": "s3://team-b/models"})
    secret = {"uri": LENT, "secretRef": {"name": "keys"}}
    assert INSTANCE_METADATA_ENV not in worker_env_of("team-a", secret)
    assert INSTANCE_METADATA_ENV not in worker_env_of("team-b", {"uri": LENT})


def test_a_reload_turns_the_operators_own_switch_and_each_change_is_parsed_once(
    policy_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[Path] = []
    read = policy_in_force.read_policy
    monkeypatch.setattr(policy_in_force, "read_policy", lambda p: parsed.append(p) or read(p))

    write(policy_file, lending(False), 1)
    for _ in range(5):
        policy_in_force.namespace_policy("team-a")
    assert not metadata_access.may_ask_instance_metadata(LENT)

    write(policy_file, lending(True), 2)
    for _ in range(5):
        policy_in_force.namespace_policy("team-a")
    assert metadata_access.may_ask_instance_metadata(LENT)
    assert INSTANCE_METADATA_ENV in worker_env_of("team-a", {"uri": LENT})

    policy_file.write_text("allowInstanceMetadata: [not, a, bool")  # broken: the last one stays
    os.utime(policy_file, ns=(3 * 10**9, 3 * 10**9))
    for _ in range(5):
        assert policy_in_force.current_policy().allow_instance_metadata
    assert len(parsed) == 3  # once per version of the file, not once per reconcile


def test_namespace_overrides_are_resolved_when_the_policy_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from deltaroll.api.policy import NamespacePolicy, Policy

    policy = Policy.model_validate(lending(True))
    resolved = policy.for_namespace("team-a")
    calls: list[Any] = []
    validate = NamespacePolicy.model_validate
    monkeypatch.setattr(
        NamespacePolicy, "model_validate", lambda *a, **k: calls.append(a) or validate(*a, **k)
    )
    assert all(policy.for_namespace("team-a") is resolved for _ in range(3))
    assert calls == [] and resolved.operator_identity_stores == [LENT]
