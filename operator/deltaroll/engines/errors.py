"""Named errors of the engines layer.

The agent tells them apart: an :class:`EngineUnreachableError` is worth retrying with backoff (the
engine is starting or restarting), an :class:`EngineReloadError` is the engine refusing the new
weights (its own message is kept so the pod's status can say why), and an
:class:`EngineConfigError` is a mistake in the deployment that no retry will fix.
"""

from __future__ import annotations

from deltaroll.errors import DeltarollError


class EngineError(DeltarollError):
    """Something went wrong talking to an inference engine."""


class EngineConfigError(EngineError):
    """The engine kind or endpoint is unusable (unknown kind, malformed URL, credentials in it)."""

    exit_code = 2


class EngineUnreachableError(EngineError):
    """The engine did not answer (connection refused, reset or timed out)."""

    def __init__(self, endpoint: str, reason: str) -> None:
        super().__init__(
            f"engine at {endpoint} is unreachable ({reason}): check that it is running and "
            "listening on that address; the agent retries with backoff"
        )
        self.endpoint = endpoint
        self.reason = reason


class EngineReloadError(EngineError):
    """The engine refused or failed to load new weights; ``engine_message`` is its own words.

    ``old_weights_kept`` says whether the engine still serves exactly what it served before
    (reference and SGLang restore their old weights; vLLM's reload is not transactional, so after
    it fails mid-way the agent must reload a known version before the pod may be Ready again).
    """

    def __init__(
        self,
        endpoint: str,
        model_path: str,
        engine_message: str,
        status: int,
        *,
        old_weights_kept: bool = True,
    ) -> None:
        consequence = (
            "the engine still serves its previous weights"
            if old_weights_kept
            else "the engine's weights may be partly replaced: reload a known version"
        )
        one_line = " ".join(engine_message.split())  # SGLang's messages span lines
        super().__init__(
            f"engine at {endpoint} failed to load weights from {model_path} "
            f"(HTTP {status}): {one_line}; {consequence}"
        )
        self.endpoint = endpoint
        self.model_path = model_path
        self.engine_message = engine_message
        self.status = status
        self.old_weights_kept = old_weights_kept


class ModelLoadError(EngineError):
    """The reference engine cannot load a checkpoint directory; what it serves is unchanged."""


class EngineRequestError(EngineError):
    """A request to the reference engine is malformed; the message says which field and why."""


class LivePatchError(EngineError):
    """A delta could not be applied to the engine's live weights in memory.

    ``old_weights_kept`` says whether the engine still serves exactly what it served before
    (the patch was refused, or undone); either way the caller falls back to a reload from disk.
    """

    def __init__(self, message: str, *, old_weights_kept: bool = True) -> None:
        super().__init__(message)
        self.old_weights_kept = old_weights_kept


class LayoutChangeError(LivePatchError):
    """The delta changes more than values (tensors added, removed or reshaped, the config, a
    tensor the engine holds in another dtype or shape): only a full reload applies it."""


class LiveWeightsMismatchError(LivePatchError):
    """The engine's live values are not the delta's from-side (checked against the change
    digests before anything is written): reload from disk."""
