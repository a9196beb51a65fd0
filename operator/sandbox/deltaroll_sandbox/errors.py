"""Errors of the local control plane that a user can act on.

The sandbox is a distribution of its own and depends on nothing of Deltaroll's, so its errors
have their own root; the command line prints them as one ``error: ...`` line and exits with
``exit_code`` (:mod:`deltaroll_sandbox.cli`).
"""

from __future__ import annotations


class SandboxError(Exception):
    """Something about the local control plane (``deltaroll sandbox``) went wrong."""

    exit_code: int = 1


class SandboxStartError(SandboxError):
    """The sandbox could not start (e.g. the port is taken or the folder is not writable)."""


class SandboxNotFoundError(SandboxError):
    """No sandbox answers at the given kubeconfig: start one with ``deltaroll sandbox up``."""
