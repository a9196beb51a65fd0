"""The agent's side of the reference engine: reload, apply a delta in memory, health, the
version it holds and the digests of what it holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deltaroll.api.weight_change import (
    LiveApplyRefusal,
    LiveApplyRequest,
    LiveApplyResult,
    ServedDigestRequest,
    ServedDigests,
)
from deltaroll.engines.errors import EngineReloadError, LayoutChangeError, LivePatchError
from deltaroll.engines.sglang import update_weights_from_disk
from deltaroll.engines.transport import HEALTH_TIMEOUT_S, EngineHttp


class ReferenceEngineClient:
    """Talks to ``python -m deltaroll.engines.reference`` (or ``deltaroll engine serve``)."""

    kind = "reference"
    version_is_digest = True

    def __init__(self, endpoint: str, *, timeout: float) -> None:
        self.endpoint = endpoint
        self._http = EngineHttp(endpoint, timeout)

    def health(self) -> bool:
        return self._http.healthy("/health")

    def reload(self, model_path: Path, *, version: str | None = None) -> None:
        """Reload; with ``version`` the engine refuses weights that do not hash to it."""
        update_weights_from_disk(self._http, model_path, version)

    def apply_delta(
        self, delta_dir: Path, *, from_version: str, to_version: str, reverse: bool = False
    ) -> LiveApplyResult:
        """Have the engine patch its weights in memory; raises :class:`LivePatchError`
        (:class:`LayoutChangeError` when only a reload can apply the delta)."""
        request = LiveApplyRequest(
            delta_path=str(Path(delta_dir).absolute()),
            from_version=from_version,
            to_version=to_version,
            reverse=reverse,
        )
        reply = self._http.post("/apply_delta", request.model_dump())
        if reply.ok:
            return LiveApplyResult.model_validate(reply.body)
        if reply.status == 409 and isinstance(reply.body, dict):
            refusal = LiveApplyRefusal.model_validate(reply.body)
            error = LayoutChangeError if refusal.layout_change else LivePatchError
            raise error(refusal.message, old_weights_kept=refusal.old_weights_kept)
        raise EngineReloadError(self.endpoint, str(delta_dir), reply.message(), reply.status)

    def served_digests(
        self, tensors: list[str] | None = None, *, checkpoint: Path | None = None
    ) -> ServedDigests | None:
        """Digests of ``tensors`` (all: None) as the engine holds them now; None when the
        engine asks to be asked later (rate-limited). The engine holds whole checkpoint
        tensors, so it needs nothing from ``checkpoint``."""
        request = ServedDigestRequest(tensors=tensors)
        reply = self._http.post("/served_digest", request.model_dump())
        if reply.status == 429:
            return None
        if not (reply.ok and isinstance(reply.body, dict)):
            raise EngineReloadError(self.endpoint, "-", reply.message(), reply.status)
        return ServedDigests.model_validate(reply.body)

    def loaded_version(self) -> str | None:
        return str(self.weights_checksum()["version"])

    def weights_checksum(self) -> dict[str, Any]:
        """``{"version", "model_path", "tensors": {name: {dtype, shape, digest}}}``."""
        reply = self._http.get("/weights_checksum", timeout=max(HEALTH_TIMEOUT_S, 60.0))
        if not (reply.ok and isinstance(reply.body, dict)):
            raise EngineReloadError(self.endpoint, "-", reply.message(), reply.status)
        return reply.body
