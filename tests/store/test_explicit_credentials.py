"""A Store opened with explicit credentials (as the operator does with a Secret's data) uses them
instead of the process environment, and never shows their secret values in an error."""

from __future__ import annotations

import uuid
from pathlib import Path

import boto3
import pytest

from deltaroll.store import Store, StoreError
from fixtures.checkpoints import read_tensors
from fixtures.ports import free_port
from store.support import FAST_RETRY

EXPLICIT_SECRET = "explicit-SECRET-4b1d9e-never-print"
EXPLICIT_KEY = "AKIAEXPLICIT4B1D9E"
AWS_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ALLOW_HTTP",
)


@pytest.fixture
def wrong_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """An environment that cannot reach the test bucket: a dead endpoint, https only, no keys."""
    for var in AWS_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_REGION", "eu-west-3")


def make_bucket(endpoint: str) -> str:
    """A fresh bucket, created with the explicit keys (the environment has none)."""
    name = f"deltaroll-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=EXPLICIT_KEY,
        aws_secret_access_key=EXPLICIT_SECRET,
    ).create_bucket(Bucket=name)
    return name


def credentials(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": EXPLICIT_KEY,
        "AWS_SECRET_ACCESS_KEY": EXPLICIT_SECRET,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    }


@pytest.mark.usefixtures("wrong_env")
def test_explicit_credentials_replace_the_environment(
    moto_endpoint: str, checkpoints: list[Path], tmp_path: Path
) -> None:
    uri = f"s3://{make_bucket(moto_endpoint)}/models"
    store = Store(
        uri, credentials=credentials(moto_endpoint), cache_dir=tmp_path / "c", retry=FAST_RETRY
    )
    first = store.push("tiny", checkpoints[0], name="step-0")
    second = store.push("tiny", checkpoints[1], base=checkpoints[0], name="step-1")
    assert [entry.version for entry in store.log("tiny")][:2] in (
        [second.version, first.version],
        [first.version, second.version],
    )
    store.pull("tiny", "step-1", tmp_path / "out")
    got, want = read_tensors(tmp_path / "out"), read_tensors(checkpoints[1])
    assert got.keys() == want.keys()
    assert all(got[name].equal(tensor) for name, tensor in want.items())

    # The same store through the (wrong) environment is unreachable: the credentials did it.
    with pytest.raises(StoreError):
        Store(uri, cache_dir=tmp_path / "c2", retry=FAST_RETRY).log("tiny")


@pytest.mark.usefixtures("wrong_env")
def test_a_provoked_error_never_shows_the_explicit_secrets(tmp_path: Path) -> None:
    # The endpoint's path carries the secret, so the library's connection error echoes it.
    dead = f"http://127.0.0.1:{free_port()}/{EXPLICIT_SECRET}/{EXPLICIT_KEY}"
    store = Store(
        "s3://bucket/models", credentials=credentials(dead), cache_dir=tmp_path, retry=FAST_RETRY
    )
    with pytest.raises(StoreError) as caught:
        store.log("tiny")
    text = f"{caught.value}\n{caught.value!r}"
    assert "***" in text  # the echoed values were replaced, not dropped with the message
    assert EXPLICIT_SECRET not in text
    assert EXPLICIT_KEY not in text
