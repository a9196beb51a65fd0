"""Named errors of the checkpoint layer: each says what went wrong and what to do about it."""

from __future__ import annotations

from deltaroll.errors import DeltarollError


class CheckpointError(DeltarollError):
    """Base of every error raised by :mod:`deltaroll.checkpoint`."""


class InvalidCheckpointError(CheckpointError):
    """A path is not a readable safetensors checkpoint (missing, truncated, malformed header)."""

    exit_code = 2


class UnsupportedDtypeError(InvalidCheckpointError):
    """A tensor has a dtype whose bit width Deltaroll does not know."""


class CorruptDeltaError(CheckpointError):
    """A delta directory was altered or damaged: a bad object, manifest or payload."""

    exit_code = 3


class WrongBaseError(CheckpointError):
    """A delta was asked to apply to a checkpoint that is not its base."""

    exit_code = 4


class UnsafeNameError(CorruptDeltaError):
    """A file name taken from a manifest or an index would escape the output directory."""


class OutputExistsError(CheckpointError):
    """The output path of a diff or an apply already holds something."""


class InterruptedApplyError(CheckpointError):
    """An unfinished in-place apply of a different delta (or direction) holds the checkpoint."""


class TrlPatchError(CheckpointError):
    """A TRL sparse patch cannot be imported (unknown encoding, bad names or indices)."""


class CheckpointMismatchError(CheckpointError):
    """``verify`` found that a checkpoint is not the side of the delta it was checked against."""


class UnsupportedFormatError(CorruptDeltaError):
    """A delta manifest is in a format this Deltaroll does not apply (older or newer)."""


class ChangesMismatchError(WrongBaseError):
    """The values at a delta's changed positions are not what the publisher saw: the checkpoint
    is not the trusted base it claims to be (or the delta lies)."""


class UnsafeAuxFileError(CheckpointError):
    """A checkpoint ships a file beside its weights that is not an allowed data file (code, or a
    config that asks an engine to import code); nothing was published or written."""

    exit_code = 2


class DeltaTooLargeError(CheckpointError):
    """An intact delta needs a larger buffer than the memory budget, or more disk than the
    destination has free: refused before anything is allocated or written."""

    exit_code = 5
