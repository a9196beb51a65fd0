"""Whether spec.version can be rolled out: its ModelDelta's phase, else the store's catalog.

A ModelDelta in the same namespace, for the same model and store, whose version name (its
``spec.version``, else its own name) or published id is spec.version decides: Ready goes,
Failed is Degraded, anything else holds the rollout in Progressing with the ModelDelta's own
message. Without one, the store is asked (a version pushed with ``deltaroll push``), reading
manifests only, with the identity :mod:`..store_access` chose (the tenant's secretRef
credentials, never the operator's own unless the admin allowed it). Ids are remembered per
process and per identity (namespace and Secret): a published version never changes, but what
one tenant could read says nothing about another.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deltaroll.api.modeldelta import publishes
from deltaroll.api.modeldeployment import ModelDeploymentSpec
from deltaroll.controllers.modeldeployment.planner import TargetVersion

_ids: dict[tuple[str, str, str, str, str], str] = {}


@dataclass(frozen=True)
class StoreIdentity:
    """Who asks the store: the namespace, and how to get the credentials to open it with
    (called only when the store is asked; None: the operator's own environment)."""

    namespace: str
    credentials: Callable[[], Mapping[str, str] | None]


def from_modeldeltas(
    modeldeltas: Iterable[Mapping[str, Any]], spec: ModelDeploymentSpec, ref: str
) -> TargetVersion | None:
    """What the ModelDelta publishing ``ref`` says; None when no ModelDelta does."""
    for body in modeldeltas:
        if not publishes(body, spec.model, spec.store.uri, ref, or_id=True):
            continue
        status = body.get("status") or {}
        phase = status.get("phase") or "Pending"
        delta_name = (body.get("metadata") or {}).get("name")
        if phase == "Ready":
            return TargetVersion("Ready", version_id=status.get("versionId"))
        message = f"ModelDelta {delta_name} is {phase}" + (
            f": {status['message']}" if status.get("message") else ""
        )
        return TargetVersion("Failed" if phase == "Failed" else "Pending", message)
    return None


def from_store(spec: ModelDeploymentSpec, ref: str, who: StoreIdentity) -> TargetVersion:
    """Whether the store publishes ``ref`` (Pending with the store's reason when not)."""
    from deltaroll.controllers.errors import SecretNotFoundError
    from deltaroll.store import Store, StoreError

    secret = spec.store.secret_ref.name if spec.store.secret_ref else ""
    key = (who.namespace, secret, spec.store.uri, spec.model, ref)
    if key in _ids:
        return TargetVersion("Ready", version_id=_ids[key])
    try:
        store = Store(
            spec.store.uri,
            credentials=who.credentials(),
            cache_dir=Path(tempfile.gettempdir()) / "deltaroll-operator",
        )
        version_id = str(store.resolve(spec.model, ref))
    except SecretNotFoundError as exc:
        return TargetVersion("Pending", f"{exc}: create it with the store's credentials")
    except StoreError as exc:
        return TargetVersion(
            "Pending",
            f"version {ref} of {spec.model} is not in {spec.store.uri} and no ModelDelta "
            f"publishes it ({exc})",
            from_store=True,
        )
    _ids[key] = version_id
    return TargetVersion("Ready", version_id=version_id)


def look_up(
    modeldeltas: Iterable[Mapping[str, Any]],
    spec: ModelDeploymentSpec,
    ref: str,
    who: StoreIdentity,
) -> TargetVersion:
    """The ModelDelta's word if there is one, else the store's."""
    return from_modeldeltas(list(modeldeltas), spec, ref) or from_store(spec, ref, who)
