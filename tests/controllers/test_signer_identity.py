"""The operator checks and signs what a ModelDelta's Job published (main's signing) reading and
writing the store as the tenant: the Secret of ``spec.store.secretRef``, else anonymously, and
with its own identity only for a store the admin's policy lists in ``operatorIdentityStores``.
Otherwise a tenant naming another team's bucket without a secretRef had the operator write a
signature there with the operator's credentials.

The handler's signing step runs as the operator runs it (the real store client, vouch checks and
signer against moto behind a recording proxy, the operator's cloud identity in its
environment); only the plan is given, so no cluster is needed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from controllers import modeldelta_world as world
from controllers.modeldelta_world import OPERATOR_KEY, Gate
from deltaroll.api import ModelDelta, parse_resource
from deltaroll.api.modeldelta import ModelDeltaStatus
from deltaroll.api.policy import NamespacePolicy
from deltaroll.checkpoint import checkpoint_version
from deltaroll.controllers.modeldelta import signer
from deltaroll.controllers.modeldelta.planner import Observed, Plan, SignVersion, StoreView
from deltaroll.store import StoreAccessError
from deltaroll.store.signing import generate_key_pair, load_signing_key


@pytest.fixture
def operator_identity(
    team_b_bucket: tuple[str, Gate], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """The operator's environment: a cloud identity reaching the bucket, and a signing key."""
    _, gate = team_b_bucket
    for name, value in {
        "AWS_ENDPOINT_URL": gate.endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": OPERATOR_KEY,
        "AWS_SECRET_ACCESS_KEY": "operator-secret",
    }.items():
        monkeypatch.setenv(name, value)
    generate_key_pair(tmp_path / "operator.pem", tmp_path / "operator.pub")
    signer.configure(load_signing_key(tmp_path / "operator.pem"))
    yield
    signer.configure(None)


def sign_as_the_handler_does(
    delta: ModelDelta, version: str, policy: NamespacePolicy, monkeypatch: pytest.MonkeyPatch
) -> Plan:
    """The ModelDelta handler's signing step for a plan that asks to sign ``version``."""
    import deltaroll.controllers.modeldelta.handlers as handlers

    asked = Plan(status=ModelDeltaStatus(), actions=[SignVersion(version, "step-0", None)])
    monkeypatch.setattr(handlers, "_plan", lambda *_: asked)
    return handlers._sign(delta, Observed(store=StoreView()), policy)


@pytest.mark.usefixtures("operator_identity")
def test_without_a_secret_ref_the_signature_is_not_written_as_the_operator(
    team_b_bucket: tuple[str, Gate], trained: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, gate = team_b_bucket
    delta = parse_resource(world.modeldelta("step-0", uri, trained[0], parent=None))
    assert isinstance(delta, ModelDelta)
    policy = NamespacePolicy.model_validate({"storePrefixes": ["s3://"]})

    with pytest.raises(StoreAccessError):  # the bucket refuses the anonymous tenant
        sign_as_the_handler_does(delta, checkpoint_version(trained[0]), policy, monkeypatch)

    assert b"GET " in gate.sent
    assert OPERATOR_KEY.encode() not in gate.sent  # never read or written as the operator


@pytest.mark.usefixtures("operator_identity")
def test_a_store_the_admin_lends_the_operators_identity_to_is_signed_with_it(
    team_b_bucket: tuple[str, Gate], trained: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: the test sees the operator's identity when it is used, as it is where the
    admin allowed exactly this store."""
    uri, gate = team_b_bucket
    delta = parse_resource(world.modeldelta("step-0", uri, trained[0], parent=None))
    assert isinstance(delta, ModelDelta)
    policy = NamespacePolicy.model_validate(
        {"storePrefixes": ["s3://"], "operatorIdentityStores": [uri]}
    )

    plan = sign_as_the_handler_does(delta, checkpoint_version(trained[0]), policy, monkeypatch)

    assert [type(a) for a in plan.actions] == [SignVersion]  # checked and signed, not refused
    assert b"PUT " in gate.sent and OPERATOR_KEY.encode() in gate.sent
