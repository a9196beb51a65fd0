"""What the agent calls: one small protocol over every inference engine, and a factory by kind.

The agent never knows which server runs next to it; the pod spec names the kind and the endpoint
(``engine_client("vllm", "http://127.0.0.1:8000")``). Every method blocks; call it through
``asyncio.to_thread`` from async code. A reload is all-or-nothing from the agent's point of view:
it returns only when the engine serves the new weights, and raises otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from deltaroll.api.weight_change import LiveApplyResult, ServedDigests
from deltaroll.engines.errors import EngineConfigError
from deltaroll.engines.transport import normalize_endpoint

ENGINE_KINDS: tuple[str, ...] = ("reference", "sglang", "vllm")

#: A reload re-reads the whole checkpoint from the pod's volume; large models take minutes.
DEFAULT_RELOAD_TIMEOUT_S = 900.0


@runtime_checkable
class EngineClient(Protocol):
    """An inference engine as the agent sees it."""

    kind: str
    endpoint: str
    version_is_digest: bool
    """True when :meth:`loaded_version` is computed from the weights the engine holds (the
    reference engine); False when it is a label whoever calls the admin routes sets (vLLM's and
    SGLang's ``weight_version``), which the agent trusts only when it set it itself."""

    def health(self) -> bool:
        """True when the engine answers its health check; never raises."""
        ...

    def reload(self, model_path: Path, *, version: str | None = None) -> None:
        """Make the engine serve the weights in ``model_path`` (a safetensors checkpoint dir).

        ``version`` is Deltaroll's version id of those weights; engines that keep a weight-version
        label get it, the reference engine refuses weights that do not hash to it. Raises
        :class:`~deltaroll.engines.errors.EngineReloadError` with the engine's message when the
        engine refuses, :class:`~deltaroll.engines.errors.EngineUnreachableError` when it does not
        answer.
        """
        ...

    def loaded_version(self) -> str | None:
        """The version the engine says it serves, or None when it cannot tell.

        The reference engine hashes the tensors it holds; SGLang and vLLM report the
        ``weight_version`` label the last reload set. Raises ``EngineUnreachableError``.
        """
        ...


@runtime_checkable
class LivePatchingEngine(EngineClient, Protocol):
    """An engine that applies a verified delta to its weights in memory, and hashes what it
    holds on request (the reference engine; the vLLM and SGLang extensions to come)."""

    def apply_delta(
        self, delta_dir: Path, *, from_version: str, to_version: str, reverse: bool = False
    ) -> LiveApplyResult:
        """Patch the served weights in memory from ``from_version`` to ``to_version``; raises
        :class:`~deltaroll.engines.errors.LivePatchError` (the old weights served, unless its
        ``old_weights_kept`` is false) or its :class:`LayoutChangeError` when only a reload
        can apply the delta."""
        ...

    def served_digests(
        self, tensors: list[str] | None = None, *, checkpoint: Path
    ) -> ServedDigests | None:
        """The digests of ``tensors`` (all: None) as held now; None when rate-limited.
        ``checkpoint`` is the agent's weights directory, where an engine that holds slices of
        tensors finds their dtypes and shapes (never in a directory the engine names)."""
        ...


def engine_client(
    kind: str, endpoint: str, *, timeout: float = DEFAULT_RELOAD_TIMEOUT_S
) -> EngineClient:
    """The adapter for ``kind`` talking to ``endpoint`` (e.g. ``http://127.0.0.1:8000``)."""
    url = normalize_endpoint(endpoint)
    if kind == "reference":
        from deltaroll.engines.reference.client import ReferenceEngineClient

        return ReferenceEngineClient(url, timeout=timeout)
    if kind == "sglang":
        from deltaroll.engines.sglang import SGLangEngineClient

        return SGLangEngineClient(url, timeout=timeout)
    if kind == "vllm":
        from deltaroll.engines.vllm import VLLMEngineClient

        return VLLMEngineClient(url, timeout=timeout)
    raise EngineConfigError(f"unknown engine kind {kind!r}: use one of {', '.join(ENGINE_KINDS)}")
