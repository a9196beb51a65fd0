"""Scrub text before it leaves a process: the one function for every message a tenant can read.

Status conditions, Events, annotations, an agent's ``/healthz`` and a worker's termination
message are read by whoever may read the object, so each is passed through :func:`scrub` first.
It removes:

- credential values: those in the environment and those handed to a store explicitly (the
  operator opens stores with a Secret's values), so a library that echoes a header or a config
  value cannot leak one;
- the process's own endpoints (``AWS_ENDPOINT_URL``, ``HF_ENDPOINT``, ``AWS_METADATA_ENDPOINT``
  of its environment): where the operator's identity reaches is none of a tenant's business;
- query strings and user parts of URLs (presigned URLs carry their signature in the query);
- link-local addresses (cloud instance metadata, 169.254.0.0/16 and fd00:ec2::254).

Top-level (beneath every part) because the API's condition helpers scrub too."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping

SECRET_ENV_VARS = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
)
# The process's own endpoints: scrubbed when they come from its environment, not from a Secret
# (a tenant knows the endpoint it configured).
ENDPOINT_ENV_VARS = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "HF_ENDPOINT",
    "AWS_METADATA_ENDPOINT",
)
_MAX_REASON = 240
_MIN_SECRET = 4
_URL_QUERY = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s?#'\"]*)\?[^\s'\"]*", re.IGNORECASE)
_URL_USER = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^\s/@'\"]*@", re.IGNORECASE)
_LINK_LOCAL = re.compile(r"\b169\.254\.\d{1,3}\.\d{1,3}\b|\bfd00:ec2::254\b", re.IGNORECASE)
_explicit: set[str] = set()
_explicit_lock = threading.Lock()


def remember_secrets(credentials: Mapping[str, str]) -> None:
    """Scrub the secret values of ``credentials`` (same names as the environment) from now on.

    Process-wide on purpose: a message can be built far from the Store that opened the bucket
    (a controller's status, a CLI's --json), and it must be scrubbed there too."""
    values = {credentials.get(var) for var in SECRET_ENV_VARS}
    with _explicit_lock:
        _explicit.update(v for v in values if v and len(v) >= _MIN_SECRET)


def scrub(text: str) -> str:
    """``text`` without credentials, own endpoints, URL queries and user parts, link-local
    addresses."""
    with _explicit_lock:
        secrets = set(_explicit)
    secrets.update(os.environ.get(var) or "" for var in SECRET_ENV_VARS)
    endpoints = {(os.environ.get(var) or "").rstrip("/") for var in ENDPOINT_ENV_VARS}
    # Longest first, so a secret containing another is replaced whole.
    for value in sorted(secrets, key=len, reverse=True):
        if len(value) >= _MIN_SECRET:
            text = text.replace(value, "***")
    for endpoint in sorted(endpoints, key=len, reverse=True):
        if len(endpoint) >= _MIN_SECRET:
            text = text.replace(endpoint, "<endpoint>")
    text = _URL_QUERY.sub(r"\1?***", text)
    text = _URL_USER.sub(r"\1***@", text)
    return _LINK_LOCAL.sub("<link-local>", text)


def reason(exc: BaseException) -> str:
    """A one-line, scrubbed, bounded description of ``exc`` for use inside our own messages."""
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    text = scrub(text)
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."
