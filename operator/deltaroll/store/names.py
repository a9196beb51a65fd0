"""Validation of model, version and alias names, before any of them becomes part of an object key
or a local path. One strict rule for all three keeps keys flat and predictable: no slashes, no
``..``, no leading dot or dash, printable ASCII from a small alphabet."""

from __future__ import annotations

import re

from deltaroll.store.errors import InvalidNameError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def validate_name(value: str, *, what: str) -> str:
    """Return ``value`` if it is a safe name of a ``what`` (model, version, name), else raise."""
    if not _NAME.fullmatch(value) or ".." in value:
        raise InvalidNameError(
            f"{what} {value!r} is not a valid name: use 1-128 characters from A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit, without '..' or '/'"
        )
    return value


def is_digest(value: str) -> bool:
    """Whether ``value`` is a lowercase hex sha256 digest."""
    return _SHA256.fullmatch(value) is not None


def validate_digest(value: str) -> str:
    """Return ``value`` if it is a lowercase hex sha256 digest, else raise."""
    if not is_digest(value):
        raise InvalidNameError(f"object digest {value!r} is not a lowercase hex sha256 digest")
    return value
