"""Named errors of the command-line tools."""

from __future__ import annotations

from deltaroll.errors import DeltarollError


class ClusterRequestError(DeltarollError):
    """The cluster could not be reached, or refused the request; the message says which."""


class ModelDeploymentNotFoundError(DeltarollError):
    """No ModelDeployment of that name in that namespace; ``kubectl get modeldeployments``."""
