"""A model's records in a store: reading and writing version, anchor and name manifests.

Every backend call goes through the retry policy; every record is validated on the way in, and
a record whose content does not match the key it was found under is refused (a manifest copied
to another name must not make the store lie about a version)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TypeVar

from deltaroll.store import keys
from deltaroll.store.backends import Backend, ObjectInfo
from deltaroll.store.backends.concurrency import run_all
from deltaroll.store.errors import InvalidManifestError, ObjectNotFoundError
from deltaroll.store.manifests import AnchorManifest, NameRecord, VersionManifest, dump, load
from deltaroll.store.retry import DEFAULT_POLICY, RetryPolicy, call_with_retry

T = TypeVar("T")
R = TypeVar("R")


class Catalog:
    """The manifests of the models in one store."""

    def __init__(self, backend: Backend, policy: RetryPolicy = DEFAULT_POLICY) -> None:
        self.backend = backend
        self.policy = policy

    def _retry(self, what: str, operation: Callable[[], T]) -> T:
        return call_with_retry(operation, what=what, policy=self.policy)

    def read_bytes(self, key: str) -> bytes:
        return self._retry(key, lambda: self.backend.read(key))

    def write_bytes(self, key: str, data: bytes, *, create_only: bool) -> bool:
        return self._retry(key, lambda: self.backend.write(key, data, create_only=create_only))

    def list_keys(self, prefix: str) -> list[ObjectInfo]:
        return self._retry(prefix, lambda: list(self.backend.list(prefix)))

    def _stems(self, prefix: str, suffix: str) -> list[str]:
        listed = self.list_keys(prefix)
        return sorted(
            stem for info in listed if (stem := keys.stem(info.key, prefix, suffix)) is not None
        )

    # versions ---------------------------------------------------------------------------

    def version_ids(self, model: str) -> list[str]:
        return self._stems(keys.versions_prefix(model), ".json")

    def read_version(self, model: str, version: str) -> VersionManifest:
        key = keys.version_key(model, version)
        manifest = load(VersionManifest, self.read_bytes(key), uri=self.backend.uri, key=key)
        self._check_identity(key, manifest.model, model, manifest.version, version)
        return manifest

    def find_version(self, model: str, version: str) -> VersionManifest | None:
        try:
            return self.read_version(model, version)
        except ObjectNotFoundError:
            return None

    def all_versions(self, model: str) -> dict[str, VersionManifest]:
        read = _read_all(self.version_ids(model), partial(self.read_version, model))
        return dict(sorted(read.items()))

    def publish_version(self, manifest: VersionManifest) -> bool:
        """Write a version manifest unless one exists; True when this call published it."""
        key = keys.version_key(manifest.model, manifest.version)
        return self.write_bytes(key, dump(manifest), create_only=True)

    def replace_version(self, manifest: VersionManifest) -> None:
        """Atomically replace a published version's manifest (squash re-parents a version)."""
        key = keys.version_key(manifest.model, manifest.version)
        self.write_bytes(key, dump(manifest), create_only=False)

    # anchors ----------------------------------------------------------------------------

    def anchor_ids(self, model: str) -> list[str]:
        return self._stems(keys.anchors_prefix(model), ".json")

    def read_anchor(self, model: str, version: str) -> AnchorManifest:
        key = keys.anchor_key(model, version)
        anchor = load(AnchorManifest, self.read_bytes(key), uri=self.backend.uri, key=key)
        self._check_identity(key, anchor.model, model, anchor.version, version)
        return anchor

    def all_anchors(self, model: str) -> dict[str, AnchorManifest]:
        read = _read_all(self.anchor_ids(model), partial(self.read_anchor, model))
        return dict(sorted(read.items()))

    def write_anchor(self, anchor: AnchorManifest) -> bool:
        key = keys.anchor_key(anchor.model, anchor.version)
        return self.write_bytes(key, dump(anchor), create_only=True)

    # names ------------------------------------------------------------------------------

    def name_ids(self, model: str) -> list[str]:
        return self._stems(keys.names_prefix(model), ".json")

    def read_name(self, model: str, name: str) -> NameRecord | None:
        key = keys.name_key(model, name)
        try:
            data = self.read_bytes(key)
        except ObjectNotFoundError:
            return None
        record = load(NameRecord, data, uri=self.backend.uri, key=key)
        self._check_identity(key, record.model, model, record.name, name)
        return record

    def all_names(self, model: str) -> dict[str, NameRecord]:
        read = _read_all(self.name_ids(model), partial(self._read_existing_name, model))
        return dict(sorted(read.items()))

    def _read_existing_name(self, model: str, name: str) -> NameRecord:
        record = self.read_name(model, name)
        if record is None:
            raise ObjectNotFoundError(self.backend.uri, keys.name_key(model, name))
        return record

    def write_name(self, record: NameRecord, *, create_only: bool) -> bool:
        key = keys.name_key(record.model, record.name)
        return self.write_bytes(key, dump(record), create_only=create_only)

    # -------------------------------------------------------------------------------------

    def delete(self, keys_to_delete: list[str]) -> None:
        if keys_to_delete:
            self._retry("delete", lambda: self.backend.delete(keys_to_delete))

    def _check_identity(
        self, key: str, model: str, expected_model: str, name: str, expected_name: str
    ) -> None:
        if (model, name) != (expected_model, expected_name):
            raise InvalidManifestError(
                f"{self.backend.uri}: {key!r} describes {model}/{name}, not "
                f"{expected_model}/{expected_name}; remove the misplaced manifest"
            )


def _read_all(names: list[str], read: Callable[[str], R]) -> dict[str, R]:
    """Read many small records concurrently (one request each); records deleted between the
    listing and the read are skipped."""
    found: dict[str, R] = {}

    def read_one(name: str) -> None:
        try:
            found[name] = read(name)
        except ObjectNotFoundError:
            return

    run_all(read_one, names)
    return found
