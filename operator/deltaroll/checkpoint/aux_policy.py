"""Which files beside the weights a version may ship: data files only, unless an admin says more.

A version id covers every auxiliary file, so a signature covers them too; but a signed
``modeling_*.py``, or a ``config.json`` whose ``auto_map`` points an engine started with
``--trust-remote-code`` at code, would still run code in the engine. So publishing and applying
both refuse any auxiliary file outside :data:`DATA_FILES`, and any ``auto_map`` in a config,
unless the admin allows more (``--allow-aux-file GLOB``, ``--allow-auto-map``; the agent's
settings of the same names). Checked from the manifest and the (small, digest-checked) config
bytes before anything is written.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass

from deltaroll.checkpoint.errors import UnsafeAuxFileError
from deltaroll.checkpoint.manifest import DeltaManifest
from deltaroll.checkpoint.packs import PackReader
from deltaroll.checkpoint.reader import INDEX_NAME
from deltaroll.checkpoint.transform import Side, aux_file_bytes

#: Data files Hugging Face checkpoints carry that no engine executes.
DATA_FILES = frozenset(
    {
        INDEX_NAME,
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "tokenizer.model",
        "vocab.json",
        "vocab.txt",
        "merges.txt",
        "spiece.model",
        "sentencepiece.bpe.model",
        "preprocessor_config.json",
        "processor_config.json",
    }
)
#: Configs an engine reads ``auto_map`` from (transformers' Auto classes).
CONFIGS_WITH_AUTO_MAP = frozenset({"config.json", "tokenizer_config.json", "processor_config.json"})


@dataclass(frozen=True)
class AuxPolicy:
    """What an admin allows beyond :data:`DATA_FILES`."""

    extra: tuple[str, ...] = ()  # glob patterns of further names
    allow_auto_map: bool = False

    def allows(self, name: str) -> bool:
        return name in DATA_FILES or any(fnmatch.fnmatchcase(name, p) for p in self.extra)

    def check(self, manifest: DeltaManifest, side: Side, objects: PackReader) -> None:
        """Refuse ``side`` of the delta if it ships a file this policy does not allow."""
        layout = manifest.layout(side)
        for aux in layout.aux_files if layout is not None else ():
            if not self.allows(aux.name):
                raise UnsafeAuxFileError(
                    f"the checkpoint ships {aux.name!r} beside its weights, which is not a data "
                    "file a pod may load (code, or unknown); nothing was written: remove it from "
                    "the checkpoint, or allow it with --allow-aux-file (an admin's decision)"
                )
            if (
                aux.name in CONFIGS_WITH_AUTO_MAP
                and not self.allow_auto_map
                and "auto_map" in _json_object(aux_file_bytes(aux, objects))
            ):
                raise UnsafeAuxFileError(
                    f"{aux.name} has an auto_map, which makes an engine with "
                    "--trust-remote-code import code; nothing was written: remove it, or "
                    "allow it with --allow-auto-map (an admin's decision)"
                )


DEFAULT_AUX_POLICY = AuxPolicy()


def _json_object(data: bytes | bytearray) -> dict[str, object]:
    try:
        document = json.loads(data)
    except ValueError:
        return {}  # not JSON: an engine cannot read an auto_map from it either
    return document if isinstance(document, dict) else {}
