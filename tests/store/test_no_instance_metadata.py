"""No S3 client asks the cloud instance metadata service (IMDS) for credentials unless told to.

On a cloud node IMDS hands out the node's own role; an S3 store opened without credentials
(a tenant's store without a secretRef) must be read anonymously, never with that role.
obstore's metadata endpoint is pointed at a loopback listener that records every request."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import boto3
import pytest

from deltaroll.api.policy import INSTANCE_METADATA_ENV
from deltaroll.store import Store, StoreError
from deltaroll.store.backends import metadata_access
from store.support import FAST_RETRY, recording_listener

AWS_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    INSTANCE_METADATA_ENV,
)


@pytest.fixture
def metadata_requests() -> Iterator[tuple[str, list[str]]]:
    """(endpoint, requests seen) of a listener standing in for 169.254.169.254."""
    with recording_listener() as recorded:
        yield recorded.endpoint, recorded.requests


@pytest.fixture
def keyless_env(
    moto_endpoint: str, metadata_requests: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> str:
    """The environment of a pod with no AWS keys, on a node whose IMDS is the listener; a bucket
    in moto. Returns the store URI."""
    for var in AWS_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(metadata_access, "_decided", None)  # a process that is not the operator
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    monkeypatch.setenv("AWS_METADATA_ENDPOINT", metadata_requests[0])
    bucket = f"deltaroll-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="owner",
        aws_secret_access_key="owner-secret",
    ).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/models"


def _read(uri: str, credentials: dict[str, str] | None = None) -> None:
    store = Store(uri, credentials=credentials, retry=FAST_RETRY)
    # Anonymous access may be refused; what matters is where credentials came from.
    with contextlib.suppress(StoreError):
        store.catalog.version_ids("tiny")


def test_a_store_without_credentials_never_asks_instance_metadata(
    keyless_env: str, metadata_requests: tuple[str, list[str]]
) -> None:
    _read(keyless_env)
    _read(keyless_env, credentials={})  # the operator's anonymous read of a tenant's store
    assert metadata_requests[1] == []


def test_instance_metadata_is_asked_only_when_the_admin_allows_it(
    keyless_env: str, metadata_requests: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(INSTANCE_METADATA_ENV, "true")
    _read(keyless_env)
    assert any("/latest/api/token" in request for request in metadata_requests[1])


def test_a_process_told_one_store_asks_instance_metadata_for_that_store_only(
    keyless_env: str, metadata_requests: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker Job's environment names exactly its own store (``operatorIdentityStores``): a
    source or store the tenant names besides it is read anonymously, never with the node's role."""
    monkeypatch.setenv(INSTANCE_METADATA_ENV, "s3://the-lent-store/models")
    _read(keyless_env)  # another bucket
    assert metadata_requests[1] == []
    monkeypatch.setenv(INSTANCE_METADATA_ENV, keyless_env)
    _read(keyless_env)
    assert any("/latest/api/token" in request for request in metadata_requests[1])
