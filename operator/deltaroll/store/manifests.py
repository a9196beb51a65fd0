"""The records a store keeps about a model, as pydantic models with their JSON (de)serialization.

- :class:`VersionManifest` (``versions/<version>.json``): a published version, its parent and
  the delta from the parent. Written last, conditionally: its existence *is* the publication.
- :class:`AnchorManifest` (``anchors/<version>.json``): a full snapshot, i.e. a delta from
  nothing, so a puller with no local weights (or far away in the graph) can start there.
- :class:`NameRecord` (``names/<name>.json``): a human name (``step-120``) of a version id.
- :class:`SignatureRecord` (``signatures/<version>/<key id>.json``): one publisher key's
  signature of a :class:`VersionStatement` (see :mod:`deltaroll.store.signatures`).

Both manifests embed a :class:`DeltaRecord`: which object holds the checkpoint layer's delta
manifest (an object like the payload packs, so listing a model's versions reads a few hundred
bytes per version, not each delta's manifest), the payload objects with the sizes planning and
transfers need, and the few numbers the operator reports about a version. A puller checks the
manifest object against the record before applying it (:func:`deltaroll.store.pull.read_delta`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from deltaroll.store.errors import InvalidManifestError
from deltaroll.store.names import validate_digest, validate_name


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ObjectRef(_Record):
    """One content-addressed object: its sha256 and its size in bytes."""

    digest: str
    size: int = Field(ge=0)

    @field_validator("digest")
    @classmethod
    def _digest(cls, value: str) -> str:
        return validate_digest(value)


class DeltaRecord(_Record):
    """A checkpoint delta as the store keeps it: its manifest object and its payload objects."""

    base_version: str | None = Field(description="version the delta applies to; null: anchor")
    target_version: str
    manifest: ObjectRef = Field(description="the delta's manifest file, an object of the store")
    payload: list[ObjectRef] = Field(description="the objects the manifest lists, in its order")
    changed_elements: int = Field(ge=0, description="elements the target changes or adds")
    total_elements: int = Field(ge=0, description="elements of the target")
    full_bytes: int = Field(ge=0, description="bytes of the target checkpoint's files")

    @field_validator("base_version", "target_version")
    @classmethod
    def _versions(cls, value: str | None) -> str | None:
        return None if value is None else validate_name(value, what="version")

    @property
    def objects(self) -> list[ObjectRef]:
        """Everything a puller downloads for this delta: the manifest, then the payload."""
        return [self.manifest, *self.payload]

    @property
    def total_bytes(self) -> int:
        return sum(ref.size for ref in self.objects)


class VersionManifest(_Record):
    schema_: Literal["deltaroll.store.version/v2"] = Field(
        default="deltaroll.store.version/v2", alias="schema"
    )
    model: str
    version: str
    parent: str | None = Field(description="the version this one was made from; null: a root")
    delta: DeltaRecord | None = Field(description="parent -> version; null for a root")
    created_at: datetime

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("model", "version", "parent")
    @classmethod
    def _names(cls, value: str | None) -> str | None:
        return None if value is None else validate_name(value, what="version")

    @model_validator(mode="after")
    def _consistent(self) -> VersionManifest:
        if (self.parent is None) != (self.delta is None):
            raise ValueError("a version has a delta exactly when it has a parent")
        if self.delta is not None and (
            self.delta.base_version != self.parent or self.delta.target_version != self.version
        ):
            raise ValueError("the delta does not lead from the parent to the version")
        return self


class AnchorManifest(_Record):
    schema_: Literal["deltaroll.store.anchor/v2"] = Field(
        default="deltaroll.store.anchor/v2", alias="schema"
    )
    model: str
    version: str
    delta: DeltaRecord
    created_at: datetime

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _consistent(self) -> AnchorManifest:
        validate_name(self.version, what="version")
        if self.delta.base_version is not None or self.delta.target_version != self.version:
            raise ValueError("an anchor is a delta from nothing to its version")
        return self


class NameRecord(_Record):
    schema_: Literal["deltaroll.store.name/v1"] = Field(
        default="deltaroll.store.name/v1", alias="schema"
    )
    model: str
    name: str
    version: str
    updated_at: datetime

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("model", "name", "version")
    @classmethod
    def _names(cls, value: str) -> str:
        return validate_name(value, what="name")


class VersionStatement(_Record):
    """What a publisher key vouches for: this content, under this id, for this model in this
    store (and, when the operator signed for a ModelDelta, this namespace), by these names.
    ``digest`` is the whole 256-bit version digest (every tensor's name, dtype, shape and BLAKE3
    digest and every file a pod loads), so no path to the version (an anchor, a chain, a
    squashed delta) needs a signature of its own, and the 128-bit id is never all that is
    trusted. ``store`` is the canonical URI of the store it was signed in, so the same bytes
    planted in another store do not verify there; a signed local delta directory has no store
    and no model. ``names`` maps each name to its sequence number: a verifier refuses a name
    whose sequence is lower than one it accepted before (a name moved back). ``origin`` says who
    asked for the signature (audit only)."""

    schema_: Literal["deltaroll.signed-version/v2"] = Field(
        default="deltaroll.signed-version/v2", alias="schema"
    )
    store: str | None = Field(default=None, max_length=1024)
    namespace: str | None = Field(default=None, pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    model: str | None = None
    version: str
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    names: dict[str, int] = Field(default_factory=dict, max_length=64)
    origin: str | None = Field(default=None, max_length=256)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("model", "version")
    @classmethod
    def _ids(cls, value: str | None) -> str | None:
        return None if value is None else validate_name(value, what="version")

    @field_validator("names")
    @classmethod
    def _names(cls, value: dict[str, int]) -> dict[str, int]:
        for name, sequence in value.items():
            validate_name(name, what="name")
            if not 0 < sequence < 1 << 63:
                raise ValueError(f"the sequence of name {name!r} is out of range")
        return dict(sorted(value.items()))


class SignatureRecord(_Record):
    """A signature as the store keeps it: the exact statement bytes it covers (base64), so a
    verifier never re-serializes what it checks, and the Ed25519 signature (base64)."""

    schema_: Literal["deltaroll.store.signature/v1"] = Field(
        default="deltaroll.store.signature/v1", alias="schema"
    )
    key_id: str = Field(pattern=r"^[0-9a-f]{64}$")
    statement: str = Field(max_length=16384)
    signature: str = Field(max_length=128)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


R = TypeVar("R", bound=_Record)


def now() -> datetime:
    return datetime.now(UTC)


def dump(record: _Record) -> bytes:
    """Compact JSON bytes of a record, fields in declaration order."""
    return record.model_dump_json(by_alias=True, indent=None).encode()


#: Record formats of earlier Deltarolls: their deltas are in a format this one does not apply.
OLDER_RECORD_SCHEMAS = ("deltaroll.store.version/v1", "deltaroll.store.anchor/v1")


def load(cls: type[R], data: bytes, *, uri: str, key: str) -> R:
    """Parse and validate a record; any defect becomes :class:`InvalidManifestError`."""
    try:
        return cls.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(root)"
        if first["loc"] == ("schema",) and first.get("input") in OLDER_RECORD_SCHEMAS:
            raise InvalidManifestError(
                f"{uri}: {key!r} is a {first['input']} record, written by an older Deltaroll "
                "whose deltas this one does not apply; convert the model with `deltaroll "
                "upgrade-store STORE MODEL` (it keeps the old records)"
            ) from exc
        raise InvalidManifestError(
            f"{uri}: {key!r} is not a valid {cls.__name__} ({where}: {first['msg']}); "
            "it was not written by this version of deltaroll or was edited: remove it or "
            "push the version again"
        ) from exc
