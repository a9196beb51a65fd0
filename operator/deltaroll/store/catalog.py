"""A model's records in a store: reading and writing version, anchor and name manifests.

Every backend call goes through the retry policy; every record is validated on the way in, and
a record whose content does not match the key it was found under is refused (a manifest copied
to another name must not make the store lie about a version).

Reading every record of a model (the version graph a pull plans on) lists the records and reads
only those this catalog has not read at the revision listed: a long-lived reader (the agent)
reads each version and anchor once, not once per pull, so a pull costs the store what
was published since the last one rather than the whole history. A record written again (a
squash re-parents a version) lists with a new revision and is read again. Names, which move,
are read afresh."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar, cast

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
        # records as read, by key: (the revision listed before the read, the validated record)
        self._read: dict[str, tuple[str, Any]] = {}
        self._read_lock = threading.Lock()

    def _retry(self, what: str, operation: Callable[[], T]) -> T:
        return call_with_retry(operation, what=what, policy=self.policy)

    def read_bytes(self, key: str) -> bytes:
        return self._retry(key, lambda: self.backend.read(key))

    def write_bytes(self, key: str, data: bytes, *, create_only: bool) -> bool:
        return self._retry(key, lambda: self.backend.write(key, data, create_only=create_only))

    def list_keys(self, prefix: str) -> list[ObjectInfo]:
        return self._retry(prefix, lambda: list(self.backend.list(prefix)))

    def _stems(self, prefix: str, suffix: str) -> list[str]:
        return sorted(self._listed(prefix, suffix))

    def _listed(self, prefix: str, suffix: str) -> dict[str, ObjectInfo]:
        return {
            stem: info
            for info in self.list_keys(prefix)
            if (stem := keys.stem(info.key, prefix, suffix)) is not None
        }

    def _read_listed(self, prefix: str, suffix: str, read: Callable[[str], R]) -> dict[str, R]:
        """Every record under ``prefix`` by stem, sorted; a record read before at the revision
        listed now is not read again, and what is no longer listed is forgotten."""
        listed = self._listed(prefix, suffix)

        def remembered(stem: str) -> R:
            info = listed[stem]
            with self._read_lock:
                kept = self._read.get(info.key)
            if info.revision is not None and kept is not None and kept[0] == info.revision:
                return cast(R, kept[1])
            record = read(stem)
            if info.revision is not None:
                with self._read_lock:
                    self._read[info.key] = (info.revision, record)
            return record

        found = _read_all(list(listed), remembered)
        with self._read_lock:
            for key in [key for key in self._read if key.startswith(prefix)]:
                if keys.stem(key, prefix, suffix) not in listed:
                    del self._read[key]
        return dict(sorted(found.items()))

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
        return self._read_listed(
            keys.versions_prefix(model), ".json", partial(self.read_version, model)
        )

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
        return self._read_listed(
            keys.anchors_prefix(model), ".json", partial(self.read_anchor, model)
        )

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
        """Read afresh every time: a name moves often, and within one mtime tick a file store's
        revision might not show it."""
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
