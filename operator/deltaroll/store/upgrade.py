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

The whole conversion holds the model's publish lease (:mod:`deltaroll.store.leases`, renewed as
it goes): until its v2 versions exist nothing live refers to the v1 objects, so a ``gc`` started
meanwhile is refused, and one already running is waited for before anything is set aside.

Memory never holds a whole tensor: carried data is decompressed chunk by chunk straight into the
rebuilt file (the chunk count checked against the tensor's size first), and a changed tensor is
streamed from its base a window at a time (plus its changed elements).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import xxhash
import zstandard

from deltaroll.checkpoint.dtypes import bits_view, byte_view, itemsize
from deltaroll.checkpoint.names import check_file_name, child_path
from deltaroll.checkpoint.reader import Checkpoint, open_checkpoint
from deltaroll.codec.delta import decode_changes, decode_dense
from deltaroll.codec.errors import CodecError
from deltaroll.codec.gaps import gaps_to_positions
from deltaroll.codec.model import EncodedTensor, TensorKind
from deltaroll.store import keys
from deltaroll.store.aliases import set_name
from deltaroll.store.catalog import Catalog
from deltaroll.store.client import Store
from deltaroll.store.errors import InvalidManifestError
from deltaroll.store.leases import Lease, publishing
from deltaroll.store.names import validate_digest, validate_name

V1_VERSION_SCHEMA = "deltaroll.store.version/v1"
V1_ANCHOR_SCHEMA = "deltaroll.store.anchor/v1"
V1_DELTA_SCHEMA = "deltaroll.delta/v1"
LEGACY = "legacy-v1"
V1_CHUNK_BYTES = 64 << 20
#: How much of a base tensor a rebuild reads at once.
_WINDOW_BYTES = 16 << 20


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
    with publishing(catalog, model) as lease:  # no gc while the v1 objects are only ours
        versions = _read_legacy(catalog, model, _set_aside_v1_records(catalog, model))
        converted: dict[str, str] = {}
        with tempfile.TemporaryDirectory(prefix="deltaroll-upgrade-", dir=work_dir) as tmp:
            rebuilt = _rebuilt(catalog, model, versions, Path(tmp), lease)
            for version, built, parent_built in rebuilt:
                lease.renew(catalog)
                anchor = versions[version].anchor is not None or not parent_built
                converted[version] = store.push(
                    model, built, base=parent_built, anchor=anchor
                ).version
                if parent_built is not None and not _still_needed(
                    parent_built, versions, converted
                ):
                    shutil.rmtree(parent_built)
        names: dict[str, str] = {}
        for name, record in catalog.all_names(model).items():
            if record.version in converted:
                lease.renew(catalog)
                set_name(catalog, model, name, converted[record.version], force=True)
                names[name] = converted[record.version]
    return UpgradeResult(model, converted, names)


def _legacy_key(key: str, model: str) -> str:
    return f"{keys.model_prefix(model)}{LEGACY}/{key.removeprefix(keys.model_prefix(model))}"


def _set_aside_v1_records(catalog: Catalog, model: str) -> dict[str, Any]:
    """Copy each v1 record under ``legacy-v1/`` (durably, first), then remove the original;
    returns the records set aside now, parsed, by their new key."""
    moved: dict[str, Any] = {}
    for prefix in (keys.versions_prefix(model), keys.anchors_prefix(model)):
        for info in catalog.list_keys(prefix):
            data = catalog.read_bytes(info.key)
            record = _v1_record(data)
            if record is None:
                continue
            legacy_key = _legacy_key(info.key, model)
            catalog.write_bytes(legacy_key, data, create_only=False)
            catalog.delete([info.key])
            moved[legacy_key] = record
    return moved


def _v1_record(data: bytes) -> Any:
    """The parsed record if ``data`` is a v1 version or anchor record, else None."""
    try:
        document = json.loads(data)
    except ValueError:
        return None
    schema = document.get("schema") if isinstance(document, dict) else None
    return document if schema in (V1_VERSION_SCHEMA, V1_ANCHOR_SCHEMA) else None


def _read_legacy(catalog: Catalog, model: str, parsed: dict[str, Any]) -> dict[str, _V1Version]:
    """The v1 graph from the set-aside records (those in ``parsed`` not read again), every
    embedded manifest checked."""
    versions: dict[str, _V1Version] = {}
    legacy = f"{keys.model_prefix(model)}{LEGACY}/"
    for info in catalog.list_keys(legacy):
        with _malformed(info.key):
            record = parsed.get(info.key) or json.loads(catalog.read_bytes(info.key))
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
    catalog: Catalog, model: str, versions: dict[str, _V1Version], work: Path, lease: Lease
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
            _materialize(catalog, model, manifest, parent_dir, out, lease)
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


def _copy_chunks(
    catalog: Catalog, model: str, digests: list[str], nbytes: int, out: BinaryIO
) -> str:
    """Write the ``nbytes`` v1 carried as zstd chunks of 64 MiB (the last one shorter) to
    ``out``, one chunk in memory at a time; returns the xxh3-128 of what was written. The chunk
    count is checked against ``nbytes`` before anything is fetched."""
    if len(digests) != -(-nbytes // V1_CHUNK_BYTES):
        raise InvalidManifestError(
            f"v1 data of {nbytes} bytes must come in {-(-nbytes // V1_CHUNK_BYTES)} chunk(s) of "
            f"{V1_CHUNK_BYTES >> 20} MiB, its manifest lists {len(digests)}"
        )
    hasher = xxhash.xxh3_128()
    decompressor = zstandard.ZstdDecompressor()
    for index, digest in enumerate(digests):
        expected = min(V1_CHUNK_BYTES, nbytes - index * V1_CHUNK_BYTES)
        try:
            chunk = decompressor.decompress(
                _object(catalog, model, digest), max_output_size=expected
            )
        except zstandard.ZstdError as exc:
            raise InvalidManifestError(f"v1 chunk {digest} does not decompress: {exc}") from exc
        if len(chunk) != expected:
            raise InvalidManifestError(
                f"v1 chunk {digest} holds {len(chunk)} bytes, its place holds {expected}"
            )
        hasher.update(chunk)
        out.write(chunk)
        del chunk
    return hasher.hexdigest()


def _materialize(
    catalog: Catalog,
    model: str,
    manifest: dict[str, Any],
    parent: Path | None,
    out: Path,
    lease: Lease,
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
                lease.renew(catalog)
                _write_tensor(catalog, model, entries[name], source, f)
    for aux in layout["aux_files"]:
        with child_path(out, check_file_name(aux["name"])).open("wb") as f:
            checksum = _copy_chunks(catalog, model, aux["chunks"], int(aux["size"]), f)
        if checksum != aux["checksum"]:
            raise InvalidManifestError(f"v1 file {aux['name']} does not match its checksum")
    open_checkpoint(out)  # a well-formed checkpoint, or a clear error


def _write_tensor(
    catalog: Catalog, model: str, entry: dict[str, Any], source: Checkpoint | None, out: BinaryIO
) -> None:
    """Append the target of ``entry`` to ``out``, checked against its v1 checksum."""
    name, kind, target = entry["name"], entry["kind"], entry["target"]
    nbytes = itemsize(target["dtype"]) * math.prod(int(d) for d in target["shape"])
    if kind == "carried":
        checksum = _copy_chunks(catalog, model, entry["target_chunks"], nbytes, out)
    else:
        if source is None:
            raise InvalidManifestError(f"v1 anchor keeps tensor {name!r} as a change, not whole")
        ref = source.tensors[name]
        if ref.end - ref.begin != nbytes:
            raise InvalidManifestError(
                f"v1 delta of tensor {name!r} makes {nbytes} bytes from {ref.end - ref.begin}"
            )
        base = _TensorFile(ref.path, ref.begin, np.dtype(bits_view(ref.dtype)), nbytes)
        try:
            checksum = _patched_copy(catalog, model, entry, base, out)
        except CodecError as exc:
            raise InvalidManifestError(f"v1 delta of tensor {name!r}: {exc}") from exc
    if checksum != target["checksum"]:
        raise InvalidManifestError(
            f"tensor {name!r} rebuilt from the v1 delta does not match its v1 checksum"
        )


@dataclass(frozen=True)
class _TensorFile:
    """A base tensor's bytes in its checkpoint file, read a window at a time."""

    path: Path
    begin: int
    dtype: np.dtype[Any]
    nbytes: int

    @property
    def total(self) -> int:
        return self.nbytes // self.dtype.itemsize

    def windows(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first element, its values) of consecutive windows (one writable buffer, reused)."""
        step = max(1, _WINDOW_BYTES // self.dtype.itemsize)
        buffer = np.empty(min(step, self.total), self.dtype)
        with self.path.open("rb") as f:
            f.seek(self.begin)
            for first in range(0, self.total, step):
                window = buffer[: min(step, self.total - first)]
                if f.readinto(byte_view(window)) != window.nbytes:
                    raise InvalidManifestError(f"{self.path} ends inside a tensor")
                yield first, window

    def read(self, first: int, count: int) -> np.ndarray:
        with self.path.open("rb") as f:
            f.seek(self.begin + first * self.dtype.itemsize)
            values = np.fromfile(f, self.dtype, count)
        if values.shape[0] != count:
            raise InvalidManifestError(f"{self.path} ends inside a tensor")
        return values


def _patched_copy(
    catalog: Catalog, model: str, entry: dict[str, Any], base: _TensorFile, out: BinaryIO
) -> str:
    """Write ``base`` with the v1 change of ``entry`` applied, a window at a time (memory: a
    window and the changed elements, never the tensor); returns the xxh3-128 written."""
    hasher = xxhash.xxh3_128()
    kind = TensorKind(entry["kind"])
    if kind is TensorKind.UNCHANGED:
        for _, window in base.windows():
            _emit(window, hasher, out)
        return hasher.hexdigest()
    encoded = EncodedTensor(
        kind,
        _object(catalog, model, entry["delta_object"]),
        entry["changed_elements"],
        entry["total_elements"],
    )
    if kind is TensorKind.DENSE:
        expected = 0
        for first, xor in decode_dense(encoded, base.dtype):
            if first != expected:
                raise CodecError(f"a dense chunk starts at {first}, not {expected}")
            values = base.read(first, xor.shape[0])
            values ^= xor
            _emit(values, hasher, out)
            expected = first + xor.shape[0]
        if expected != base.total:
            raise CodecError(f"the dense chunks cover {expected} of {base.total} elements")
        return hasher.hexdigest()
    changes = decode_changes(encoded, base.dtype)
    positions = gaps_to_positions(changes.gaps, changes.total)
    values = np.empty(positions.shape, base.dtype)
    for first, window in base.windows():  # gather the base's values at the changes
        lo, hi = np.searchsorted(positions, (first, first + window.shape[0]))
        values[lo:hi] = window[positions[lo:hi] - first]
    changes.resolve(values, forward=True)
    for first, window in base.windows():  # then write the target, window by window
        lo, hi = np.searchsorted(positions, (first, first + window.shape[0]))
        window[positions[lo:hi] - first] = values[lo:hi]
        _emit(window, hasher, out)
    return hasher.hexdigest()


def _emit(values: np.ndarray, hasher: xxhash.xxh3_128, out: BinaryIO) -> None:
    view = byte_view(values)
    hasher.update(view)
    out.write(view)
