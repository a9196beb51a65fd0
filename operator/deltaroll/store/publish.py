"""Publishing a delta directory that already exists on disk: objects first, manifest last.

This is what ``push`` does after diffing, and what a worker Job that computed a delta calls. The
order makes publication atomic for readers: objects are uploaded (skipping those the store has),
then an anchor manifest if the delta is a snapshot, then the version manifest with a conditional
create. A second writer of the same version finds the manifest there and leaves it alone. The
last step runs under a publish lease (:mod:`deltaroll.store.leases`): no gc deletes while it
checks again that every object and the parent are there and writes the manifest."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import structlog

from deltaroll.checkpoint import read_delta_manifest
from deltaroll.checkpoint.aux_policy import DEFAULT_AUX_POLICY, AuxPolicy
from deltaroll.checkpoint.manifest import MANIFEST_NAME
from deltaroll.checkpoint.objects import OBJECTS_DIR, ObjectDir
from deltaroll.checkpoint.packs import PackReader
from deltaroll.store.backends import ProgressCallback
from deltaroll.store.catalog import Catalog
from deltaroll.store.errors import BaseNotInStoreError
from deltaroll.store.leases import publishing
from deltaroll.store.manifests import AnchorManifest, DeltaRecord, ObjectRef, VersionManifest, now
from deltaroll.store.names import validate_name
from deltaroll.store.transfer import upload_objects

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class PublishOutcome:
    version: str
    parent: str | None
    uploaded_bytes: int
    published: bool  # False: the version was already published (by us earlier, or a racer)


def delta_record(delta_dir: Path, aux_policy: AuxPolicy = DEFAULT_AUX_POLICY) -> DeltaRecord:
    """Describe a delta directory for a manifest; the checkpoint layer validates it first, and
    a target that ships files ``aux_policy`` does not allow is refused before any upload."""
    manifest = read_delta_manifest(delta_dir)
    aux_policy.check(manifest, "target", PackReader(ObjectDir(delta_dir), manifest.objects))
    data = (delta_dir / MANIFEST_NAME).read_bytes()
    target = [entry for entry in manifest.tensors if entry.target is not None]
    return DeltaRecord(
        base_version=manifest.base_version,
        target_version=manifest.target_version,
        manifest=ObjectRef(digest=hashlib.sha256(data).hexdigest(), size=len(data)),
        payload=[ObjectRef(digest=o.digest, size=o.size) for o in manifest.objects],
        changed_elements=sum(entry.changed_elements for entry in target),
        total_elements=sum(entry.total_elements for entry in target),
        full_bytes=manifest.checkpoint_bytes("target"),
    )


def publish_delta(
    catalog: Catalog,
    model: str,
    delta_dir: Path,
    *,
    progress: ProgressCallback | None = None,
    aux_policy: AuxPolicy = DEFAULT_AUX_POLICY,
) -> PublishOutcome:
    """Publish a delta from a published parent (or an anchor, when its base is null)."""
    validate_name(model, what="model")
    record = delta_record(delta_dir, aux_policy)
    if record.base_version is None:
        return publish_anchor(catalog, model, delta_dir, record=record, progress=progress)
    version, parent = record.target_version, record.base_version
    existing = catalog.find_version(model, version)
    if existing is not None:
        log.info("store.already_published", model=model, version=version)
        return PublishOutcome(version, existing.parent, 0, published=False)
    _check_parent(catalog, model, parent)
    sent = upload_delta_objects(catalog, model, delta_dir, record, progress=progress)
    with publishing(catalog, model) as lease:  # no gc deletes from here to the manifest
        _check_parent(catalog, model, parent)
        sent += upload_delta_objects(catalog, model, delta_dir, record, checked=True)
        lease.check()
        manifest = VersionManifest(
            model=model, version=version, parent=parent, delta=record, created_at=now()
        )
        published = catalog.publish_version(manifest)
    log.info("store.published", model=model, version=version, parent=parent, new=published)
    return PublishOutcome(
        version, parent if published else _parent_of(catalog, model, version), sent, published
    )


def publish_anchor(
    catalog: Catalog,
    model: str,
    delta_dir: Path,
    *,
    record: DeltaRecord | None = None,
    progress: ProgressCallback | None = None,
    aux_policy: AuxPolicy = DEFAULT_AUX_POLICY,
) -> PublishOutcome:
    """Publish a full snapshot; the version becomes a root unless it was already published."""
    record = record or delta_record(delta_dir, aux_policy)
    version = record.target_version
    sent = upload_delta_objects(catalog, model, delta_dir, record, progress=progress)
    with publishing(catalog, model) as lease:
        sent += upload_delta_objects(catalog, model, delta_dir, record, checked=True)
        lease.check()
        anchor_new = catalog.write_anchor(
            AnchorManifest(model=model, version=version, delta=record, created_at=now())
        )
        root = VersionManifest(
            model=model, version=version, parent=None, delta=None, created_at=now()
        )
        published = catalog.publish_version(root)
    log.info("store.anchored", model=model, version=version, new=published or anchor_new)
    parent = None if published else _parent_of(catalog, model, version)
    return PublishOutcome(version, parent, sent, published or anchor_new)


def upload_delta_objects(
    catalog: Catalog,
    model: str,
    delta_dir: Path,
    record: DeltaRecord,
    *,
    progress: ProgressCallback | None = None,
    checked: bool = False,
) -> int:
    """Upload the objects of a delta directory (its manifest included) that the store lacks;
    bytes sent. Called again under the publish lease (``checked``): an object that a gc removed
    since the first call (one the store had, so it was not sent) is sent now."""
    return upload_objects(
        catalog.backend,
        model,
        delta_dir / OBJECTS_DIR,
        record.objects,
        policy=catalog.policy,
        progress=progress,
        located={record.manifest.digest: delta_dir / MANIFEST_NAME},
        checked=checked,
    )


def _check_parent(catalog: Catalog, model: str, parent: str) -> None:
    if catalog.find_version(model, parent) is None:
        raise BaseNotInStoreError(
            f"{catalog.backend.uri}: the base {parent} is not a version of {model!r}; push the "
            "base checkpoint first (or push this one with --anchor)"
        )


def _parent_of(catalog: Catalog, model: str, version: str) -> str | None:
    return catalog.read_version(model, version).parent
