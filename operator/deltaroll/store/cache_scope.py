"""Which part of a shared cache directory a store's reader may use.

A shared cache must not hand one tenant the bytes another fetched: a bucket writer could list
another tenant's object digest in its own manifest and have the cache serve it. That an object
exists in both stores proves nothing (a HEAD or a listing is not a fetch), so a reader only uses
objects fetched under the same store identity and credentials: the scope is a salted hash of the
store URI and everything that decides what its backend may read (the AWS_* / HF_* settings and
secrets, the Hugging Face token; for ``file://``, the directory's device and inode and the
process's user and groups). It is scrypt, with a salt kept in the cache directory, so a weak
secret cannot be guessed from a directory name offline by testing it against sha256.

Not covered: identities that live outside the process's settings (instance metadata; the
contents of a projected token file, which the scope names by its path): processes that differ
only in those must not share a cache directory.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path

from deltaroll.api.object_cache import SALT_BYTES, SALT_NAME
from deltaroll.checkpoint.staging import fsync_directory
from deltaroll.store.errors import ObjectCacheError
from deltaroll.store.uri import StoreUri

#: The settings families each backend reads (explicit credentials use the same names).
_SETTINGS_PREFIXES = {"s3": ("AWS_",), "hf": ("HF_", "HUGGING_FACE_HUB_")}
# scrypt cost: about 16 MiB and tens of milliseconds, once per store and process.
_SCRYPT = {"n": 1 << 14, "r": 8, "p": 1, "dklen": 16}


def scoped_directory(
    top: Path, location: StoreUri, credentials: Mapping[str, str] | None = None
) -> Path:
    """The directory under ``top`` for objects of ``location`` read with ``credentials``
    (None: the process environment, as the backend itself would read it)."""
    material = json.dumps(_identity(location, credentials), sort_keys=True).encode()
    return top / _scope_name(_salt(top), material)


def _identity(location: StoreUri, credentials: Mapping[str, str] | None) -> dict[str, object]:
    identity: dict[str, object] = {"uri": str(location)}
    if location.scheme == "file":
        root = Path(location.location)
        with contextlib.suppress(OSError):
            info = root.stat()
            identity["directory"] = [info.st_dev, info.st_ino]
        identity["user"] = [os.geteuid(), os.getegid(), sorted(os.getgroups())]
        return identity
    prefixes = _SETTINGS_PREFIXES[location.scheme]
    identity["environment"] = _settings(os.environ, prefixes)
    if credentials is not None:
        identity["explicit"] = _settings(credentials, prefixes)
    elif location.scheme == "hf":
        from huggingface_hub import get_token  # the token the Hub client will send

        identity["token"] = get_token()
    return identity


def _settings(source: Mapping[str, str], prefixes: tuple[str, ...]) -> dict[str, str]:
    return {name: value for name, value in source.items() if name.startswith(prefixes)}


def is_scope_name(name: str) -> bool:
    """Whether ``name`` is what :func:`scoped_directory` names a scope (a cache's own folders,
    the salt and anything a person put there are not)."""
    return len(name) == 2 * int(_SCRYPT["dklen"]) and all(c in "0123456789abcdef" for c in name)


@functools.lru_cache(maxsize=64)
def _scope_name(salt: bytes, material: bytes) -> str:
    return hashlib.scrypt(material, salt=salt, **_SCRYPT).hex()


def _salt(top: Path) -> bytes:
    """The cache directory's salt, created once: linked into place complete, never torn."""
    path = top / SALT_NAME
    if not path.exists():
        top.mkdir(parents=True, exist_ok=True)
        temp = top / f".{SALT_NAME}.{uuid.uuid4().hex[:12]}.tmp"
        try:
            with temp.open("xb") as handle:
                handle.write(os.urandom(SALT_BYTES))
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):  # another process made it first
                os.link(temp, path)
        finally:
            temp.unlink(missing_ok=True)
        fsync_directory(top)
    with open(path, "rb") as handle:
        salt = handle.read(SALT_BYTES + 1)
    if len(salt) != SALT_BYTES:
        raise ObjectCacheError(
            f"{path} is not a {SALT_BYTES}-byte cache salt; it was altered: remove it (the "
            "cache's objects will be fetched again)"
        )
    return salt
