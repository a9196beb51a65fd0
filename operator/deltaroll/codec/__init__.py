"""Tensors in, delta out, and back: lossless, reversible, per-tensor deltas of raw bit patterns.

Pure numpy (and torch when given tensors); bytes in, bytes out, no file I/O. Callers use
:func:`encode_tensor_delta`, :func:`apply_tensor_delta` and :class:`EncodedTensor`; the payload
inside is opaque to them and names its own format, so the encoding can improve without changing
this API.

Modules, each with one job:

- ``delta``       the entry points: validate inputs, pick unchanged / sparse / dense by size
- ``changes``     the digest of a change set (positions, both sides' values) that binds a delta
- ``diff``        find changed positions and both sides' values (numpy arrays, via ``kernels``)
- ``kernels``     numba-compiled loops: the diff in one pass, the sparse encode and apply
                  without a sort
- ``numpy_kernels``  the diff and encode kernels in numpy, used while numba loads
- ``kernel_loading``  loads numba on a thread and says which kernels to use meanwhile
- ``torch_diff``  the same on torch tensors, on their device (a GPU in a delta Job)
- ``sparse``      the sparse payload: byte gaps, exceptions, per-context value changes
- ``sparse_encoder``  builds a sparse payload window by window, in compact form
- ``dense``       the dense payload: the whole XOR, streamed in chunks
- ``context``     which bits of a known value predict how it changes (the exponent)
- ``gaps``        ascending positions as byte gaps with an escape for long ones
- ``planes``      multi-byte values as byte planes, which zstd compresses better
- ``framing``     header, varint-length sections, checksum; every read bounds-checked
- ``model``, ``errors``  the types callers see
"""

from deltaroll.codec.changes import ChangesHasher, changes_digest
from deltaroll.codec.delta import (
    Side,
    apply_tensor_delta,
    decode_changes,
    decode_dense,
    encode_tensor_delta,
    encode_windowed_delta,
)
from deltaroll.codec.errors import CodecError
from deltaroll.codec.model import EncodedTensor, TensorKind
from deltaroll.codec.sparse import SparseChanges

__all__ = [
    "ChangesHasher",
    "CodecError",
    "EncodedTensor",
    "Side",
    "SparseChanges",
    "TensorKind",
    "apply_tensor_delta",
    "changes_digest",
    "decode_changes",
    "decode_dense",
    "encode_tensor_delta",
    "encode_windowed_delta",
]
