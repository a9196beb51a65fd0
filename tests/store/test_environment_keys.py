"""A tenant's store never carries the operator's own AWS keys, whatever its environment holds.

obstore reads ``AWS_*`` from the process environment and lets a store's config override only the
keys it names: a tenant's Secret with a key pair but no session token was signed with the
tenant's key and sent the operator's ``AWS_SESSION_TOKEN`` beside it. The bucket here is a
loopback listener that records every request, so the test reads what actually left the process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import pytest

from deltaroll.api.common import StoreSpec
from deltaroll.api.policy import DEFAULT_POLICY
from deltaroll.controllers.store_access import store_credentials
from deltaroll.store import Store, StoreError
from store.support import FAST_RETRY, Recorded, recording_listener

OPERATOR_KEY = "AKIAOPERATOR0F5E2D"
OPERATOR_SECRET = "operator-SECRET-0f5e2d"
OPERATOR_TOKEN = "operator-SESSION-TOKEN-0f5e2d"
TENANT_KEY = "AKIATENANT7C1B40"
URI = "s3://team-b-bucket/models"


@pytest.fixture
def bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorded]:
    """The operator's environment (its own keys and session token) pointing at a recorder."""
    with recording_listener() as recorded:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", OPERATOR_KEY)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", OPERATOR_SECRET)
        monkeypatch.setenv("AWS_SESSION_TOKEN", OPERATOR_TOKEN)
        monkeypatch.setenv("AWS_ENDPOINT_URL", recorded.endpoint)
        monkeypatch.setenv("AWS_REGION", "us-east-1")
        monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
        yield recorded


def _read(credentials: Mapping[str, str] | None) -> None:
    store = Store(URI, credentials=credentials, retry=FAST_RETRY)
    with contextlib.suppress(StoreError):  # the recorder answers 404 to everything
        store.catalog.version_ids("tiny")


def _assert_no_operator_key(bucket: Recorded) -> None:
    assert bucket.requests, "the store sent nothing: the test saw no traffic"
    traffic = bucket.traffic()
    for value in (OPERATOR_KEY, OPERATOR_SECRET, OPERATOR_TOKEN):
        assert value not in traffic


def test_a_tenant_store_without_a_secret_is_read_anonymously(bucket: Recorded) -> None:
    credentials = store_credentials("team-a", StoreSpec(uri=URI), DEFAULT_POLICY.default)
    _read(credentials)
    _assert_no_operator_key(bucket)
    assert not any("authorization" in {k.lower() for k in h} for h in bucket.headers)


def test_a_tenants_keys_go_without_the_operators_session_token(bucket: Recorded) -> None:
    tenant = {"AWS_ACCESS_KEY_ID": TENANT_KEY, "AWS_SECRET_ACCESS_KEY": "tenant-secret"}
    _read({**tenant, "AWS_ALLOW_HTTP": "true"})  # the environment's endpoint, plain http
    _assert_no_operator_key(bucket)
    assert all(f"Credential={TENANT_KEY}/" in h["authorization"] for h in bucket.headers)


def test_the_operators_own_identity_is_still_the_environment_where_allowed(
    bucket: Recorded,
) -> None:
    _read(None)  # a store the admin lists in operatorIdentityStores
    assert f"Credential={OPERATOR_KEY}/" in bucket.traffic()
