"""Publisher public keys as the API carries them: PEM in a ModelDeployment's
``spec.verification.publicKeys``, ``ed25519:<base64>`` in the pod annotation the agent reads.

An Ed25519 SubjectPublicKeyInfo (what ``deltaroll keys generate`` writes) is always the same
12-byte DER prefix and the raw 32-byte key, so the API checks and converts it with the standard
library alone (this layer imports no cryptography); the agent verifies signatures with the key.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from typing import Final

INLINE_PREFIX: Final = "ed25519:"
"""The prefix of a public key written inline (an annotation, an environment variable)."""

_SPKI_PREFIX: Final = bytes.fromhex("302a300506032b6570032100")  # id-Ed25519, BIT STRING 33
_PEM: Final = re.compile(
    r"\s*-----BEGIN PUBLIC KEY-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END PUBLIC KEY-----\s*"
)


def ed25519_raw(pem: str) -> bytes:
    """The raw 32 bytes of an Ed25519 public key in PEM; ValueError saying what to pass."""
    match = _PEM.fullmatch(pem)
    try:
        der = base64.b64decode("".join(match.group(1).split()), validate=True) if match else b""
    except (ValueError, binascii.Error):
        der = b""
    if len(der) != len(_SPKI_PREFIX) + 32 or not der.startswith(_SPKI_PREFIX):
        raise ValueError(
            "not an Ed25519 public key in PEM (-----BEGIN PUBLIC KEY----- ...): paste the "
            "PUBLIC.pem that `deltaroll keys generate` wrote"
        )
    return der[len(_SPKI_PREFIX) :]


def inline(raw: bytes) -> str:
    """``ed25519:<base64 of the raw key>``: one key as the annotation carries it."""
    return INLINE_PREFIX + base64.b64encode(raw).decode()


def verify_keys_value(pems: Iterable[str]) -> str:
    """The ``deltaroll.dev/verify-keys`` annotation for these PEM keys: comma-separated inline
    keys, sorted and without repeats, so the same keys always give the same value."""
    return ",".join(sorted({inline(ed25519_raw(pem)) for pem in pems}))
