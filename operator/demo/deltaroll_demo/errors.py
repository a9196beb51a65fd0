"""The demo's one named error: a step of the story did not happen as told."""

from __future__ import annotations

from deltaroll.errors import DeltarollError


class DemoStepFailed(DeltarollError):
    """A step did not reach its expected state in time; the message says which and what was seen."""
