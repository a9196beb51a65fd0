"""What the agent asks an engine extension to patch in memory, and what every rank answers.

The agent and the extension in vLLM's workers (``--worker-extension-cls``) or SGLang's
schedulers (``--custom-weight-loader``) are separate processes in separate containers: the
request crosses vLLM's ``/collective_rpc`` as a JSON string (vLLM passes only strings through
it), or SGLang's ``/update_weights_from_tensor`` through a file on the shared volume; each rank's
answer comes back in ``/collective_rpc``'s ``results`` or in a file beside the request. Paths
are inside the shared volume, as both containers mount it.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

#: The worker-extension method vLLM's ``/collective_rpc`` calls on every worker.
VLLM_METHOD: Final = "deltaroll_patch_in_memory"
#: The import path SGLang's ``--custom-weight-loader`` must list (and the ``load_format`` sent).
SGLANG_LOADER: Final = "deltaroll.engines.extension.sglang_loader.patch_in_memory"
#: Where the SGLang loader finds the pending request (a path on the shared volume).
SGLANG_REQUEST_ENV: Final = "DELTAROLL_PATCH_REQUEST"

Outcome = Literal["applied", "fallback", "failed"]


class PatchRequest(BaseModel):
    """One delta to scatter into the served weights."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    delta_dir: str = Field(
        description="absolute path of the delta directory (manifest.json.zst, objects/) on the "
        "shared volume; the agent verified it, the extension checks it again"
    )
    base_version: str = Field(description="the version the engine must serve now")
    target_version: str = Field(description="the version the engine serves once patched")
    request_id: str = Field(
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="names the answer files of SGLang's loader; echoed in every answer",
    )


class PatchResult(BaseModel):
    """One rank's answer. ``fallback``: nothing changed, the agent reloads from disk and reports
    ``reason`` in the pod's status; ``failed``: nothing changed either (every rank undid its
    writes), for a reason a reload will not fix by itself (a wrong base, a corrupt delta)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: str
    rank: int = Field(ge=0)
    outcome: Outcome
    reason: str = ""
    tensors: int = Field(default=0, ge=0, description="tensors this rank patched")
    elements: int = Field(default=0, ge=0, description="elements this rank wrote")
    bytes_applied: int = Field(default=0, ge=0, description="bytes this rank wrote")
    seconds: float = Field(default=0.0, ge=0, description="time from request to answer")
    old_weights_kept: bool = Field(
        default=True,
        description="false only when writing failed and restoring the old values failed too: "
        "the rank serves a mix, and the agent must reload a known version",
    )
