"""Errors of the local control plane that a user can act on."""

from __future__ import annotations

from deltaroll.errors import DeltarollError


class SandboxError(DeltarollError):
    """Something about the local control plane (``deltaroll sandbox``) went wrong."""


class SandboxStartError(SandboxError):
    """The sandbox could not start (e.g. the port is taken or the folder is not writable)."""


class SandboxNotFoundError(SandboxError):
    """No sandbox answers at the given kubeconfig: start one with ``deltaroll sandbox up``."""
