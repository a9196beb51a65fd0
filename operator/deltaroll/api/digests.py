"""Digests as every contract and manifest spells them (one pattern, one definition)."""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

#: A BLAKE3-256 digest, 64 lowercase hex characters.
Blake3Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
