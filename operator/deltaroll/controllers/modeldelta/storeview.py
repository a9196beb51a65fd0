"""What the operator reads from a ModelDelta's store: the parent and whether it is published.

Read-only, and only manifests (a few small objects), never weights. Errors become a
:class:`StoreView` with an actionable message instead of exceptions, so the planner decides what
they mean for the phase. The published version is looked up by its *name* only (never a version-id
prefix), so a ModelDelta named like a hex prefix can never adopt an unrelated version.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from deltaroll.api.modeldelta import ModelDelta
from deltaroll.controllers.modeldelta.planner import StoreView
from deltaroll.store import (
    InvalidStoreUriError,
    SignatureError,
    Store,
    StoreAccessError,
    StoreError,
    TransientStoreError,
    VersionNotFoundError,
)
from deltaroll.store.facts import version_facts
from deltaroll.store.signing import PublicKey


def look_up(
    delta: ModelDelta,
    *,
    cache_dir: Path,
    credentials: Mapping[str, str] | None = None,
    signer: PublicKey | None = None,
) -> StoreView:
    """The parent's id and the published version's facts (and whether ``signer`` signed it
    under the ModelDelta's name), or why the store could not say.

    ``credentials`` are the data of the store's secretRef Secret: the store is read with the
    same identity as the worker Job's (envFrom), so the answer is the one the Job would get.
    """
    spec = delta.spec
    try:
        store = Store(spec.store.uri, credentials=credentials, cache_dir=cache_dir)
        parent_id = _resolve_parent(store, spec.model, spec.parent)
        record = store.catalog.read_name(spec.model, delta.version_name)
        published = version_facts(store, spec.model, record.version) if record else None
        signed = bool(record and signer and _signed(store, delta, record.version, signer))
    except InvalidStoreUriError as exc:
        return StoreView(problem=str(exc), problem_reason="InvalidStore")
    except StoreAccessError as exc:
        return StoreView(problem=str(exc), problem_reason="StoreAccessDenied")
    except TransientStoreError as exc:
        return StoreView(problem=str(exc), problem_reason="StoreUnavailable", retryable=True)
    except StoreError as exc:
        return StoreView(problem=str(exc), problem_reason="StoreError")
    return StoreView(parent_id=parent_id, published=published, signed=signed)


def _signed(store: Store, delta: ModelDelta, version: str, signer: PublicKey) -> bool:
    """Whether ``version`` carries ``signer``'s signature naming the ModelDelta's version name
    (a missing or bad one is signed again, after the checks)."""
    try:
        store.signed(
            delta.spec.model, version, [signer],
            name=delta.version_name, namespace=delta.metadata.get("namespace"),
        )  # fmt: skip
    except SignatureError:
        return False
    return True


def _resolve_parent(store: Store, model: str, parent: str | None) -> str | None:
    if parent is None:
        return None
    try:
        return store.resolve(model, parent)
    except VersionNotFoundError:
        return None
