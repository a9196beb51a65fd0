"""Parsing and validating the header of one safetensors file.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON naming every
tensor's dtype, shape and ``data_offsets`` (relative to the end of the header), then the tensor
bytes. We parse the header ourselves, not through the safetensors library, because Deltaroll
needs the exact header bytes (to reproduce a file byte for byte) and every tensor's absolute
byte offset (to patch it in place). Validation is as strict as the reference implementation:
offsets must tile the data area exactly, so a truncated file or a header pointing past the end
is refused before anyone reads or writes tensor bytes.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deltaroll.checkpoint.dtypes import itemsize
from deltaroll.checkpoint.errors import InvalidCheckpointError

# The reference implementation refuses headers above 100 MB; so do we.
MAX_HEADER_BYTES = 100_000_000
METADATA_KEY = "__metadata__"


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's entry in a header; ``begin``/``end`` are absolute byte offsets in the file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class SafetensorsHeader:
    """A validated header: the raw JSON bytes and the tensors in the order of their data."""

    raw: bytes
    metadata: dict[str, str] | None
    tensors: tuple[TensorInfo, ...]

    @property
    def data_start(self) -> int:
        return 8 + len(self.raw)

    @property
    def file_size(self) -> int:
        return self.data_start + sum(t.nbytes for t in self.tensors)


def read_header(path: Path) -> SafetensorsHeader:
    """Read and validate the header of ``path`` against the file's actual size."""
    try:
        file_size = path.stat().st_size
        with path.open("rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise _invalid(path, "it is shorter than the 8-byte header length")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > MAX_HEADER_BYTES or 8 + header_len > file_size:
                raise _invalid(path, f"its header length {header_len} does not fit the file")
            raw = f.read(header_len)
    except OSError as exc:
        raise InvalidCheckpointError(f"cannot read {path}: {exc.strerror or exc}") from exc
    header = parse_header(raw, source=str(path))
    if header.file_size != file_size:
        raise _invalid(
            path,
            f"its tensors end at byte {header.file_size} but the file has {file_size} bytes "
            "(truncated or padded)",
        )
    return header


def parse_header(raw: bytes, *, source: str) -> SafetensorsHeader:
    """Validate header JSON bytes: known dtypes, sizes that match shapes, contiguous offsets."""
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _invalid(source, f"its header is not JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise _invalid(source, "its header is not a JSON object")
    metadata = document.pop(METADATA_KEY, None)
    if metadata is not None and not (
        isinstance(metadata, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise _invalid(source, "its __metadata__ is not a map of strings")
    header_start = 8 + len(raw)
    tensors = sorted(
        (_tensor_info(name, entry, source, header_start) for name, entry in document.items()),
        key=lambda t: (t.begin, t.end),
    )
    position = header_start
    for tensor in tensors:
        if tensor.begin != position:
            raise _invalid(
                source, f"tensor {tensor.name!r} starts at {tensor.begin}, expected {position}"
            )
        position = tensor.end
    return SafetensorsHeader(raw=bytes(raw), metadata=metadata, tensors=tuple(tensors))


def _tensor_info(name: str, entry: Any, source: str, header_start: int) -> TensorInfo:
    if not isinstance(entry, dict):
        raise _invalid(source, f"its entry for {name!r} is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str):
        raise _invalid(source, f"tensor {name!r} has no dtype")
    if not (isinstance(shape, list) and all(_is_count(d) for d in shape)):
        raise _invalid(source, f"tensor {name!r} has an invalid shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))):
        raise _invalid(source, f"tensor {name!r} has invalid data_offsets {offsets!r}")
    begin, end = offsets
    expected = math.prod(shape) * itemsize(dtype)
    if end - begin != expected:
        raise _invalid(
            source, f"tensor {name!r} spans {end - begin} bytes but {dtype}{shape} needs {expected}"
        )
    return TensorInfo(name, dtype, tuple(shape), header_start + begin, header_start + end)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _invalid(source: str | Path, why: str) -> InvalidCheckpointError:
    return InvalidCheckpointError(f"{source} is not a valid safetensors file: {why}")
