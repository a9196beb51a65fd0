"""Shared helpers of the store tests (constants and a bucket factory for the moto server)."""

from __future__ import annotations

import uuid

import boto3

from deltaroll.store.retry import RetryPolicy

SECRET_SENTINEL = "SENTINEL-secret-7f3a9c-never-print"
ACCESS_KEY_SENTINEL = "AKIASENTINEL7F3A9C"
FAST_RETRY = RetryPolicy(attempts=3, initial_s=0.01, max_s=0.05)


def make_bucket(endpoint: str) -> str:
    """A fresh bucket on the S3 endpoint, so every test starts from an empty store."""
    name = f"deltaroll-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name
