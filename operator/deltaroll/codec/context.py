"""The context of an element: bits of its known value that predict how it changes.

With fp32 master weights behind a low-precision copy, an optimizer step moves every element by
about the learning rate, so whether an element's bits change, and by how many units in the last
place, depends mostly on its exponent: small magnitudes have small ULPs and change by several,
large ones rarely change at all. The context is the 8 bits below the sign: the exponent of bf16,
fp32 and (its top bits) fp64, exponent and top mantissa bits of fp16. The codec only sees
unsigned views, so the same bits are used for integers, where they simply group by magnitude.
"""

from __future__ import annotations

# Contexts are 0..255; an element whose context differs between base and target (its exponent
# moved) gets this one, so a decoder that knows either side derives the same context for all.
EXCEPTION_CONTEXT = 256
_SHIFT_BY_WIDTH = {1: 3, 2: 7, 4: 23, 8: 55}


def context_shift(width: int) -> int:
    """The context of a ``width``-byte value is ``(value >> context_shift(width)) & 0xFF``."""
    return _SHIFT_BY_WIDTH[width]
