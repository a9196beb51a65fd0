"""Shared helpers of the store tests: constants, a bucket factory for the moto server, and a
bit-exact pull check."""

from __future__ import annotations

import filecmp
import uuid
from pathlib import Path

import boto3

from deltaroll.store import Store
from deltaroll.store.retry import RetryPolicy
from fixtures.files import visible_names

SECRET_SENTINEL = "SENTINEL-secret-7f3a9c-never-print"
ACCESS_KEY_SENTINEL = "AKIASENTINEL7F3A9C"
FAST_RETRY = RetryPolicy(attempts=3, initial_s=0.01, max_s=0.05)


def make_bucket(endpoint: str) -> str:
    """A fresh bucket on the S3 endpoint, so every test starts from an empty store."""
    name = f"deltaroll-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


def pulls_bit_exact(store: Store, ref: str, expected: Path, out: Path, model: str = "tiny") -> bool:
    """Whether ``ref`` pulls into ``out`` as exactly the files of ``expected``."""
    store.pull(model, ref, out)
    names = visible_names(expected)
    _, mismatch, errors = filecmp.cmpfiles(out, expected, names, shallow=False)
    return visible_names(out) == names and not mismatch and not errors
