"""Fixtures of the worker tests: real trained checkpoints, a file:// store, the real command."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.checkpoints import train_checkpoints
from fixtures.cli import run_deltaroll
from fixtures.s3 import moto_server
from worker.helpers import SECRET_SENTINEL, Worker, WorkerRun


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """step-0 .. step-2 of a tiny model trained with real AdamW steps (sharded layout)."""
    return train_checkpoints(
        tmp_path_factory.mktemp("worker-ckpt"), steps=2, layout="sharded", hidden=64
    )


@pytest.fixture
def store_uri(tmp_path: Path) -> str:
    return f"file://{tmp_path / 'store'}"


@pytest.fixture
def worker(tmp_path: Path) -> Worker:
    """Run ``deltaroll worker ARGS...`` as a subprocess; read its termination message."""
    counter = iter(range(1000))

    def run(*args: object) -> WorkerRun:
        report_path = tmp_path / f"termination-{next(counter)}.json"
        process = run_deltaroll("worker", *args, "--termination-log", report_path)
        report = json.loads(report_path.read_text()) if report_path.exists() else None
        return WorkerRun(process, report)

    return run


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An S3 client for fresh buckets; the worker subprocesses inherit the same AWS_* env."""
    import boto3

    env = {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "worker-test-access-key",
        "AWS_SECRET_ACCESS_KEY": SECRET_SENTINEL,
        "AWS_ALLOW_HTTP": "true",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
