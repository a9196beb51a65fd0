"""Named errors of the worker layer, and the reason each error reports to the controller.

A worker that fails writes ``{"reason": ..., "message": ...}`` to its termination message
(:class:`~deltaroll.api.job_result.JobReport`); the controller copies both into the ModelDelta's
Ready condition. :func:`reason_for` maps an error
from any layer to that CamelCase reason, and says whether retrying the pod could help (a Job's
podFailurePolicy fails the Job at once on a permanent error's exit code).
"""

from __future__ import annotations

from deltaroll.api.job_result import EXIT_PERMANENT, EXIT_RETRYABLE
from deltaroll.errors import DeltarollError


class WorkerError(DeltarollError):
    """A worker command cannot do its work; the message says what to fix."""

    exit_code = EXIT_PERMANENT


class SourceNotFoundError(WorkerError):
    """The target checkpoint or patch URI names nothing (a missing path or an empty prefix)."""


class UnsupportedSourceError(WorkerError):
    """The source URI has a form the worker cannot read."""


class ShareMismatchError(WorkerError):
    """The shares of an Indexed Job do not add up to one checkpoint (its target changed)."""

    exit_code = EXIT_RETRYABLE


def _reasons() -> list[tuple[type[BaseException], str, bool]]:
    """(error class, reason, permanent), most specific first; imported lazily (layers below)."""
    from deltaroll.checkpoint.errors import (
        InvalidCheckpointError,
        OutputExistsError,
        TrlPatchError,
    )
    from deltaroll.store.errors import (
        BaseNotInStoreError,
        NameConflictError,
        NoPathError,
        StoreAccessError,
        TransientStoreError,
        VersionNotFoundError,
    )

    return [
        (SourceNotFoundError, "TargetNotFound", True),
        (UnsupportedSourceError, "InvalidTarget", True),
        (InvalidCheckpointError, "InvalidTarget", True),
        (TrlPatchError, "InvalidPatch", True),
        (VersionNotFoundError, "ParentNotFound", True),
        (BaseNotInStoreError, "ParentNotFound", True),
        (NoPathError, "ParentNotFound", True),
        (NameConflictError, "NameConflict", True),
        (StoreAccessError, "StoreAccessDenied", True),
        (TransientStoreError, "StoreUnavailable", False),
        (OutputExistsError, "WorkerError", False),
    ]


def reason_for(error: BaseException) -> tuple[str, bool]:
    """The CamelCase reason of ``error`` and whether it is permanent."""
    for cls, reason, permanent in _reasons():
        if isinstance(error, cls):
            return reason, permanent
    if isinstance(error, DeltarollError):
        return "WorkerError", False
    if isinstance(error, MemoryError):
        return "OutOfMemory", False
    return "WorkerCrashed", False
