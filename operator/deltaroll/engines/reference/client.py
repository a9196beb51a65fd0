"""The agent's side of the reference engine: reload, health, and the version it holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deltaroll.engines.errors import EngineReloadError
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

    def loaded_version(self) -> str | None:
        return str(self.weights_checksum()["version"])

    def weights_checksum(self) -> dict[str, Any]:
        """``{"version", "model_path", "tensors": {name: {dtype, shape, digest}}}``."""
        reply = self._http.get("/weights_checksum", timeout=max(HEALTH_TIMEOUT_S, 60.0))
        if not (reply.ok and isinstance(reply.body, dict)):
            raise EngineReloadError(self.endpoint, "-", reply.message(), reply.status)
        return reply.body
