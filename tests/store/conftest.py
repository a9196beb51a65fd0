"""Fixtures of the store tests: real checkpoints, a real S3 protocol server, fresh stores.

The contract suite runs once per backend: ``file`` (a temp directory), ``s3`` (moto's
ThreadedMotoServer on 127.0.0.1, a fresh bucket per test) and ``hf`` (a real Hub bucket, only
when HF_TOKEN and DELTAROLL_TEST_HF_BUCKET are set)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from deltaroll.store import Store
from fixtures.checkpoints import train_checkpoints
from fixtures.s3 import moto_server
from store.support import ACCESS_KEY_SENTINEL, FAST_RETRY, SECRET_SENTINEL, make_bucket

HF_BUCKET = os.environ.get("DELTAROLL_TEST_HF_BUCKET")
HF_READY = bool(os.environ.get("HF_TOKEN") and HF_BUCKET)
HF_SKIP = (
    "set HF_TOKEN and DELTAROLL_TEST_HF_BUCKET=<namespace>/<bucket> to run against a Hub bucket"
)

BACKENDS = [
    "file",
    "s3",
    pytest.param("hf", marks=pytest.mark.skipif(not HF_READY, reason=HF_SKIP)),
]


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Seven AdamW steps of the shared tiny model (a small learning rate, so neighbours differ in
    a few percent of their elements, as in fine-tuning)."""
    return train_checkpoints(tmp_path_factory.mktemp("checkpoints"), steps=6, lr=2e-6)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The standard AWS environment pointing at moto, with sentinel credentials."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_SENTINEL)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_SENTINEL)
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    return moto_endpoint


@pytest.fixture(params=BACKENDS)
def store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store of each backend kind."""
    if request.param == "file":
        return f"file://{tmp_path / 'store'}"
    if request.param == "s3":
        endpoint = request.getfixturevalue("s3_env")
        return f"s3://{make_bucket(endpoint)}/models"
    return f"hf://buckets/{HF_BUCKET}/deltaroll-tests/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store(store_uri: str, tmp_path: Path) -> Store:
    return Store(store_uri, cache_dir=tmp_path / "cache", retry=FAST_RETRY)
