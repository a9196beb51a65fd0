"""Scrub secrets out of text that came from a backend library before it reaches a message.

Backend errors are reduced to one short line and every credential value found in the environment
is replaced, so even a library that echoes a header or a config value cannot leak it."""

from __future__ import annotations

import os

SECRET_ENV_VARS = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
)
_MAX_REASON = 240


def scrub(text: str) -> str:
    """``text`` with every credential value from the environment replaced by ``***``."""
    for var in SECRET_ENV_VARS:
        value = os.environ.get(var)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


def reason(exc: BaseException) -> str:
    """A one-line, scrubbed, bounded description of ``exc`` for use inside our own messages."""
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    text = scrub(text)
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."
