"""Scrub secrets out of text that came from a backend library before it reaches a message.

Backend errors are reduced to one short line and every credential value is replaced: those found
in the environment and those handed to a :class:`~deltaroll.store.Store` explicitly (the operator
opens stores with a Secret's values), so even a library that echoes a header or a config value
cannot leak it."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping

SECRET_ENV_VARS = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
)
_MAX_REASON = 240
_MIN_SECRET = 4
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
    """``text`` with every known credential value replaced by ``***``."""
    with _explicit_lock:
        secrets = set(_explicit)
    secrets.update(os.environ.get(var) or "" for var in SECRET_ENV_VARS)
    # Longest first, so a secret containing another is replaced whole.
    for value in sorted(secrets, key=len, reverse=True):
        if len(value) >= _MIN_SECRET:
            text = text.replace(value, "***")
    return text


def reason(exc: BaseException) -> str:
    """A one-line, scrubbed, bounded description of ``exc`` for use inside our own messages."""
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    text = scrub(text)
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."
