"""The manifest of a delta directory (``manifest.json``, schema ``deltaroll.delta/v2``).

It names every tensor's before/after dtype, shape and BLAKE3 digest, how its change is encoded,
the digest of its change set (``changes_digest``: positions, base and target values of the
changed elements, which lets an in-place apply check only what it touches) and which objects
hold the payload; both sides' layouts (which file holds which tensor, the exact
safetensors header of each file, the auxiliary files) so applying forward reproduces the target
and applying in reverse reproduces the base; and every object the delta needs.

Integrity: the file is written in one canonical form and carries ``manifest_digest``, a SHA-256
over the canonical JSON of everything else. A reader refuses a file that is not byte-identical to
the canonical form of what it parsed, or whose digest does not match, so any one-byte edit is
caught before the manifest is trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from itertools import accumulate
from pathlib import Path
from typing import Annotated, Any, Final, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from deltaroll.checkpoint.dtypes import ITEMSIZE
from deltaroll.checkpoint.errors import CorruptDeltaError, UnsupportedFormatError
from deltaroll.checkpoint.names import check_file_name
from deltaroll.checkpoint.objects import check_digest

SCHEMA: Final = "deltaroll.delta/v2"
#: Formats this Deltaroll reads; v1 (xxh3 checksums, no change-set digests, aux files outside the
#: version id) cannot give an apply the guarantees v2 does and is refused with what to do.
OLDER_SCHEMAS: Final = ("deltaroll.delta/v1",)
MANIFEST_NAME = "manifest.json"
#: Objects of a version are packs of payload blobs of at most this many bytes.
PACK_BYTES: Final = 64 << 20
#: A bound on a manifest's object list (a 64 TiB delta), checked before anything is fetched.
MAX_OBJECTS: Final = 1 << 20
_DIGEST_HEX = re.compile(r"^[0-9a-f]{64}$")


def _blake3_hex(value: str) -> str:
    if not _DIGEST_HEX.match(value):
        raise ValueError("a digest is 64 lowercase hex characters (BLAKE3-256)")
    return value


TensorKindName = Literal["unchanged", "sparse", "dense", "carried"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BlobRef(NamedTuple):
    """Bytes of the delta's payload: ``length`` bytes from byte ``offset`` of object number
    ``object`` (in :attr:`DeltaManifest.objects`), running on into the next objects if longer.

    Payloads are packed into objects of at most :data:`PACK_BYTES`, so a version is a few large
    objects (few requests per pod) rather than one per tensor; in JSON a blob is three numbers.
    """

    object: int
    offset: int
    length: int


class TensorSide(_Model):
    """A tensor as it is on one side of the delta."""

    dtype: str = Field(description="safetensors dtype name, e.g. BF16")
    shape: list[Annotated[int, Field(ge=0)]] = Field(description="tensor shape")
    digest: str = Field(description="BLAKE3-256 of the raw bytes, 64 hex characters")

    @field_validator("digest")
    @classmethod
    def _digest(cls, value: str) -> str:
        return _blake3_hex(value)

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        if value not in ITEMSIZE:
            raise ValueError(f"unknown dtype {value!r}")
        return value

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * ITEMSIZE[self.dtype]


class TensorEntry(_Model):
    """How one tensor changes. ``carried`` tensors keep whole data for each side that has it."""

    name: str
    base: TensorSide | None = Field(description="the tensor in the base; null if it appears")
    target: TensorSide | None = Field(description="the tensor in the target; null if removed")
    kind: TensorKindName
    payload: BlobRef | None = Field(default=None, description="codec payload (sparse/dense)")
    base_chunks: list[BlobRef] = Field(
        default_factory=list, description="whole base data, zstd chunks (carried)"
    )
    target_chunks: list[BlobRef] = Field(default_factory=list, description="whole target data")
    changes_digest: str | None = Field(
        default=None,
        description="BLAKE3 of the change set (positions, base and target values) of a sparse "
        "or dense tensor; null for unchanged and carried tensors",
    )
    changed_elements: int = Field(ge=0)
    total_elements: int = Field(ge=0)

    @field_validator("changes_digest")
    @classmethod
    def _changes_digest(cls, value: str | None) -> str | None:
        return None if value is None else _blake3_hex(value)

    @model_validator(mode="after")
    def _consistent(self) -> TensorEntry:
        if self.base is None and self.target is None:
            raise ValueError(f"tensor {self.name!r} has neither a base nor a target")
        same_shape = (
            self.base is not None
            and self.target is not None
            and (self.base.dtype, self.base.shape) == (self.target.dtype, self.target.shape)
        )
        if self.kind == "carried":
            if same_shape or self.payload is not None:
                raise ValueError(
                    f"tensor {self.name!r}: carried only when shape/dtype/presence differ"
                )
        else:
            if not same_shape or self.base_chunks or self.target_chunks:
                raise ValueError(
                    f"tensor {self.name!r}: {self.kind} needs the same dtype and shape"
                )
            if (self.kind == "unchanged") != (self.payload is None):
                raise ValueError(f"tensor {self.name!r}: only unchanged tensors have no payload")
        if self.changed_elements > self.total_elements:
            raise ValueError(f"tensor {self.name!r}: more changed elements than elements")
        if (
            self.kind != "carried"
            and self.base is not None
            and self.total_elements != (self.base.numel)
        ):
            raise ValueError(f"tensor {self.name!r}: total_elements is not its shape's")
        if (self.kind in ("sparse", "dense")) != (self.changes_digest is not None):
            raise ValueError(f"tensor {self.name!r}: exactly sparse and dense have changes_digest")
        if self.base is None and self.base_chunks or self.target is None and self.target_chunks:
            raise ValueError(f"tensor {self.name!r}: chunks for a side that lacks the tensor")
        if (
            self.kind == "unchanged"
            and self.base is not None
            and self.target is not None
            and self.base.digest != self.target.digest
        ):
            raise ValueError(f"tensor {self.name!r}: unchanged with two different digests")
        return self

    def blobs(self) -> Iterator[BlobRef]:
        if self.payload is not None:
            yield self.payload
        yield from self.base_chunks
        yield from self.target_chunks

    def side(self, which: Literal["base", "target"]) -> TensorSide | None:
        return self.base if which == "base" else self.target

    def shifted(self, by: int) -> TensorEntry:
        """This entry with every blob's object index moved by ``by`` (when its delta's objects
        are listed after others', as the shares of a sharded diff are)."""

        def move(blob: BlobRef) -> BlobRef:
            return blob._replace(object=blob.object + by)

        return self.model_copy(
            update={
                "payload": move(self.payload) if self.payload is not None else None,
                "base_chunks": [move(b) for b in self.base_chunks],
                "target_chunks": [move(b) for b in self.target_chunks],
            }
        )

    def chunks(self, which: Literal["base", "target"]) -> list[BlobRef]:
        return self.base_chunks if which == "base" else self.target_chunks


class WeightFileLayout(_Model):
    """One safetensors file: its exact header (a blob) and its tensors in data order."""

    name: str
    header: BlobRef
    header_digest: str = Field(description="BLAKE3-256 of the header bytes")
    tensors: list[str]
    metadata: dict[str, str] | None = None

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        return check_file_name(value)

    @field_validator("header_digest")
    @classmethod
    def _digest(cls, value: str) -> str:
        return _blake3_hex(value)

    @property
    def header_size(self) -> int:
        return self.header.length


class AuxFile(_Model):
    """A non-tensor file of a checkpoint directory (config, tokenizer, index)."""

    name: str
    size: int = Field(ge=0)
    digest: str = Field(description="BLAKE3-256 of the file's bytes (part of the version id)")
    chunks: list[BlobRef] = Field(description="the file's bytes, zstd chunks")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        return check_file_name(value)

    @field_validator("digest")
    @classmethod
    def _digest(cls, value: str) -> str:
        return _blake3_hex(value)


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
        tensors = [t for f in self.files for t in f.tensors]
        if len(tensors) != len(set(tensors)):
            raise ValueError("a tensor appears twice in a layout")
        return self

    def blobs(self) -> Iterator[BlobRef]:
        for f in self.files:
            yield f.header
        for a in self.aux_files:
            yield from a.chunks

    def tensor_names(self) -> set[str]:
        return {t for f in self.files for t in f.tensors}


class ObjectRef(_Model):
    digest: str
    size: int = Field(ge=0)

    @field_validator("digest")
    @classmethod
    def _digest(cls, value: str) -> str:
        return check_digest(value)


class DeltaManifest(_Model):
    """Everything needed to turn the base into the target, or back."""

    schema_: Literal["deltaroll.delta/v2"] = Field(default=SCHEMA, alias="schema")
    base_version: str | None = Field(description="null for an anchor (a delta from nothing)")
    target_version: str
    base_layout: CheckpointLayout | None
    target_layout: CheckpointLayout
    tensors: list[TensorEntry]
    objects: list[ObjectRef]
    level: int = Field(description="zstd level the delta was written with")
    manifest_digest: str = ""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _consistent(self) -> DeltaManifest:
        if (self.base_version is None) != (self.base_layout is None):
            raise ValueError("an anchor has neither a base version nor a base layout")
        names = [t.name for t in self.tensors]
        if len(names) != len(set(names)):
            raise ValueError("a tensor appears twice in the manifest")
        if self.base_layout is not None and self.base_layout.tensor_names() != {
            t.name for t in self.tensors if t.base is not None
        }:
            raise ValueError("the base layout does not list exactly the base tensors")
        if self.target_layout.tensor_names() != {
            t.name for t in self.tensors if t.target is not None
        }:
            raise ValueError("the target layout does not list exactly the target tensors")
        if len({o.digest for o in self.objects}) != len(self.objects):
            raise ValueError("an object is listed twice")
        if len(self.objects) > MAX_OBJECTS:
            raise ValueError(f"more than {MAX_OBJECTS} objects")
        # Every blob must lie inside the objects, so no size read from here is ever trusted for
        # more bytes than the payload holds.
        sizes = [o.size for o in self.objects]
        starts = [0, *accumulate(sizes)]  # where each object starts in the payload; then its end
        for blob in self.blobs():
            index, offset, length = blob
            if (
                min(blob) < 0
                or index >= len(sizes)
                or offset > sizes[index]
                or starts[index] + offset + length > starts[-1]
            ):
                raise ValueError(f"blob {list(blob)} lies outside the delta's objects")
        return self

    def blobs(self) -> Iterator[BlobRef]:
        """Every blob this delta refers to."""
        yield from self.target_layout.blobs()
        if self.base_layout is not None:
            yield from self.base_layout.blobs()
        for entry in self.tensors:
            yield from entry.blobs()

    def layout(self, which: Literal["base", "target"]) -> CheckpointLayout | None:
        return self.base_layout if which == "base" else self.target_layout

    def version(self, which: Literal["base", "target"]) -> str | None:
        return self.base_version if which == "base" else self.target_version

    def delta_bytes(self) -> int:
        return sum(o.size for o in self.objects)


def canonical_json(document: Any) -> bytes:
    """One line, sorted keys, no spaces: the bytes a digest is taken over (and the smallest)."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return (text + "\n").encode()


def _content_digest(document: dict[str, Any]) -> str:
    body = {k: v for k, v in document.items() if k != "manifest_digest"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def write_manifest(delta_dir: Path, manifest: DeltaManifest) -> int:
    """Write ``manifest.json`` (canonical form, with its digest); returns its size in bytes."""
    document = manifest.model_dump(mode="json", by_alias=True)
    document["manifest_digest"] = _content_digest(document)
    data = canonical_json(document)
    path = delta_dir / MANIFEST_NAME
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return len(data)


def read_delta_manifest(delta_dir: Path) -> DeltaManifest:
    """Read, integrity-check and validate ``DELTA_DIR/manifest.json``."""
    path = Path(delta_dir) / MANIFEST_NAME
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorruptDeltaError(
            f"cannot read {path} ({exc.strerror}): is {delta_dir} a delta directory?"
        ) from exc
    return parse_delta_manifest(data, str(path))


def parse_delta_manifest(data: bytes, where: str) -> DeltaManifest:
    """Integrity-check and validate a delta manifest's bytes (``where`` names it in errors):
    a caller can refuse a delta of an unknown format before it downloads or applies anything."""
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise _altered(where, "it is not JSON") from exc
    schema = document.get("schema") if isinstance(document, dict) else None
    if schema in OLDER_SCHEMAS:
        raise UnsupportedFormatError(
            f"{where} is a {schema} delta, an older format than this Deltaroll applies "
            f"({SCHEMA}: BLAKE3 digests and change-set digests); recompute it with "
            "`deltaroll diff BASE TARGET -o DELTA` (a store: push its versions again)"
        )
    if schema != SCHEMA and isinstance(schema, str) and schema.startswith("deltaroll.delta/"):
        raise UnsupportedFormatError(
            f"{where} is a {schema} delta, a format this Deltaroll does not know (it reads "
            f"{SCHEMA}); upgrade Deltaroll on this machine, nothing was changed"
        )
    if schema != SCHEMA:
        raise _altered(where, f"its schema is not {SCHEMA}")
    if canonical_json(document) != data:
        raise _altered(where, "it is not in canonical form")
    if document.get("manifest_digest") != _content_digest(document):
        raise _altered(where, "its content does not match manifest_digest")
    try:
        return DeltaManifest.model_validate(document)
    except ValidationError as exc:
        raise _altered(where, f"it is invalid: {exc.errors()[0]['msg']}") from exc


def _altered(where: str, why: str) -> CorruptDeltaError:
    return CorruptDeltaError(f"{where} is corrupt ({why}); fetch or recompute the delta")
