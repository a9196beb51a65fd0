"""Dense delta: the XOR of the whole tensor, chunk by chunk as byte planes, in one zstd frame.

For tensors that changed almost everywhere (e.g. fp32 training), where listing positions costs
more than it saves. The high bytes of the XOR of two close floats are zero, so planes compress
well. Encoding and decoding stream one chunk at a time, so a multi-GB tensor needs no full-size
temporary beyond the tensor itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import zstandard

from deltaroll.codec.errors import CodecError
from deltaroll.codec.framing import Header, PayloadReader, PayloadWriter
from deltaroll.codec.planes import from_planes, to_planes

FORMAT_DENSE_XOR = 5
# Elements per chunk: bounds the memory of both encoder and decoder (8 MiB of uint64).
CHUNK_ELEMENTS = 1 << 20
_MAX_CHUNK_ELEMENTS = 1 << 28


def encode_dense(
    xor_chunks: Callable[[int], Iterable[np.ndarray]],
    width: int,
    total: int,
    changed: int,
    level: int,
) -> bytes | bytearray:
    """Payload holding base XOR target; ``xor_chunks(n)`` yields it n elements at a time."""
    compressor = zstandard.ZstdCompressor(level=level, write_content_size=True)
    stream = compressor.compressobj(size=total * width)
    # One growing buffer, handed to the writer as it is: a list of pieces joined afterwards
    # held the frame twice (a 1 GB tensor at 60 % density has a 230 MB frame).
    frame = bytearray()
    for chunk in xor_chunks(CHUNK_ELEMENTS):
        frame += stream.compress(to_planes(chunk).data)
    frame += stream.flush()
    writer = PayloadWriter(Header(FORMAT_DENSE_XOR, width, total, changed))
    writer.small_int(CHUNK_ELEMENTS)
    writer.section(frame)
    del frame
    return writer.finish()


def _decoded_chunks(
    frame: memoryview, dtype: np.dtype, total: int, chunk_elements: int
) -> Iterator[tuple[int, np.ndarray]]:
    """(start, xor) for each chunk, checking the frame holds exactly ``total`` elements."""
    try:
        if zstandard.get_frame_parameters(frame).content_size != total * dtype.itemsize:
            raise CodecError("dense delta holds a different number of elements; corrupt")
        with zstandard.ZstdDecompressor().stream_reader(frame) as reader:
            for start in range(0, total, chunk_elements):
                size = (min(start + chunk_elements, total) - start) * dtype.itemsize
                data = reader.read(size)
                while len(data) < size:
                    more = reader.read(size - len(data))
                    if not more:
                        raise CodecError("dense delta is truncated; corrupt")
                    data += more
                yield start, from_planes(np.frombuffer(data, np.uint8), dtype)
            if reader.read(1):
                raise CodecError("dense delta holds more data than its tensor; corrupt")
    except zstandard.ZstdError as exc:
        raise CodecError(f"dense delta does not decompress ({exc}); corrupt") from exc


def _frame(reader: PayloadReader) -> tuple[memoryview, int]:
    """The zstd frame of a dense payload and its elements per chunk."""
    chunk_elements = reader.small_int()
    if not 1 <= chunk_elements <= _MAX_CHUNK_ELEMENTS:
        raise CodecError(f"dense delta names a chunk of {chunk_elements} elements; corrupt")
    frame = reader.section()
    reader.expect_end()
    return frame, chunk_elements


def _check_changed(changed: int, header: Header) -> None:
    if changed != header.changed_elements:
        raise CodecError(
            f"dense delta changes {changed} elements but its header says "
            f"{header.changed_elements}; corrupt"
        )


def dense_xor_chunks(reader: PayloadReader, dtype: np.dtype) -> Iterator[tuple[int, np.ndarray]]:
    """(start, xor) for each chunk of a dense payload, in order, so a caller can patch a tensor
    a window at a time; raises :class:`CodecError` (after the last chunk at the latest) unless
    the chunks change exactly the elements the header says."""
    header = reader.header
    frame, chunk_elements = _frame(reader)
    changed = 0
    for start, xor in _decoded_chunks(frame, dtype, header.total_elements, chunk_elements):
        changed += int(np.count_nonzero(xor))
        yield start, xor
    _check_changed(changed, header)


def apply_dense(current: np.ndarray, reader: PayloadReader) -> None:
    """XOR the payload into ``current``; on any error the chunks already applied are undone."""
    header = reader.header
    frame, chunk_elements = _frame(reader)
    applied = changed = 0
    try:
        for start, xor in _decoded_chunks(frame, current.dtype, current.shape[0], chunk_elements):
            current[start : start + xor.shape[0]] ^= xor
            applied = start + xor.shape[0]
            changed += int(np.count_nonzero(xor))
        _check_changed(changed, header)
    except CodecError:
        # XOR is its own inverse: applying the same chunks again restores them.
        for start, xor in _decoded_chunks(frame, current.dtype, current.shape[0], chunk_elements):
            if start >= applied:
                break
            current[start : start + xor.shape[0]] ^= xor
        raise
