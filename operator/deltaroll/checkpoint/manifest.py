"""The manifest of a delta directory (``manifest.json.zst``, schema ``deltaroll.delta/v2``).

It names every tensor's before/after dtype, shape and BLAKE3 digest, how its change is encoded,
the digest of its change set (``changes_digest``: positions, base and target values of the
changed elements, which lets an in-place apply check only what it touches) and which objects
hold the payload; both sides' layouts (which file holds which tensor, the exact
safetensors header of each file, the auxiliary files) so applying forward reproduces the target
and applying in reverse reproduces the base; and every object the delta needs.

Form: one line of JSON with the tensors as columns (:mod:`deltaroll.checkpoint.manifest_tensors`),
in one zstd frame that carries its size and a checksum. A manifest is identified by the BLAKE3 of
those exact bytes (:attr:`DeltaManifest.manifest_digest`): that is what a store records and a
signature covers, so no canonical re-serialization is needed to check it. Before anything is
decompressed the frame must declare a size within :data:`MAX_MANIFEST_BYTES`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from functools import cached_property
from itertools import accumulate, chain
from pathlib import Path
from typing import Any, Final, Literal

import blake3
import numpy as np
import zstandard
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from deltaroll.api.digests import Blake3Hex
from deltaroll.checkpoint.errors import CorruptDeltaError, UnsupportedFormatError
from deltaroll.checkpoint.manifest_tensors import (
    BlobRef,
    BlobTriple,
    Count,
    Side,
    TensorColumns,
    TensorTable,
)
from deltaroll.checkpoint.names import check_file_name
from deltaroll.checkpoint.objects import check_digest
from deltaroll.collector import collector_paused

SCHEMA: Final = "deltaroll.delta/v2"
#: Formats this Deltaroll reads; v1 (xxh3 checksums, no change-set digests, aux files outside the
#: version id) cannot give an apply the guarantees v2 does and is refused with what to do.
OLDER_SCHEMAS: Final = ("deltaroll.delta/v1",)
MANIFEST_NAME: Final = "manifest.json.zst"
#: Where a delta of an older format kept its manifest (plain JSON).
OLDER_MANIFEST_NAME: Final = "manifest.json"
#: Objects of a version are packs of payload blobs of at most this many bytes.
PACK_BYTES: Final = 64 << 20
#: A bound on a manifest's object list (a 64 TiB delta), checked before anything is fetched.
MAX_OBJECTS: Final = 1 << 20
#: A bound on a manifest's JSON (a million tensors take ~600 MB), checked before decompressing.
MAX_MANIFEST_BYTES: Final = 1 << 30
#: zstd level of the manifest: its digests are incompressible, the rest (names, shapes) is not.
MANIFEST_ZSTD_LEVEL: Final = 9
_OLDER_FORMAT_HELP: Final = (
    "recompute it with `deltaroll diff BASE TARGET -o DELTA` (a store: `deltaroll upgrade-store`)"
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WeightFileLayout(_Model):
    """One safetensors file: its exact header (a blob) and its tensors in data order, as rows
    of the manifest's tensor columns (each name is written once, in the columns; see
    :meth:`DeltaManifest.names_in`)."""

    name: str
    header: BlobRef
    header_digest: Blake3Hex = Field(description="BLAKE3-256 of the header bytes")
    rows: list[Count] = Field(description="the file's tensors, as rows of the tensor columns")
    metadata: dict[str, str] | None = None

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        return check_file_name(value)

    @property
    def header_size(self) -> int:
        return self.header.length


class AuxFile(_Model):
    """A non-tensor file of a checkpoint directory (config, tokenizer, index)."""

    name: str
    size: int = Field(ge=0)
    digest: Blake3Hex = Field(description="BLAKE3-256 of the file's bytes (part of the version id)")
    chunks: list[BlobRef] = Field(description="the file's bytes, zstd chunks")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        return check_file_name(value)


class CheckpointLayout(_Model):
    """How one side's tensors are laid out in files, plus its auxiliary files."""

    kind: Literal["file", "directory"]
    files: list[WeightFileLayout]
    aux_files: list[AuxFile] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> CheckpointLayout:
        names = [f.name for f in self.files] + [a.name for a in self.aux_files]
        if len(names) != len(set(names)):
            raise ValueError("a file name appears twice in a layout")
        if self.kind == "file" and (len(self.files) != 1 or self.aux_files):
            raise ValueError("a single-file layout has exactly one weight file and no aux files")
        return self

    def blobs(self) -> Iterator[BlobRef]:
        for f in self.files:
            yield f.header
        for a in self.aux_files:
            yield from a.chunks

    def rows(self) -> np.ndarray:
        """The rows of every tensor the layout's files hold, file after file."""
        return np.fromiter(chain.from_iterable(f.rows for f in self.files), dtype=np.int64)


class ObjectRef(_Model):
    digest: str
    size: int = Field(ge=0)

    @field_validator("digest")
    @classmethod
    def _digest(cls, value: str) -> str:
        return check_digest(value)


class DeltaManifest(_Model):
    """Everything needed to turn the base into the target, or back."""

    schema_: Literal["deltaroll.delta/v2"] = Field(alias="schema")
    base_version: str | None = Field(description="null for an anchor (a delta from nothing)")
    target_version: str
    base_layout: CheckpointLayout | None
    target_layout: CheckpointLayout
    columns: TensorColumns = Field(alias="tensors", description="every tensor, as columns")
    objects: list[ObjectRef]
    level: int = Field(description="zstd level the delta was written with")
    _digest: str | None = PrivateAttr(default=None)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @cached_property
    def tensors(self) -> TensorTable:
        """The tensors, read as :class:`~deltaroll.checkpoint.manifest_tensors.TensorEntry`."""
        return TensorTable(self.columns)

    @model_validator(mode="after")
    def _consistent(self) -> DeltaManifest:
        if (self.base_version is None) != (self.base_layout is None):
            raise ValueError("an anchor has neither a base version nor a base layout")
        for side in ("base", "target"):
            layout = self.layout(side)
            present = np.flatnonzero(self.columns.side(side).present)
            if layout is not None and not np.array_equal(np.sort(layout.rows()), present):
                raise ValueError(f"the {side} layout does not list exactly the {side} tensors")
        if len({o.digest for o in self.objects}) != len(self.objects):
            raise ValueError("an object is listed twice")
        if len(self.objects) > MAX_OBJECTS:
            raise ValueError(f"more than {MAX_OBJECTS} objects")
        outside = _first_blob_outside(list(self.blobs()), [o.size for o in self.objects])
        if outside is not None:
            raise ValueError(f"blob {list(outside)} lies outside the delta's objects")
        return self

    def blobs(self) -> Iterator[BlobTriple]:
        """Every blob this delta refers to, as (object, offset, length)."""
        yield from self.target_layout.blobs()
        if self.base_layout is not None:
            yield from self.base_layout.blobs()
        yield from self.tensors.blobs()

    def names_in(self, file: WeightFileLayout) -> list[str]:
        """The names of ``file``'s tensors, in its data order."""
        names = self.columns.name
        return [names[row] for row in file.rows]

    def layout(self, which: Side) -> CheckpointLayout | None:
        return self.base_layout if which == "base" else self.target_layout

    def version(self, which: Side) -> str | None:
        return self.base_version if which == "base" else self.target_version

    def delta_bytes(self) -> int:
        return sum(o.size for o in self.objects)

    def checkpoint_bytes(self, which: Side) -> int:
        """Bytes of one side's checkpoint files: headers, tensor data and auxiliary files."""
        layout = self.layout(which)
        if layout is None:
            return 0
        sizes = [0 if s is None else s.nbytes for s in (e.side(which) for e in self.tensors)]
        weights = sum(8 + f.header_size + sum(sizes[t] for t in f.rows) for f in layout.files)
        return weights + sum(aux.size for aux in layout.aux_files)

    @property
    def manifest_digest(self) -> str:
        """BLAKE3 of the manifest file's exact bytes (of its encoding, for one built here):
        the identity a journal, a store record and a signature refer to."""
        if self._digest is None:
            self._digest = blake3.blake3(encode_manifest(self)).hexdigest()
        return self._digest


def _first_blob_outside(blobs: list[BlobTriple], sizes: list[int]) -> BlobTriple | None:
    """The first blob that does not lie inside the objects (so no size read from a manifest is
    ever trusted for more bytes than the payload holds); whole arrays, not a loop."""
    if not blobs:
        return None
    flat = np.fromiter(chain.from_iterable(blobs), dtype=np.int64, count=3 * len(blobs))
    table = flat.reshape(-1, 3)
    index, offset, length = table.T
    starts = np.array([0, *accumulate(sizes)], dtype=np.int64)
    valid = index < len(sizes)
    safe = np.where(valid, index, 0)
    sizes_array = np.append(np.array(sizes, dtype=np.int64), 0)
    bad = (
        ~valid
        | (table.min(axis=1) < 0)
        | (offset > sizes_array[safe])
        | (starts[safe] + offset + length > starts[-1])
    )
    where = np.flatnonzero(bad)
    return blobs[int(where[0])] if where.size else None


def encode_manifest(manifest: DeltaManifest) -> bytes:
    """The manifest file's bytes: its JSON (one line, keys sorted) in one zstd frame."""
    return encode_document(manifest.model_dump(mode="json", by_alias=True))


def encode_document(document: dict[str, Any]) -> bytes:
    """A manifest document (as :func:`decode_document` returns it) in the manifest file's form."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    compressor = zstandard.ZstdCompressor(
        level=MANIFEST_ZSTD_LEVEL, write_checksum=True, write_content_size=True
    )
    return compressor.compress(text.encode() + b"\n")


def write_manifest(delta_dir: Path, manifest: DeltaManifest) -> int:
    """Write the manifest file (durably); returns its size in bytes."""
    data = encode_manifest(manifest)
    path = delta_dir / MANIFEST_NAME
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return len(data)


def read_delta_manifest(delta_dir: Path) -> DeltaManifest:
    """Read, integrity-check and validate a delta directory's manifest."""
    path = Path(delta_dir) / MANIFEST_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if (Path(delta_dir) / OLDER_MANIFEST_NAME).exists():
            raise UnsupportedFormatError(
                f"{delta_dir} is a delta of an older format than this Deltaroll applies "
                f"({SCHEMA}: BLAKE3 digests, change-set digests, a compact manifest); "
                + _OLDER_FORMAT_HELP
            ) from None
        raise CorruptDeltaError(
            f"cannot read {path} (no such file): is {delta_dir} a delta directory?"
        ) from None
    except OSError as exc:
        raise CorruptDeltaError(
            f"cannot read {path} ({exc.strerror}): is {delta_dir} a delta directory?"
        ) from exc
    return parse_delta_manifest(data, str(path))


def _decompress(data: bytes, where: str) -> bytes:
    """The JSON text in a manifest file's bytes; its frame must declare a bounded size and carry
    a checksum, so neither a bomb nor a damaged file gets further."""
    try:
        frame = zstandard.get_frame_parameters(data)
    except zstandard.ZstdError as exc:
        raise _altered(where, "it is not a zstd frame") from exc
    if not frame.has_checksum or not 0 < frame.content_size <= MAX_MANIFEST_BYTES:
        raise _altered(
            where, f"its frame must declare a checksum and a size up to {MAX_MANIFEST_BYTES}"
        )
    try:
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=frame.content_size)
    except zstandard.ZstdError as exc:
        raise _altered(where, f"it does not decompress: {exc}") from exc


def decode_document(data: bytes, where: str) -> dict[str, Any]:
    """The JSON document of a manifest file, unvalidated (for tools that rewrite one)."""
    try:
        document = json.loads(_decompress(data, where))
    except ValueError as exc:
        raise _altered(where, f"it is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise _altered(where, "it is not a JSON object")
    return document


def parse_delta_manifest(data: bytes, where: str) -> DeltaManifest:
    """Integrity-check and validate a delta manifest's bytes (``where`` names it in errors):
    a caller can refuse a delta of an unknown format before it downloads or applies anything.

    pydantic parses and validates the JSON in one pass (its compiled core), with the cyclic
    collector paused: the columns of 100,000 tensors are a million small objects and no cycle,
    and the collector walking them as they grow took 40 % of the time."""
    text = _decompress(data, where)
    try:
        with collector_paused():
            manifest = DeltaManifest.model_validate_json(text)
    except ValidationError as exc:
        errors = exc.errors()
        schema = next((e.get("input") for e in errors if e["loc"] == ("schema",)), SCHEMA)
        _refuse_other_format(schema, where)
        error = errors[0]
        at = ".".join(str(part) for part in error["loc"])
        raise _altered(where, f"it is invalid: {at}: {error['msg']}") from exc
    manifest._digest = blake3.blake3(data).hexdigest()
    return manifest


def _refuse_other_format(schema: object, where: str) -> None:
    if schema in OLDER_SCHEMAS:
        raise UnsupportedFormatError(
            f"{where} is a {schema} delta, an older format than this Deltaroll applies "
            f"({SCHEMA}: BLAKE3 digests and change-set digests); " + _OLDER_FORMAT_HELP
        )
    if isinstance(schema, str) and schema.startswith("deltaroll.delta/") and schema != SCHEMA:
        raise UnsupportedFormatError(
            f"{where} is a {schema} delta, a format this Deltaroll does not know (it reads "
            f"{SCHEMA}); upgrade Deltaroll on this machine, nothing was changed"
        )


def _altered(where: str, why: str) -> CorruptDeltaError:
    return CorruptDeltaError(f"{where} is corrupt ({why}); fetch or recompute the delta")
