"""How a pod changes the weights its engine serves, and what the change cost: the contracts
between the agent and an engine that patches its weights in memory, and the pod annotation
that reports each version change.

The agent asks the engine (on the pod's loopback admin port) to apply a delta it has verified
and already applied to the weights volume: :class:`LiveApplyRequest`, answered with a
:class:`LiveApplyResult` (200) or a :class:`LiveApplyRefusal` (409: apply it with a reload from
disk instead; the old weights are still served unless ``old_weights_kept`` is false). The
engine also hashes the tensors it holds on request (:class:`ServedDigestRequest` ->
:class:`ServedDigests`), so the agent can check the served copy, not only the disk.

Each version change is reported on the pod as :data:`~deltaroll.api.annotations.POD_LAST_CHANGE`
(a :class:`WeightChange` in compact JSON), which the controller and ``kubectl deltaroll status``
read. Pause = from the first request the engine held to the first one it served on the new
version (an engine that reloads: the time the pod was out of its Service); the drain (waiting
for the requests in flight) is part of it and reported on its own too.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from deltaroll.api.digests import Blake3Hex
from deltaroll.redact import scrub

#: How a version got into the engine's memory.
ChangeMethod = Literal["in-memory", "disk-reload"]
IN_MEMORY: Final = "in-memory"
DISK_RELOAD: Final = "disk-reload"

VersionId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
#: A tensor name as a checkpoint spells it (bounded: it is echoed into logs and replies).
TensorName = Annotated[str, StringConstraints(min_length=1, max_length=512)]
Seconds = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
#: Reasons and messages are cut to this many characters before they go on a pod.
MAX_REASON_CHARS: Final = 300


class _Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LiveApplyRequest(_Contract):
    """``POST /apply_delta``: patch the live weights from ``from_version`` to ``to_version``
    with the delta directory at ``delta_path`` (an absolute path on the shared volume)."""

    delta_path: str = Field(min_length=1, max_length=4096)
    from_version: VersionId
    to_version: VersionId
    reverse: bool = False


class LiveApplyResult(_Contract):
    """The engine serves ``version`` now, patched in memory."""

    success: Literal[True] = True
    version: VersionId
    method: Literal["in-memory"] = "in-memory"
    bytes_applied: int = Field(ge=0)
    changed_elements: int = Field(ge=0)
    pause_s: Seconds  # first request held (or drain's end, if later) -> held ones admitted
    drain_s: Seconds  # gate closed -> no request in flight
    held_s: Seconds  # gate closed -> reopened (drain + write)
    write_s: Seconds  # the scatter itself
    prepare_s: Seconds  # reading and checking the delta, requests still served
    held_requests: int = Field(ge=0)


class LiveApplyRefusal(_Contract):
    """The delta was not applied in memory; ``fallback`` says what the agent does instead."""

    success: Literal[False] = False
    message: str
    fallback: Literal["reload"] = "reload"
    layout_change: bool = False  # the delta changes more than values: in memory is never possible
    old_weights_kept: bool = True


class ServedDigestRequest(_Contract):
    """``POST /served_digest``: hash these tensors as the engine holds them now (all: None)."""

    tensors: list[TensorName] | None = Field(default=None, max_length=100_000)


class ServedDigests(_Contract):
    """BLAKE3 of the named tensors' bytes in the engine's memory, and the version it serves."""

    version: VersionId
    tensors: dict[str, Blake3Hex]


class WeightChange(_Contract):
    """The last version change of a pod: what was applied, how, and what it cost."""

    version: VersionId
    method: ChangeMethod
    bytes_applied: int = Field(ge=0)  # written into the engine's memory (a reload: the model)
    pause_s: Seconds
    drain_s: Seconds = 0.0
    reason: str = Field(default="", max_length=MAX_REASON_CHARS)  # why a reload, when it was

    def encode(self) -> str:
        return self.model_dump_json(exclude_defaults=False)


def parse_weight_change(value: str | None) -> WeightChange | None:
    """The pod annotation's :class:`WeightChange`, or None when absent or unreadable (a pod an
    older agent runs, or a value someone edited: status shows nothing rather than failing)."""
    if not value:
        return None
    try:
        return WeightChange.model_validate_json(value)
    except ValidationError:
        return None


def short_reason(message: str) -> str:
    """One scrubbed line of ``message`` that fits :data:`MAX_REASON_CHARS` (an engine's message
    goes onto a pod annotation whoever reads the pod sees)."""
    line = " ".join(scrub(message).split())
    return line if len(line) <= MAX_REASON_CHARS else line[: MAX_REASON_CHARS - 3] + "..."
