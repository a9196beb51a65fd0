"""The root of Deltaroll's named errors.

Every error a user can act on derives from :class:`DeltarollError` and carries a message that says
what went wrong and what to do; the CLI prints it as one ``error: ...`` line and exits non-zero.
Each layer defines its own subclasses next to the code that raises them.
"""

from __future__ import annotations


class DeltarollError(Exception):
    """An error a user can act on. ``exit_code`` is what the CLI exits with."""

    exit_code: int = 1
