"""The tensors of a delta manifest, kept as columns.

A 30B-parameter MoE model has ~100,000 tensors. One JSON object and one validated model per
tensor made its manifest 13 % of the payload and took seconds to parse. Here each field is one
column (one JSON list): pydantic's compiled core validates a column in one pass, the checks
across columns run over whole columns, and the per-tensor :class:`TensorEntry` objects an apply
works with are built on first use, not while parsing.
"""

from __future__ import annotations

import base64
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property
from typing import Annotated, Any, Final, Literal, NamedTuple, get_args, overload

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from deltaroll.checkpoint.dtypes import ITEMSIZE
from deltaroll.collector import collector_paused

TensorKindName = Literal["unchanged", "sparse", "dense", "carried"]
Side = Literal["base", "target"]

#: A safetensors dtype name (the keys of ``ITEMSIZE``; a Literal is a table lookup in pydantic's
#: core, where a pattern ran a regex per tensor and side).
DtypeName = Literal[
    "BOOL", "U8", "I8", "F8_E4M3", "F8_E5M2", "F8_E8M0", "I16", "U16", "F16", "BF16", "I32",
    "U32", "F32", "I64", "U64", "F64",
]  # fmt: skip
if set(get_args(DtypeName)) != set(ITEMSIZE):
    raise ImportError("DtypeName and ITEMSIZE must list the same dtypes")
Count = Annotated[int, Field(ge=0)]
BlobTriple = tuple[Count, Count, Count]
_CHANGED_KINDS: Final = frozenset(("sparse", "dense"))
#: Kinds as small integers for whole-column checks; the changed kinds last.
_KIND_CODES: Final = {"unchanged": 0, "carried": 1, "sparse": 2, "dense": 3}


class BlobRef(NamedTuple):
    """Bytes of the delta's payload: ``length`` bytes from byte ``offset`` of object number
    ``object`` (in the manifest's ``objects``), running on into the next objects if longer.

    Payloads are packed into objects of at most 64 MiB, so a version is a few large objects
    (few requests per pod) rather than one per tensor; in JSON a blob is three numbers.
    """

    object: Count
    offset: Count
    length: Count


class TensorSide(NamedTuple):
    """A tensor as it is on one side of the delta (a tuple: a 100,000-tensor manifest builds
    200,000 of them, three times faster than a frozen dataclass)."""

    dtype: str
    shape: tuple[int, ...]
    digest: str  # BLAKE3-256 of the raw bytes, 64 hex characters

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * ITEMSIZE[self.dtype]


class TensorEntry(NamedTuple):
    """How one tensor changes. ``carried`` tensors keep whole data for each side that has it.

    Built by the diff and by :class:`TensorTable` on first use; checked as a whole when a
    manifest is made of it (:meth:`TensorTable.from_entries`), never one by one. A tuple, like
    :class:`TensorSide`: immutable, and built for 100,000 tensors in a third of the time."""

    name: str
    base: TensorSide | None  # None: the tensor appears
    target: TensorSide | None  # None: the tensor is removed
    kind: TensorKindName
    payload: BlobRef | None = None  # the codec payload of a sparse or dense tensor
    base_chunks: tuple[BlobRef, ...] = ()  # carried: whole base data
    target_chunks: tuple[BlobRef, ...] = ()  # carried: whole target data
    #: BLAKE3 of the change set (positions, base and target values) of a sparse or dense tensor.
    changes_digest: str | None = None
    changed_elements: int = 0
    total_elements: int = 0

    def blobs(self) -> Iterator[BlobRef]:
        if self.payload is not None:
            yield self.payload
        yield from self.base_chunks
        yield from self.target_chunks

    def side(self, which: Side) -> TensorSide | None:
        return self.base if which == "base" else self.target

    def chunks(self, which: Side) -> tuple[BlobRef, ...]:
        return self.base_chunks if which == "base" else self.target_chunks

    def shifted(self, by: int) -> TensorEntry:
        """This entry with every blob's object index moved by ``by`` (when its delta's objects
        are listed after others', as the shares of a sharded diff are)."""

        def move(blob: BlobRef) -> BlobRef:
            return blob._replace(object=blob.object + by)

        return self._replace(
            payload=move(self.payload) if self.payload is not None else None,
            base_chunks=tuple(map(move, self.base_chunks)),
            target_chunks=tuple(map(move, self.target_chunks)),
        )


class _Columns(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SideColumns(_Columns):
    """One side of every tensor; null where the tensor is absent on that side."""

    dtype: list[DtypeName | None]
    # Tuples: pydantic's core builds them three times faster than nested lists.
    shape: list[tuple[Count, ...] | None]
    digests: str = Field(description="the present tensors' BLAKE3-256 digests, packed")
    _packed: bytes = PrivateAttr(default=b"")

    @model_validator(mode="after")
    def _aligned(self) -> SideColumns:
        if len(self.dtype) != len(self.shape):
            raise ValueError("the columns of a side differ in length")
        if self.present != [s is not None for s in self.shape]:
            raise ValueError("a tensor side is partly null")
        self._packed = checked_digests(self.digests, sum(self.present), "digests")
        return self

    @cached_property
    def digest(self) -> list[str | None]:
        """Each tensor's digest as 64 hex characters, None where it is absent (spelled out on
        first use: an apply that only looks at a few tensors does not pay for 100,000)."""
        return spread_digests(self._packed, self.present)

    def raw_digests(self) -> bytes:
        """The present tensors' digests, 32 bytes each, in row order."""
        return self._packed

    @cached_property
    def present(self) -> list[bool]:
        """Per tensor: whether it exists on this side."""
        return [d is not None for d in self.dtype]


class TensorColumns(_Columns):
    """Every tensor of a delta, one list per field, all in the same order."""

    name: list[str]
    kind: list[TensorKindName]
    base: SideColumns
    target: SideColumns
    # Blobs as plain triples here (a NamedTuple per value would cost a Python call each while
    # parsing); entries get :class:`BlobRef` values.
    payload: list[BlobTriple | None]
    base_chunks: list[list[BlobTriple]]
    target_chunks: list[list[BlobTriple]]
    changes_digests: str = Field(description="the changed tensors' change-set digests, packed")
    changed_elements: list[Count]
    total_elements: list[Count]
    _changes_packed: bytes = PrivateAttr(default=b"")

    @cached_property
    def changes_digest(self) -> list[str | None]:
        """Each sparse or dense tensor's ``changes_digest`` (hex), None for the others."""
        changed = [kind in _CHANGED_KINDS for kind in self.kind]
        return spread_digests(self._changes_packed, changed)

    def side(self, which: Side) -> SideColumns:
        return self.base if which == "base" else self.target

    def rows(self) -> Iterator[tuple[Any, ...]]:
        """Each tensor's fields, in :class:`TensorEntry` order, sides flattened: (name, kind,
        base dtype, shape, digest, target dtype, shape, digest, payload, base chunks, target
        chunks, changes_digest, changed elements, total elements)."""
        return zip(*self._columns(), strict=True)

    def _columns(self) -> tuple[list[Any], ...]:
        return (
            self.name,
            self.kind,
            self.base.dtype,
            self.base.shape,
            self.base.digest,
            self.target.dtype,
            self.target.shape,
            self.target.digest,
            self.payload,
            self.base_chunks,
            self.target_chunks,
            self.changes_digest,
            self.changed_elements,
            self.total_elements,
        )

    @model_validator(mode="after")
    def _consistent(self) -> TensorColumns:
        changed = sum(kind in _CHANGED_KINDS for kind in self.kind)
        self._changes_packed = checked_digests(self.changes_digests, changed, "changes_digests")
        lengths = {len(self.name), len(self.kind), len(self.base.dtype), len(self.target.dtype)}
        lengths |= {len(self.payload), len(self.base_chunks), len(self.target_chunks)}
        lengths |= {len(self.changed_elements), len(self.total_elements)}
        if len(lengths) != 1:
            raise ValueError("the tensor columns differ in length")
        duplicates = [n for n, count in Counter(self.name).items() if count > 1]
        if duplicates:
            raise ValueError(f"tensor {duplicates[0]!r} appears twice in the manifest")
        problem = _first_inconsistency(self)
        if problem is not None:
            index, why = problem
            raise ValueError(f"tensor {self.name[index]!r}: {why}")
        return self


def _first_inconsistency(c: TensorColumns) -> tuple[int, str] | None:
    """The first tensor whose fields contradict each other, with why.

    Each rule is one mask over every tensor (whole columns, no per-tensor objects); for the
    first tensor that breaks any, the first rule it breaks, in the order listed."""
    kind = np.array([_KIND_CODES[k] for k in c.kind], dtype=np.int8)
    carried, unchanged = kind == _KIND_CODES["carried"], kind == _KIND_CODES["unchanged"]
    has_base = np.array(c.base.present, dtype=bool)
    has_target = np.array(c.target.present, dtype=bool)
    same_type = np.array(
        [b == t for b, t in zip(c.base.shape, c.target.shape, strict=True)], dtype=bool
    ) & (np.array(c.base.dtype, dtype=object) == np.array(c.target.dtype, dtype=object))
    same = has_base & has_target & same_type
    has_payload = np.array([p is not None for p in c.payload], dtype=bool)
    base_chunks = np.array([bool(chunks) for chunks in c.base_chunks], dtype=bool)
    target_chunks = np.array([bool(chunks) for chunks in c.target_chunks], dtype=bool)
    too_many = [
        changed > total for changed, total in zip(c.changed_elements, c.total_elements, strict=True)
    ]
    counts_off = [
        shape is not None and math.prod(shape) != total
        for shape, total in zip(c.base.shape, c.total_elements, strict=True)
    ]
    rules = (
        (~has_base & ~has_target, "it has neither a base nor a target"),
        (carried & same, "carried only when shape, dtype or presence differ"),
        (~carried & ~same, "only a carried tensor may change shape, dtype or presence"),
        (
            unchanged & ~_same_digests(c.base, c.target, has_base, has_target),
            "unchanged with two different digests",
        ),
        (
            (kind >= _KIND_CODES["sparse"]) != has_payload,
            "exactly sparse and dense tensors have a payload",
        ),
        (
            base_chunks & (~carried | ~has_base) | target_chunks & (~carried | ~has_target),
            "only carried tensors have whole-data chunks, and only for a side they have",
        ),
        (
            too_many,
            "more changed elements than elements",
        ),
        (~carried & np.array(counts_off, dtype=bool), "total_elements is not its shape's"),
    )
    broken = np.array([mask for mask, _ in rules], dtype=bool).reshape(len(rules), len(kind))
    tensors = np.flatnonzero(broken.any(axis=0))
    if not tensors.size:
        return None
    index = int(tensors[0])
    return index, rules[int(np.argmax(broken[:, index]))][1]


def _same_digests(
    base: SideColumns, target: SideColumns, has_base: np.ndarray, has_target: np.ndarray
) -> np.ndarray:
    """Per tensor: present on both sides with the same digest (compared as packed bytes, whole
    columns at once, without spelling 200,000 digests out in hex)."""
    base_rank, target_rank = np.cumsum(has_base) - 1, np.cumsum(has_target) - 1
    both = np.flatnonzero(has_base & has_target)
    base_digests = np.frombuffer(base.raw_digests(), np.uint8).reshape(-1, _DIGEST_BYTES)
    target_digests = np.frombuffer(target.raw_digests(), np.uint8).reshape(-1, _DIGEST_BYTES)
    same = np.zeros(len(has_base), dtype=bool)
    same[both] = (base_digests[base_rank[both]] == target_digests[target_rank[both]]).all(axis=1)
    return same


class TensorTable(Sequence[TensorEntry]):
    """The validated tensor columns of a manifest, read as a sequence of :class:`TensorEntry`
    (built once, on first use)."""

    def __init__(self, columns: TensorColumns) -> None:
        self.columns = columns

    @classmethod
    def from_entries(cls, entries: Iterable[TensorEntry]) -> TensorTable:
        """The table of entries a diff built (validated like a parsed manifest)."""
        return cls(columns_of(entries))

    @cached_property
    def _entries(self) -> list[TensorEntry]:
        c = self.columns
        with collector_paused():
            return [
                TensorEntry(
                    name,
                    _side(bd, bs, bg),
                    _side(td, ts, tg),
                    kind,
                    None if payload is None else BlobRef._make(payload),
                    tuple(map(BlobRef._make, bc)),
                    tuple(map(BlobRef._make, tc)),
                    *counts,
                )
                for name, kind, bd, bs, bg, td, ts, tg, payload, bc, tc, *counts in c.rows()
            ]

    def __len__(self) -> int:
        return len(self.columns.name)

    @overload
    def __getitem__(self, index: int) -> TensorEntry: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[TensorEntry]: ...
    def __getitem__(self, index: int | slice) -> TensorEntry | Sequence[TensorEntry]:
        return self._entries[index]

    def __iter__(self) -> Iterator[TensorEntry]:
        return iter(self._entries)

    def names(self, side: Side | None = None) -> list[str]:
        """Every tensor's name, or those present on ``side``."""
        if side is None:
            return list(self.columns.name)
        present = self.columns.side(side).present
        return [n for n, p in zip(self.columns.name, present, strict=True) if p]

    def digests(self, side: Side) -> dict[str, str]:
        """Tensor name -> digest on ``side`` (no entry objects built)."""
        return {
            n: d
            for n, d in zip(self.columns.name, self.columns.side(side).digest, strict=True)
            if d is not None
        }

    def side_identities(self, side: Side) -> Iterator[tuple[str, str, tuple[int, ...], str]]:
        """(name, dtype, shape, digest) of every tensor on ``side``: what a version id covers."""
        s = self.columns.side(side)
        for name, dtype, shape, digest in zip(
            self.columns.name, s.dtype, s.shape, s.digest, strict=True
        ):
            if dtype is not None and shape is not None and digest is not None:
                yield name, dtype, shape, digest

    def blobs(self) -> Iterator[BlobTriple]:
        """Every blob the tensors refer to, as (object, offset, length)."""
        c = self.columns
        yield from (p for p in c.payload if p is not None)
        for chunks in (c.base_chunks, c.target_chunks):
            for blobs in chunks:
                yield from blobs


def _side(
    dtype: str | None, shape: tuple[int, ...] | None, digest: str | None
) -> TensorSide | None:
    if dtype is None or shape is None or digest is None:
        return None
    return TensorSide(dtype, shape, digest)


def columns_of(entries: Iterable[TensorEntry]) -> TensorColumns:
    """The columns of entries a diff built, validated like a parsed manifest's."""
    rows = list(entries)

    def side(which: Side) -> dict[str, object]:
        sides = [e.side(which) for e in rows]
        return {
            "dtype": [s and s.dtype for s in sides],
            "shape": [s and tuple(s.shape) for s in sides],
            "digests": pack_digests(s.digest for s in sides if s is not None),
        }

    return TensorColumns.model_validate(
        {
            "name": [e.name for e in rows],
            "kind": [e.kind for e in rows],
            "base": side("base"),
            "target": side("target"),
            "payload": [e.payload for e in rows],
            "base_chunks": [e.base_chunks for e in rows],
            "target_chunks": [e.target_chunks for e in rows],
            "changes_digests": pack_digests(
                e.changes_digest for e in rows if e.changes_digest is not None
            ),
            "changed_elements": [e.changed_elements for e in rows],
            "total_elements": [e.total_elements for e in rows],
        }
    )


_DIGEST_BYTES: Final = 32


def pack_digests(digests: Iterable[str]) -> str:
    """BLAKE3-256 digests (hex) as one base64 string of their bytes: a third of the JSON, and
    one string to parse instead of one per tensor."""
    try:
        raw = [bytes.fromhex(d) for d in digests]
    except ValueError:
        raise ValueError("a digest is not hex") from None
    if any(len(d) != _DIGEST_BYTES for d in raw):
        raise ValueError("a digest is not 64 hex characters (BLAKE3-256)")
    return base64.b64encode(b"".join(raw)).decode("ascii")


def checked_digests(packed: str, count: int, what: str) -> bytes:
    """The bytes of :func:`pack_digests`' string, refused unless they are ``count`` digests."""
    try:
        raw = base64.b64decode(packed, validate=True)
    except ValueError:
        raise ValueError(f"{what} is not base64") from None
    if len(raw) != _DIGEST_BYTES * count:
        raise ValueError(f"{what} holds {len(raw) / _DIGEST_BYTES:g} digests for {count} tensors")
    return raw


def spread_digests(raw: bytes, present: Sequence[bool]) -> list[str | None]:
    """Checked digest bytes as hex, spread over the rows where ``present`` is true."""
    hexes = iter([raw[i : i + _DIGEST_BYTES].hex() for i in range(0, len(raw), _DIGEST_BYTES)])
    return [next(hexes) if p else None for p in present]
