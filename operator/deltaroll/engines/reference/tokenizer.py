"""Text to token ids and back for the reference engine.

A checkpoint directory with tokenizer files gets its own tokenizer (``AutoTokenizer``, local files
only). One without any (the demo's byte-level models) gets :class:`ByteTokenizer`: token id =
byte value of the UTF-8 text, so any model with a vocabulary of at least 256 can be served.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from deltaroll.engines.errors import ModelLoadError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


class TextTokenizer(Protocol):
    name: str

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens; decoding replaces what is not valid UTF-8."""

    name = "bytes"

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")


class HuggingFaceTokenizer:
    """The checkpoint's own tokenizer."""

    name = "huggingface"

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer(text)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tokenizer.decode(list(ids), skip_special_tokens=True))


def load_tokenizer(model_dir: Path, vocab_size: int) -> TextTokenizer:
    """The directory's tokenizer, or bytes when it has none."""
    if any((model_dir / name).is_file() for name in TOKENIZER_FILES):
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"{model_dir}: its tokenizer files cannot be loaded ({exc}); fix or remove them "
                "(without tokenizer files the engine uses byte-level tokens)"
            ) from exc
        return HuggingFaceTokenizer(tokenizer)
    if vocab_size < 256:
        raise ModelLoadError(
            f"{model_dir}: has no tokenizer files and a vocabulary of {vocab_size} < 256, so "
            "byte-level tokens do not fit: add the model's tokenizer files"
        )
    return ByteTokenizer()
