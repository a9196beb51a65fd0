"""Converting a model in a store written by an older Deltaroll (delta format v1) to today's.

A v1 version cannot be rewritten record by record: its id hashes xxh3 checksums (v2: BLAKE3
digests and the auxiliary files), its deltas carry no change-set digests, and v2's digests need
the weights themselves. So every version is rebuilt, in graph order: an anchor from its carried
bytes, any other version from its parent and its v1 delta (the payload encoding did not change),
every tensor and file checked against the v1 manifest's checksum before anything is published.
Each is then pushed like a new checkpoint (a delta from its rebuilt parent; an anchor where v1 had
one), and each name is moved to the new id of the version it named.

Order, so that nothing of v1 is lost and a crash is finished by running the command again:

1. every v1 record is copied to ``<model>/legacy-v1/`` and only then removed from
   ``versions/`` and ``anchors/`` (where today's readers refuse it); v1 objects stay;
2. the versions are rebuilt from the copies and pushed (a push of the same checkpoint is the
   same version again, so a repeat publishes nothing new);
3. the names are moved (idempotent). The copies stay: they are the only record of the v1 ids.

Do not run ``gc`` on the model while it converts: until its v2 versions exist, nothing live
refers to the v1 objects.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xxhash
import zstandard

from deltaroll.checkpoint.dtypes import bits_view
from deltaroll.checkpoint.names import check_file_name, child_path
from deltaroll.checkpoint.reader import Checkpoint, open_checkpoint
from deltaroll.codec.delta import apply_tensor_delta
from deltaroll.codec.errors import CodecError
from deltaroll.codec.model import EncodedTensor, TensorKind
from deltaroll.store import keys
from deltaroll.store.aliases import set_name
from deltaroll.store.catalog import Catalog
from deltaroll.store.client import Store
from deltaroll.store.errors import InvalidManifestError
from deltaroll.store.names import validate_digest, validate_name

V1_VERSION_SCHEMA = "deltaroll.store.version/v1"
V1_ANCHOR_SCHEMA = "deltaroll.store.anchor/v1"
V1_DELTA_SCHEMA = "deltaroll.delta/v1"
LEGACY = "legacy-v1"
V1_CHUNK_BYTES = 64 << 20


@dataclass
class _V1Version:
    """One v1 version: its parent's delta and, where it had one, its anchor (v1 manifests)."""

    version: str
    parent: str | None = None
    delta: dict[str, Any] | None = None
    anchor: dict[str, Any] | None = None
    children: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class UpgradeResult:
    """What an upgrade did: old id -> new id, and the names moved."""

    model: str
    versions: dict[str, str]
    names: dict[str, str]


def upgrade_model(store: Store, model: str, work_dir: Path | None = None) -> UpgradeResult:
    """Convert ``model``'s v1 versions in ``store`` (see the module docstring)."""
    catalog = store.catalog
    _set_aside_v1_records(catalog, model)
    versions = _read_legacy(catalog, model)
    converted: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="deltaroll-upgrade-", dir=work_dir) as tmp:
        for version, built, parent_built in _rebuilt(catalog, model, versions, Path(tmp)):
            info = versions[version]
            result = store.push(
                model, built, base=parent_built, anchor=info.anchor is not None or not parent_built
            )
            converted[version] = result.version
            if parent_built is not None and not _still_needed(parent_built, versions, converted):
                shutil.rmtree(parent_built)
    names: dict[str, str] = {}
    for name, record in catalog.all_names(model).items():
        if record.version in converted:
            set_name(catalog, model, name, converted[record.version], force=True)
            names[name] = converted[record.version]
    return UpgradeResult(model, converted, names)


def _legacy_key(key: str, model: str) -> str:
    return f"{keys.model_prefix(model)}{LEGACY}/{key.removeprefix(keys.model_prefix(model))}"


def _set_aside_v1_records(catalog: Catalog, model: str) -> None:
    """Copy each v1 record under ``legacy-v1/`` (durably, first), then remove the original."""
    for prefix in (keys.versions_prefix(model), keys.anchors_prefix(model)):
        for info in catalog.list_keys(prefix):
            data = catalog.read_bytes(info.key)
            if _schema(data) not in (V1_VERSION_SCHEMA, V1_ANCHOR_SCHEMA):
                continue
            catalog.write_bytes(_legacy_key(info.key, model), data, create_only=False)
            catalog.delete([info.key])


def _schema(data: bytes) -> object:
    try:
        document = json.loads(data)
    except ValueError:
        return None
    return document.get("schema") if isinstance(document, dict) else None


def _read_legacy(catalog: Catalog, model: str) -> dict[str, _V1Version]:
    """The v1 graph from the set-aside records, every embedded manifest checked."""
    versions: dict[str, _V1Version] = {}
    legacy = f"{keys.model_prefix(model)}{LEGACY}/"
    for info in catalog.list_keys(legacy):
        with _malformed(info.key):
            record = json.loads(catalog.read_bytes(info.key))
            version = validate_name(record["version"], what="version")
            # A version record with no delta: the first version, whose anchor carries it.
            manifest = _embedded_manifest(record, info.key) if record["delta"] else None
            entry = versions.setdefault(version, _V1Version(version))
            if record["schema"] == V1_ANCHOR_SCHEMA:
                entry.anchor = manifest
            else:
                parent = record["parent"]
                entry.parent = None if parent is None else validate_name(parent, what="version")
                entry.delta = manifest
    for entry in versions.values():
        if entry.parent is not None:
            if entry.parent not in versions:
                raise InvalidManifestError(
                    f"v1 version {entry.version} has parent {entry.parent}, which the store "
                    "does not hold; it cannot be rebuilt"
                )
            versions[entry.parent].children.append(entry.version)
    return versions


@contextmanager
def _malformed(what: str) -> Iterator[None]:
    """One clear error for a v1 record or manifest missing a field or holding a wrong type."""
    try:
        yield
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidManifestError(f"{what} is not a well-formed v1 record ({exc!r})") from exc


def _embedded_manifest(record: dict[str, Any], key: str) -> dict[str, Any]:
    delta = record["delta"]
    text = delta["manifest_json"]
    if hashlib.sha256(text.encode()).hexdigest() != delta["manifest_sha256"]:
        raise InvalidManifestError(
            f"{key}: the embedded v1 delta manifest does not match its sha256"
        )
    manifest = json.loads(text)
    if manifest.get("schema") != V1_DELTA_SCHEMA:
        raise InvalidManifestError(f"{key}: not a {V1_DELTA_SCHEMA} delta")
    return dict(manifest)


def _rebuilt(
    catalog: Catalog, model: str, versions: dict[str, _V1Version], work: Path
) -> Iterator[tuple[str, Path, Path | None]]:
    """(version, its rebuilt checkpoint, its parent's) in an order where parents come first:
    from each anchor without a parent down its children."""
    roots = [v for v in versions.values() if v.parent is None]
    stack: list[tuple[str, Path | None]] = [
        (root.version, None) for root in sorted(roots, key=lambda v: v.version)
    ]
    while stack:
        version, parent_dir = stack.pop()
        info = versions[version]
        out = work / version
        shutil.rmtree(out, ignore_errors=True)
        manifest = info.anchor if parent_dir is None else info.delta
        if manifest is None:
            raise InvalidManifestError(f"v1 version {version} has no parent and no anchor")
        with _malformed(f"the v1 delta of {version}"):
            _materialize(catalog, model, manifest, parent_dir, out)
        yield version, out, parent_dir
        stack.extend((child, out) for child in sorted(info.children))


def _still_needed(built: Path, versions: dict[str, _V1Version], converted: dict[str, str]) -> bool:
    children = versions[built.name].children
    return any(child not in converted for child in children)


def _object(catalog: Catalog, model: str, digest: str) -> bytes:
    data = catalog.read_bytes(keys.object_key(model, validate_digest(digest)))
    if hashlib.sha256(data).hexdigest() != digest:
        raise InvalidManifestError(f"v1 object {digest} is corrupt (its sha256 differs)")
    return bytes(data)


def _chunks(catalog: Catalog, model: str, digests: list[str]) -> bytes:
    """Whole data v1 carried: zstd-compressed chunks of at most 64 MiB each, in order."""
    decompressor = zstandard.ZstdDecompressor()
    try:
        return b"".join(
            decompressor.decompress(_object(catalog, model, d), max_output_size=V1_CHUNK_BYTES)
            for d in digests
        )
    except zstandard.ZstdError as exc:
        raise InvalidManifestError(
            f"a v1 chunk of {digests[:1]} does not decompress: {exc}"
        ) from exc


def _materialize(
    catalog: Catalog, model: str, manifest: dict[str, Any], parent: Path | None, out: Path
) -> None:
    """Write the target side of a v1 delta into ``out``, every tensor and file checked against
    the v1 checksums."""
    entries = {e["name"]: e for e in manifest["tensors"]}
    layout = manifest["target_layout"]
    source = open_checkpoint(parent) if parent is not None else None
    out.mkdir(parents=True)
    for file in layout["files"]:
        header = _object(catalog, model, file["header_object"])  # its JSON, as in the file
        with child_path(out, check_file_name(file["name"])).open("wb") as f:
            f.write(struct.pack("<Q", len(header)))
            f.write(header)
            for name in file["tensors"]:
                f.write(_tensor_bytes(catalog, model, entries[name], source))
    for aux in layout["aux_files"]:
        data = _chunks(catalog, model, aux["chunks"])
        if xxhash.xxh3_128_hexdigest(data) != aux["checksum"]:
            raise InvalidManifestError(f"v1 file {aux['name']} does not match its checksum")
        child_path(out, check_file_name(aux["name"])).write_bytes(data)
    open_checkpoint(out)  # a well-formed checkpoint, or a clear error


def _tensor_bytes(
    catalog: Catalog, model: str, entry: dict[str, Any], source: Checkpoint | None
) -> bytes:
    name, kind, target = entry["name"], entry["kind"], entry["target"]
    if kind == "carried":
        data = _chunks(catalog, model, entry["target_chunks"])
    else:
        if source is None:
            raise InvalidManifestError(f"v1 anchor keeps tensor {name!r} as a change, not whole")
        ref = source.tensors[name]
        with ref.path.open("rb") as f:
            f.seek(ref.begin)
            data = f.read(ref.end - ref.begin)
        if kind != "unchanged":
            values = np.frombuffer(data, np.dtype(bits_view(ref.dtype))).copy()
            encoded = EncodedTensor(
                TensorKind(kind),
                _object(catalog, model, entry["delta_object"]),
                entry["changed_elements"],
                entry["total_elements"],
            )
            try:
                apply_tensor_delta(values, encoded, side="base")
            except CodecError as exc:
                raise InvalidManifestError(f"v1 delta of tensor {name!r}: {exc}") from exc
            data = values.tobytes()
    if xxhash.xxh3_128_hexdigest(data) != target["checksum"]:
        raise InvalidManifestError(
            f"tensor {name!r} rebuilt from the v1 delta does not match its v1 checksum"
        )
    return data
