"""Safetensors checkpoints and delta directories.

Reads a checkpoint (one ``.safetensors`` file, or a Hugging Face directory: ``model.safetensors``
or shards with ``model.safetensors.index.json``, plus config and tokenizer files) one tensor at a
time; writes the delta between two checkpoints as a directory (``manifest.json.zst`` +
``objects/<sha256>``); applies it to a new directory or in place behind a crash-safe journal,
forwards or in reverse; verifies a checkpoint against either side; imports TRL sparse patches.
Tensor bits go through :mod:`deltaroll.codec`; this layer owns files, layouts, digests and the
trusted-state record that lets an in-place apply read only what changes.
"""

from deltaroll.checkpoint.apply import ApplySummary, apply_delta
from deltaroll.checkpoint.describe import describe_delta
from deltaroll.checkpoint.diff import DeltaSummary, diff_checkpoints
from deltaroll.checkpoint.digests import (
    checkpoint_version,
    side_version,
    tensor_digest,
    version_id,
)
from deltaroll.checkpoint.manifest import DeltaManifest, read_delta_manifest
from deltaroll.checkpoint.reader import Checkpoint, open_checkpoint
from deltaroll.checkpoint.trl_import import import_trl_patch
from deltaroll.checkpoint.verify import VerifyReport, verify_checkpoint

__all__ = [
    "ApplySummary",
    "Checkpoint",
    "DeltaManifest",
    "DeltaSummary",
    "VerifyReport",
    "apply_delta",
    "checkpoint_version",
    "describe_delta",
    "diff_checkpoints",
    "import_trl_patch",
    "open_checkpoint",
    "read_delta_manifest",
    "side_version",
    "tensor_digest",
    "verify_checkpoint",
    "version_id",
]
