"""What the operator reads from a store whose credentials exist only in the secretRef Secret:
the real S3 protocol (moto), an operator environment that points nowhere."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from controllers.modeldelta_world import modeldelta
from deltaroll.api import ModelDelta, parse_resource
from deltaroll.checkpoint import checkpoint_version
from deltaroll.controllers.modeldelta.storeview import look_up
from deltaroll.store import Store
from fixtures.ports import free_port
from fixtures.s3 import moto_server

SECRET = "storeview-SECRET-9d7f3b-never-print"


@pytest.fixture
def s3_store(
    trained: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, dict[str, str]]]:
    """(uri, the Secret's data) of an s3:// store holding step-0 and step-1."""
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with moto_server() as endpoint:
        credentials = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "storeview-key",
            "AWS_SECRET_ACCESS_KEY": SECRET,
        }
        bucket = f"models-{uuid.uuid4().hex[:12]}"
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="storeview-key",
            aws_secret_access_key=SECRET,
        ).create_bucket(Bucket=bucket)
        uri = f"s3://{bucket}/prod"
        store = Store(uri, credentials=credentials, cache_dir=tmp_path / "cache")
        store.push("tiny", trained[0], name="step-0")
        store.push("tiny", trained[1], base=trained[0], name="step-1")
        yield uri, credentials


def _delta(uri: str, name: str, parent: str, target: Path) -> ModelDelta:
    body = modeldelta(name, uri, target, parent=parent)
    body["spec"]["store"]["secretRef"] = {"name": "store-creds"}
    parsed = parse_resource(body)
    assert isinstance(parsed, ModelDelta)
    return parsed


def test_a_secret_store_is_read_with_the_secrets_credentials(
    s3_store: tuple[str, dict[str, str]], trained: list[Path], tmp_path: Path
) -> None:
    uri, credentials = s3_store
    view = look_up(
        _delta(uri, "step-1", "step-0", trained[1]), cache_dir=tmp_path, credentials=credentials
    )
    assert view.problem is None
    assert view.parent_id == checkpoint_version(trained[0])
    assert view.published is not None
    assert view.published.version == checkpoint_version(trained[1])
    assert view.published.parent == checkpoint_version(trained[0])

    missing = look_up(
        _delta(uri, "step-2", "step-119", trained[2]), cache_dir=tmp_path, credentials=credentials
    )
    assert (missing.problem, missing.parent_id, missing.published) == (None, None, None)


def test_without_the_secrets_credentials_the_store_is_a_problem_that_names_no_secret(
    s3_store: tuple[str, dict[str, str]], trained: list[Path], tmp_path: Path
) -> None:
    uri, _ = s3_store
    view = look_up(_delta(uri, "step-1", "step-0", trained[1]), cache_dir=tmp_path)
    assert view.problem is not None and uri in view.problem
    assert (view.problem_reason, view.retryable) == ("StoreUnavailable", True)
    assert SECRET not in view.problem
