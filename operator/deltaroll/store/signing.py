"""Publisher keys: Ed25519 key pairs in PEM files, their ids, and raw signatures.

Ed25519 (RFC 8032) through the ``cryptography`` package: deterministic signatures, 32-byte
public keys, no parameters to get wrong. A private key is PKCS#8 PEM (unencrypted: it lives in
a Kubernetes Secret or a KMS-backed file, never in the store), a public key SubjectPublicKeyInfo
PEM. A key's id is the SHA-256 of its raw 32 bytes (as TUF names keys by a digest of the key),
so a signature says which key made it and a verifier holding several keys (rotation) picks one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from deltaroll.api.public_keys import INLINE_PREFIX, inline
from deltaroll.store.errors import StoreError

_MAX_PEM_BYTES = 16 << 10


class KeyFileError(StoreError):
    """A key file or inline key cannot be used; the message says which and what to do."""

    exit_code = 2


@dataclass(frozen=True)
class PublicKey:
    """A public key a verifier accepts, with its id."""

    key: Ed25519PublicKey
    key_id: str

    @classmethod
    def of(cls, key: Ed25519PublicKey) -> PublicKey:
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return cls(key, hashlib.sha256(raw).hexdigest())

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            self.key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def inline(self) -> str:
        """``ed25519:<base64 of the raw key>``: the form an annotation carries."""
        return inline(
            self.key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )


@dataclass(frozen=True)
class SigningKey:
    """A private key that signs versions."""

    key: Ed25519PrivateKey

    @property
    def public(self) -> PublicKey:
        return PublicKey.of(self.key.public_key())

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message)


def generate_key_pair(private_path: Path, public_path: Path) -> PublicKey:
    """Write a new key pair; the private file is created 0600 and never overwritten."""
    for path in (private_path, public_path):
        if path.exists():
            raise KeyFileError(f"{path} already exists; choose new file names or remove it first")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as f:
        f.write(private_pem)
    public_path.write_bytes(public_pem)
    return PublicKey.of(key.public_key())


def load_signing_key(path: Path) -> SigningKey:
    """The Ed25519 private key in the PEM file ``path``."""
    key = _load_pem(
        path,
        lambda data: serialization.load_pem_private_key(data, password=None),
        "an unencrypted Ed25519 private key in PEM; make one with "
        "`deltaroll keys generate PRIVATE.pem PUBLIC.pem`",
    )
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, not an Ed25519 private key")
    return SigningKey(key)


def load_public_key(path: Path) -> PublicKey:
    """The Ed25519 public key in the PEM file ``path``."""
    key = _load_pem(
        path,
        serialization.load_pem_public_key,
        "an Ed25519 public key in PEM; pass the PUBLIC.pem that `deltaroll keys generate` wrote",
    )
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, not an Ed25519 public key")
    return PublicKey.of(key)


def parse_inline_key(text: str) -> PublicKey:
    """A public key written as ``ed25519:<base64 of its raw 32 bytes>``."""
    body = text.strip().removeprefix(INLINE_PREFIX)
    try:
        raw = base64.b64decode(body, validate=True)
        if not text.strip().startswith(INLINE_PREFIX) or len(raw) != 32:
            raise ValueError("not 32 bytes")
        return PublicKey.of(Ed25519PublicKey.from_public_bytes(raw))
    except (ValueError, binascii.Error) as exc:
        raise KeyFileError(
            f"{text[:60]!r} is not a public key written as ed25519:<base64 of 32 bytes>"
        ) from exc


def load_public_keys(paths: Iterable[Path]) -> list[PublicKey]:
    """Public keys from PEM files; a directory contributes every ``*.pem`` in it (a mounted
    ConfigMap of keys), so a rotation adds a file and nothing else changes."""
    keys: list[PublicKey] = []
    for path in paths:
        files = sorted(Path(path).glob("*.pem")) if Path(path).is_dir() else [Path(path)]
        if not files:
            raise KeyFileError(f"{path} holds no *.pem public key")
        keys.extend(load_public_key(file) for file in files)
    return keys


def _load_pem(path: Path, loader: Callable[[bytes], object], expected: str) -> object:
    try:
        return loader(_read_pem(path))
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{path} is not {expected}") from exc


def _read_pem(path: Path) -> bytes:
    try:
        with Path(path).open("rb") as f:
            data = f.read(_MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror or exc}") from exc
    if len(data) > _MAX_PEM_BYTES:
        raise KeyFileError(f"{path} is larger than a key file can be; pass the PEM key itself")
    return data
