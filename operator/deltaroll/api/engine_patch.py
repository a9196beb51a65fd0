"""What the agent asks an engine extension to patch in memory, and what every rank answers.

The request is the reference engine's (:class:`~deltaroll.api.weight_change.LiveApplyRequest`).
The agent and the extension in vLLM's workers (``--worker-extension-cls``) or SGLang's
schedulers (``--custom-weight-loader``) are separate processes in separate containers: the
request crosses vLLM's ``/collective_rpc`` as a JSON string (vLLM passes only strings through
it), or SGLang's ``/update_weights_from_tensor`` through a file on the shared volume; each rank's
:class:`PatchResult` comes back in ``/collective_rpc``'s ``results`` or in a file beside the
request. Paths are inside the shared volume, as both containers mount it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

#: The worker-extension method vLLM's ``/collective_rpc`` calls on every worker.
VLLM_METHOD: Final = "deltaroll_patch_in_memory"
#: The worker-extension method that answers :data:`PROTOCOL`, asked before anything pauses.
VLLM_PROBE: Final = "deltaroll_patch_protocol"
#: The version of this contract; an agent patches in memory only through an extension that
#: answers the same number (an engine image built with another Deltaroll reloads instead).
PROTOCOL: Final = 1
#: The import path SGLang's ``--custom-weight-loader`` must list (and the ``load_format`` sent).
SGLANG_LOADER: Final = "deltaroll.engines.extension.sglang_loader.patch_in_memory"
#: Where the SGLang loader finds the pending request (a path on the shared volume).
SGLANG_REQUEST_ENV: Final = "DELTAROLL_PATCH_REQUEST"

Outcome = Literal["applied", "fallback", "failed"]


class PatchResult(BaseModel):
    """One rank's answer to a :class:`~deltaroll.api.weight_change.LiveApplyRequest`.
    ``fallback``: nothing changed and only a reload applies the delta (a layout change, a
    quantized or MoE parameter); the agent reloads from disk and reports ``reason`` in the pod's
    status. ``failed``: nothing changed either (every rank undid its writes) unless
    ``old_weights_kept`` is false; a wrong base or a corrupt delta."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rank: int = Field(ge=0)
    outcome: Outcome
    reason: str = ""
    bytes_applied: int = Field(default=0, ge=0, description="bytes this rank wrote")
    changed_elements: int = Field(default=0, ge=0, description="elements changed, all ranks")
    prepare_s: float = Field(default=0.0, ge=0, description="reading and checking the delta")
    write_s: float = Field(default=0.0, ge=0, description="the scatter and the vote after it")
    seconds: float = Field(default=0.0, ge=0, description="time from request to answer")
    old_weights_kept: bool = Field(
        default=True,
        description="false only when writing failed and restoring the old values failed too: "
        "the rank serves a mix, and the agent must reload a known version",
    )


#: The worker-extension method that hashes checkpoint tensors as the ranks hold them now.
VLLM_DIGESTS: Final = "deltaroll_served_digests"


class HeldTensor(BaseModel):
    """A checkpoint tensor to hash as the ranks hold it: its name, and the dtype and shape the
    served checkpoint gives it (a rank needs them to place its slice; a wrong one only makes a
    digest that matches nothing)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=1024)
    dtype: str = Field(min_length=1, max_length=16)
    shape: list[Annotated[int, Field(ge=1)]] = Field(max_length=8)


class RankDigestRequest(BaseModel):
    """What the agent asks every rank to hash (a few tensors at a time, in rotation)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tensors: list[HeldTensor] = Field(min_length=1, max_length=256)


class RankDigests(BaseModel):
    """One rank's answer: BLAKE3 of each whole checkpoint tensor, gathered from every rank's
    slice (so every rank answers the same), or ``retry_after_s`` > 0 when rate-limited (nothing
    hashed), or ``unhashable`` tensors with the reason (MoE experts, quantized parameters)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rank: int = Field(ge=0)
    digests: dict[str, str] = Field(default_factory=dict)
    unhashable: dict[str, str] = Field(default_factory=dict)
    #: Tensors whose replicated elements differ between ranks (what is served is no version).
    replicas_differ: list[str] = Field(default_factory=list)
    retry_after_s: float = Field(default=0.0, ge=0)


def rank_answer_path(request_path: Path, rank: int) -> Path:
    """Where rank ``rank`` of an SGLang engine answers the request in ``request_path``."""
    return request_path.with_name(f"{request_path.name}.rank{rank}.json")
