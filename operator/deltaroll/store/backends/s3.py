"""The ``s3://bucket/prefix`` backend, on obstore (Rust object_store): any S3-compatible endpoint.

obstore reads the standard AWS environment itself (AWS_ENDPOINT_URL, AWS_REGION,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_ALLOW_HTTP=true for a plain-http
endpoint). Explicit ``credentials`` under the same names (the operator's copy of a Secret) replace
the environment for this store: their endpoint and region override the environment's, and the
request is signed by a credential provider that hands out their keys and nothing else, so none of
the environment's keys (a session token beside a tenant's key pair, say) ever reaches the bucket.

Requests are signed only with credentials someone gave: explicit keys, or (without explicit
credentials) the environment's keys, web identity (IRSA) or container credentials. Otherwise the
store is read anonymously (``skip_signature``) instead of falling back, as object_store would,
to the cloud instance metadata service: on a cloud node that is the node's own role, which a
tenant must never borrow; the admin's choice allows that fallback for a store opened without
explicit credentials (:mod:`.metadata_access`). Conditional
creates are ``PUT`` with ``If-None-Match: *`` (obstore ``mode="create"``); large uploads are
multipart. obstore's own retry is kept short: the store's retry policy
(:mod:`deltaroll.store.retry`) is the one that counts."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast

import obstore
from obstore.exceptions import (
    AlreadyExistsError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)
from obstore.store import S3Store

from deltaroll.redact import reason
from deltaroll.store.backends.base import ObjectInfo, ProgressCallback
from deltaroll.store.backends.concurrency import run_all
from deltaroll.store.backends.metadata_access import is_true, may_ask_instance_metadata
from deltaroll.store.errors import (
    ObjectNotFoundError,
    StoreAccessError,
    TransientStoreError,
)
from deltaroll.store.uri import StoreUri

if TYPE_CHECKING:
    from obstore.store import RetryConfig, S3Config, S3Credential

T = TypeVar("T")
MULTIPART_CHUNK = 16 * 1024 * 1024
_DOWNLOAD_BLOCK = 8 * 1024 * 1024
_DELETE_BATCH = 1000
_RETRY: RetryConfig = {
    "max_retries": 2,
    "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=2)},
    "retry_timeout": timedelta(seconds=60),
}
# Environment variable -> obstore S3 config key: where explicitly given credentials send to.
_CONFIG_OF_ENV = {"AWS_ENDPOINT_URL": "endpoint", "AWS_REGION": "region"}
# Where object_store finds credentials in the environment before it falls back to IMDS.
_ENV_IDENTITIES = (
    ("AWS_ACCESS_KEY_ID",),
    ("AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"),
    ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",),
    ("AWS_CONTAINER_CREDENTIALS_FULL_URI",),
)


class S3Backend:
    """Keys live under ``<prefix>/`` in the bucket of an ``s3://`` URI."""

    def __init__(self, uri: StoreUri, credentials: Mapping[str, str] | None = None) -> None:
        self.uri = str(uri)
        # Anonymous (an empty mapping): the environment's endpoint and flags, none of its keys.
        settings = credentials or os.environ
        config = _config(credentials) if credentials is not None else {}
        signs = _signs(credentials, self.uri)
        if not signs:
            config["skip_signature"] = True
        self._store = S3Store(
            uri.location,
            prefix=uri.prefix or None,
            config=cast("S3Config", config),
            credential_provider=_keys_of(credentials) if signs else None,
            retry_config=_RETRY,
            client_options={
                "timeout": timedelta(minutes=5),
                "allow_http": is_true(settings.get("AWS_ALLOW_HTTP")),
            },
        )

    def _guard(self, key: str, action: Callable[[], T]) -> T:
        try:
            return action()
        except FileNotFoundError as exc:
            if "NoSuchBucket" in str(exc):
                raise StoreAccessError(
                    f"{self.uri}: the bucket does not exist; create it or fix the store URI"
                ) from exc
            raise ObjectNotFoundError(self.uri, key) from exc
        except (PermissionDeniedError, UnauthenticatedError) as exc:
            raise StoreAccessError(
                f"{self.uri}: access to {key!r} was refused ({reason(exc)}); check "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and the bucket policy"
            ) from exc
        except (obstore.exceptions.BaseError, OSError) as exc:
            raise TransientStoreError(f"{self.uri}: {key!r}: {reason(exc)}") from exc

    def read(self, key: str) -> bytes:
        return self._guard(key, lambda: bytes(obstore.get(self._store, key).bytes()))

    def write(self, key: str, data: bytes, *, create_only: bool) -> bool:
        def action() -> bool:
            try:
                obstore.put(self._store, key, data, mode="create" if create_only else "overwrite")
            except (AlreadyExistsError, PreconditionError):
                return False
            return True

        return self._guard(key, action)

    def upload_files(
        self, items: Sequence[tuple[Path, str]], *, progress: ProgressCallback | None = None
    ) -> None:
        def upload(item: tuple[Path, str]) -> None:
            source, key = item
            # A Path lets obstore stream the file and switch to multipart above the chunk size.
            self._guard(
                key, lambda: obstore.put(self._store, key, source, chunk_size=MULTIPART_CHUNK)
            )
            if progress:
                progress(source.stat().st_size)

        run_all(upload, items)

    def download_files(
        self, items: Sequence[tuple[str, Path]], *, progress: ProgressCallback | None = None
    ) -> None:
        def download(item: tuple[str, Path]) -> None:
            key, dest = item

            def action() -> None:
                result = obstore.get(self._store, key)
                with open(dest, "wb") as handle:
                    for block in result.stream(min_chunk_size=_DOWNLOAD_BLOCK):
                        handle.write(block)
                        if progress:
                            progress(len(block))

            self._guard(key, action)

        run_all(download, items)

    def existing(self, keys: Iterable[str]) -> set[str]:
        found: set[str] = set()

        def probe(key: str) -> None:
            try:
                self._guard(key, lambda: obstore.head(self._store, key))
            except ObjectNotFoundError:
                return
            found.add(key)

        run_all(probe, list(keys))
        return found

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        def pages() -> list[list[ObjectInfo]]:
            return [
                [
                    ObjectInfo(m["path"], m["size"], m["last_modified"], m.get("e_tag") or None)
                    for m in page
                ]
                for page in obstore.list(self._store, prefix or None, chunk_size=1000)
            ]

        for page in self._guard(prefix, pages):
            yield from page

    def delete(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = list(keys[start : start + _DELETE_BATCH])
            self._guard(batch[0], partial(obstore.delete, self._store, batch))


def _config(credentials: Mapping[str, str]) -> dict[str, str | bool]:
    """obstore config from explicit credentials; set values override the environment's."""
    config: dict[str, str | bool] = {
        key: credentials[var] for var, key in _CONFIG_OF_ENV.items() if credentials.get(var)
    }
    if "region" not in config and credentials.get("AWS_DEFAULT_REGION"):
        config["region"] = credentials["AWS_DEFAULT_REGION"]
    return config


def _keys_of(credentials: Mapping[str, str] | None) -> _ExplicitKeys | None:
    """The provider of explicitly given keys; None for the environment's identity."""
    if credentials is None:
        return None
    return _ExplicitKeys(
        {
            "access_key_id": credentials["AWS_ACCESS_KEY_ID"],
            "secret_access_key": credentials.get("AWS_SECRET_ACCESS_KEY", ""),
            "token": credentials.get("AWS_SESSION_TOKEN") or None,
            "expires_at": None,
        }
    )


class _ExplicitKeys:
    """A credential provider of fixed keys: with one, obstore reads no keys from the
    environment (its config would only override those it names and keep, e.g., the
    environment's session token)."""

    def __init__(self, credential: S3Credential) -> None:
        self._credential = credential

    def __call__(self) -> S3Credential:
        return self._credential


def _signs(credentials: Mapping[str, str] | None, uri: str) -> bool:
    """Whether requests are signed: with explicit credentials only by their keys (never the
    environment's), else by an identity the environment names, IMDS only where allowed."""
    if credentials is not None:
        return bool(credentials.get("AWS_ACCESS_KEY_ID"))
    if any(all(os.environ.get(var) for var in names) for names in _ENV_IDENTITIES):
        return True
    return may_ask_instance_metadata(uri)
