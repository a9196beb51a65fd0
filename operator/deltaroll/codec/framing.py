"""Byte-level framing of payloads: a header, length-prefixed sections, a checksum.

Layout: format byte, element-width byte, then unsigned LEB128 varints (total elements, changed
elements, then each section's length before its bytes), then an xxh3-64 of everything before it.
Varints keep the fixed cost of a small tensor's delta to a few dozen bytes.

The trailing checksum catches any altered byte before decoding starts (a flipped bit inside a
zstd frame could otherwise decode to different, plausible data). Every read is bounds-checked and
every zstd frame is decompressed with a known output size, so a truncated or altered payload
raises :class:`CodecError` rather than a numpy or zstd exception.
"""

from __future__ import annotations

import struct
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import xxhash
import zstandard

from deltaroll.codec.errors import CodecError
from deltaroll.codec.planes import from_planes, to_planes

_CHECKSUM = struct.Struct("<Q")
# A last section this large is turned into the payload where it lies (see PayloadWriter.finish).
_BUILD_IN_PLACE_BYTES = 1 << 20
_MAX_VARINT_BYTES = 10  # enough for any 64-bit value
ELEMENT_DTYPES: dict[int, np.dtype] = {
    1: np.dtype(np.uint8),
    2: np.dtype("<u2"),
    4: np.dtype("<u4"),
    8: np.dtype("<u8"),
}


@dataclass(frozen=True)
class Header:
    """What every payload starts with; enough to check it fits the tensor it is applied to."""

    format_id: int
    width: int
    total_elements: int
    changed_elements: int


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class PayloadWriter:
    """Builds a payload: header, then integers and sections appended in order."""

    def __init__(self, header: Header) -> None:
        self._parts: list[bytes | bytearray] = [
            bytes((header.format_id, header.width)),
            _varint(header.total_elements),
            _varint(header.changed_elements),
        ]

    def small_int(self, value: int) -> None:
        self._parts.append(_varint(value))

    def section(self, data: bytes | bytearray) -> None:
        self._parts.append(_varint(len(data)))
        self._parts.append(data)

    def stream(self, values: np.ndarray, level: int) -> None:
        """An array of unsigned ints as byte planes, zstd-compressed (nothing when empty)."""
        self.planes(to_planes(values), level)

    def planes(self, planes: np.ndarray, level: int) -> None:
        """A stream whose byte planes the caller built (uint8): what :meth:`stream` writes."""
        self.section(compress(planes, level) if planes.size else b"")

    def finish(self) -> bytes | bytearray:
        """The payload. A large last section built in a bytearray (a dense frame: hundreds of
        MB) becomes the payload itself, the header moved in front of it, rather than joined
        into a second copy of it."""
        *head, last = self._parts
        self._parts = []
        if isinstance(last, bytearray) and len(last) >= _BUILD_IN_PLACE_BYTES:
            last[0:0] = b"".join(head)  # grows the buffer in place (realloc), one memmove
            last += _CHECKSUM.pack(xxhash.xxh3_64_intdigest(last))
            return last
        body = b"".join([*head, last])
        return body + _CHECKSUM.pack(xxhash.xxh3_64_intdigest(body))


class PayloadReader:
    """Reads a payload written by :class:`PayloadWriter`, checking every bound."""

    def __init__(self, payload: bytes | bytearray) -> None:
        view = memoryview(payload)
        if len(view) < 2 + _CHECKSUM.size:
            raise CodecError(
                f"delta payload is truncated ({len(view)} bytes); re-fetch the delta object"
            )
        self._view = view[: len(view) - _CHECKSUM.size]
        (checksum,) = _CHECKSUM.unpack_from(view, len(self._view))
        if xxhash.xxh3_64_intdigest(self._view) != checksum:
            raise CodecError(
                "delta payload fails its checksum (altered or truncated); re-fetch the delta object"
            )
        fmt, width = self._view[0], self._view[1]
        self._offset = 2
        total, changed = self.small_int(), self.small_int()
        if width not in ELEMENT_DTYPES:
            raise CodecError(f"delta payload names an element width of {width} bytes; corrupt")
        if changed > total:
            raise CodecError(f"delta payload claims {changed} changed of {total} elements; corrupt")
        self.header = Header(fmt, width, total, changed)

    def small_int(self) -> int:
        value = shift = 0
        for index in range(self._offset, min(self._offset + _MAX_VARINT_BYTES, len(self._view))):
            byte = self._view[index]
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                self._offset = index + 1
                return value
        raise CodecError("delta payload is truncated or corrupt in a length field")

    def section(self) -> memoryview:
        length = self.small_int()
        end = self._offset + length
        if end > len(self._view):
            raise CodecError(
                f"delta payload is truncated: a section of {length} bytes runs past its end; "
                "re-fetch the delta object"
            )
        data = self._view[self._offset : end]
        self._offset = end
        return data

    def stream(self, dtype: np.dtype, count: int) -> np.ndarray:
        """Inverse of :meth:`PayloadWriter.stream`: exactly ``count`` values of ``dtype``."""
        return from_planes(self.planes(dtype, count), dtype)

    def stream_later(self, dtype: np.dtype, count: int) -> Future[np.ndarray]:
        """:meth:`stream`, decompressed on a background thread (zstd and the compiled planes
        release the GIL): the section is taken now, its values when the future is asked."""
        frame = self.section()
        return _BACKGROUND.submit(_values, frame, dtype, count)

    def planes(self, dtype: np.dtype, count: int) -> np.ndarray:
        """A stream's ``count`` values of ``dtype`` left as byte planes (uint8, read-only): for
        one-byte values, the values themselves without a copy."""
        return _planes(self.section(), dtype, count)

    def expect_end(self) -> None:
        if self._offset != len(self._view):
            raise CodecError(
                f"delta payload has {len(self._view) - self._offset} unexpected trailing bytes; "
                "corrupt"
            )


# One thread decompresses a stream while the caller works on the others (see stream_later).
_BACKGROUND = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deltaroll-decode")


def _planes(frame: memoryview, dtype: np.dtype, count: int) -> np.ndarray:
    if count == 0:
        if len(frame):
            raise CodecError("delta payload has data in a section that must be empty; corrupt")
        return np.empty(0, np.uint8)
    return np.frombuffer(decompress(frame, count * dtype.itemsize), np.uint8)


def _values(frame: memoryview, dtype: np.dtype, count: int) -> np.ndarray:
    return from_planes(_planes(frame, dtype, count), dtype)


def compress(data: bytes | np.ndarray, level: int) -> bytes:
    """zstd with the content size in the frame header (the reader checks it)."""
    buffer = np.ascontiguousarray(data).data if isinstance(data, np.ndarray) else data
    return zstandard.ZstdCompressor(level=level, write_content_size=True).compress(buffer)


def decompress(frame: bytes | memoryview, expected_size: int) -> bytes:
    """Decompress one zstd frame that must hold exactly ``expected_size`` bytes."""
    try:
        params = zstandard.get_frame_parameters(frame)
        if params.content_size != expected_size:
            raise CodecError(
                f"delta payload section holds {params.content_size} bytes, expected "
                f"{expected_size}; corrupt"
            )
        data = zstandard.ZstdDecompressor().decompress(frame, max_output_size=expected_size)
    except zstandard.ZstdError as exc:
        raise CodecError(f"delta payload section does not decompress ({exc}); corrupt") from exc
    if len(data) != expected_size:
        raise CodecError(
            f"delta payload section decompressed to {len(data)} bytes, expected "
            f"{expected_size}; corrupt"
        )
    return data
