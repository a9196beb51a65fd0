"""Which versions must survive a ModelDelta's deletion. Pure.

``deletionPolicy: Delete`` removes the ModelDelta's version from the store, except when a
ModelDeployment of the same model and store still names it: as ``spec.version`` (what GitOps
asks for), ``status.stableVersion`` (what pods serve) or ``status.canaryVersion`` (what some pods
are moving to). Deleting those would strand pods mid-rollout or make a rollback impossible.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class VersionUse:
    """A ModelDeployment that refers to a version (by name or id)."""

    deployment: str  # namespace/name
    ref: str
    field: str


def uses_of(
    deployments: Iterable[Mapping[str, Any]], model: str, store_uri: str
) -> list[VersionUse]:
    """Every version reference of the ModelDeployments serving ``model`` from ``store_uri``."""
    uses = []
    for body in deployments:
        spec, status = body.get("spec") or {}, body.get("status") or {}
        if spec.get("model") != model or (spec.get("store") or {}).get("uri") != store_uri:
            continue
        meta = body.get("metadata") or {}
        who = f"{meta.get('namespace')}/{meta.get('name')}"
        for field, ref in (
            ("spec.version", spec.get("version")),
            ("status.stableVersion", status.get("stableVersion")),
            ("status.canaryVersion", status.get("canaryVersion")),
        ):
            if ref:
                uses.append(VersionUse(who, str(ref), field))
    return uses


def blocking_use(
    version_id: str, resolved: Mapping[str, str | None], uses: Iterable[VersionUse]
) -> VersionUse | None:
    """The first use that names ``version_id`` (``resolved`` maps each ref to its id)."""
    return next((use for use in uses if resolved.get(use.ref) == version_id), None)
