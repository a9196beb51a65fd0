"""Named errors of the store layer.

Every message names the store URI and the object it concerns and says what to do. Messages are
built from our own words plus a scrubbed one-line reason (see :mod:`deltaroll.redact`), so
credentials from the environment never reach a log line, an exception or ``--json`` output.
"""

from __future__ import annotations

from deltaroll.errors import DeltarollError


class StoreError(DeltarollError):
    """Something about a store went wrong; the message names the URI and the object."""


class InvalidStoreUriError(StoreError):
    """The store URI cannot be used (unknown scheme, missing bucket, credentials in the URI)."""

    exit_code = 2


class InvalidNameError(StoreError):
    """A model, version or alias name would not make a safe object key."""

    exit_code = 2


class ObjectNotFoundError(StoreError):
    """An object a manifest refers to is missing from the store."""

    def __init__(self, uri: str, key: str) -> None:
        super().__init__(
            f"{uri}: object {key!r} is missing; the store is incomplete or was garbage-collected "
            "while in use: push the version again or pull another version"
        )
        self.uri = uri
        self.key = key


class CorruptObjectError(StoreError):
    """A downloaded object's sha256 does not match its name; it was discarded, never applied."""

    def __init__(self, uri: str, key: str, actual: str) -> None:
        super().__init__(
            f"{uri}: object {key!r} is corrupt (its sha256 is {actual}); it was discarded and "
            "nothing was applied: delete the object from the store and push the version again"
        )
        self.uri = uri
        self.key = key


class StoreAccessError(StoreError):
    """The store refused us (credentials, permissions, missing bucket); retrying will not help."""


class StoreRefusedError(StoreError):
    """The store answered that it will not apply an operation (a path or a file it rejects);
    sending it again gets the same answer, so it is not retried."""


class TransientStoreError(StoreError):
    """A failure that may pass (timeouts, 5xx, dropped connections); retried with backoff."""


class TransferCancelledError(StoreError):
    """A download stopped because its caller asked it to (e.g. the version it was for is no
    longer wanted); the objects that arrived stay verified in the cache. Not retried."""

    def __init__(self, uri: str, not_started: int, total: int, received: int) -> None:
        super().__init__(
            f"{uri}: download stopped on request, {not_started} of {total} object(s) not "
            "fetched; the ones that arrived are kept in the cache, run the pull again to finish"
        )
        self.uri = uri
        self.not_started = not_started
        self.received = received  # bytes downloaded before the stop


class VersionNotFoundError(StoreError):
    """Neither a version id nor a name of that model matches the reference."""


class NameConflictError(StoreError):
    """A human name already points at another version."""


class BaseRequiredError(StoreError):
    """A push to a model with versions needs a base checkpoint or an explicit anchor."""

    exit_code = 2


class BaseNotInStoreError(StoreError):
    """The base checkpoint of a push is not a published version of the model."""


class NoPathError(StoreError):
    """No chain of deltas or anchors leads from what the puller has to the wanted version."""


class InvalidManifestError(StoreError):
    """A version, anchor or name manifest in the store is malformed or inconsistent."""


class SquashError(StoreError):
    """The two versions of a squash cannot be joined by one delta."""

    exit_code = 2


class SignatureError(StoreError):
    """A version is not signed by a key the verifier accepts, or its signature does not cover
    what would be loaded; nothing was applied."""


class InconsistentVersionError(StoreError):
    """A published version disagrees with its own records or with what its publisher asked
    for (another parent, a name pointing elsewhere, a missing object, a file that is not data):
    it was not signed."""


class StoreBusyError(TransientStoreError):
    """A gc and a publish of one model would overlap: the one that yields says so (nothing it
    would have deleted or published was touched); run it again shortly."""


class ObjectCacheError(StoreError):
    """The local object cache directory holds something it never writes (an altered salt);
    the message names the file to remove."""
