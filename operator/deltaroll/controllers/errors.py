"""Named errors of the controllers layer."""

from __future__ import annotations

from deltaroll.errors import DeltarollError


class OperatorConfigError(DeltarollError):
    """The operator was started with flags or environment it cannot run with."""

    exit_code = 2


class SecretNotFoundError(DeltarollError):
    """A store's credentials Secret (spec.store.secretRef) does not exist in the namespace."""
