"""Named errors of the API layer."""

from __future__ import annotations

from deltaroll.errors import DeltarollError


class InvalidResourceError(DeltarollError):
    """A custom resource (or a sample file) does not match its schema.

    The message names the resource and every offending field path, so the user can fix the
    manifest; ``kubectl explain <kind>.spec`` documents each field.
    """


class CrdGenerationError(DeltarollError):
    """A model uses a schema construct a structural CRD schema cannot express.

    The message names the field; change the model (e.g. a union becomes an object with one
    optional field per alternative and a CEL rule choosing exactly one).
    """
