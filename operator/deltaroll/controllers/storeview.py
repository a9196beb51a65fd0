"""What the operator reads from a ModelDelta's store: the parent and whether it is published.

Read-only, and only manifests (a few small objects), never weights. Errors become a
:class:`StoreView` with an actionable message instead of exceptions, so the planner decides what
they mean for the phase. The published version is looked up by its *name* only (never a version-id
prefix), so a ModelDelta named like a hex prefix can never adopt an unrelated version.
"""

from __future__ import annotations

from pathlib import Path

from deltaroll.api.modeldelta import ModelDelta
from deltaroll.controllers.jobs import version_name
from deltaroll.controllers.planner import StoreView
from deltaroll.store import (
    InvalidStoreUriError,
    Store,
    StoreAccessError,
    StoreError,
    TransientStoreError,
    VersionNotFoundError,
)
from deltaroll.worker.facts import version_facts


def look_up(delta: ModelDelta, *, cache_dir: Path) -> StoreView:
    """The parent's id and the published version's facts, or why the store could not say.

    A remote store with a secretRef is not read: its credentials are the Job's (envFrom), and
    the operator's own identity may see a different bucket policy, so any answer would be a
    guess. The worker then checks the parent and the planner takes the numbers from the worker's
    report. (Reading it here needs per-Store credentials; requested from the store layer.)
    """
    spec = delta.spec
    if spec.store.secret_ref is not None and not spec.store.uri.startswith("file://"):
        return StoreView(unchecked=True)
    try:
        store = Store(spec.store.uri, cache_dir=cache_dir)
        parent_id = _resolve_parent(store, spec.model, spec.parent)
        record = store.catalog.read_name(spec.model, version_name(delta))
        published = version_facts(store, spec.model, record.version) if record else None
    except InvalidStoreUriError as exc:
        return StoreView(problem=str(exc), problem_reason="InvalidStore")
    except StoreAccessError as exc:
        return StoreView(problem=str(exc), problem_reason="StoreAccessDenied")
    except TransientStoreError as exc:
        return StoreView(problem=str(exc), problem_reason="StoreUnavailable", retryable=True)
    except StoreError as exc:
        return StoreView(problem=str(exc), problem_reason="StoreError")
    return StoreView(parent_id=parent_id, published=published)


def _resolve_parent(store: Store, model: str, parent: str | None) -> str | None:
    if parent is None:
        return None
    try:
        return store.resolve(model, parent)
    except VersionNotFoundError:
        return None
