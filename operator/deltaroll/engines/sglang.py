"""The SGLang adapter: ``POST /update_weights_from_disk``.

Request and response shapes are SGLang's (``sglang/srt/entrypoints/http_server.py`` and
``UpdateWeightFromDiskReqInput`` in ``sglang/srt/managers/io_struct.py``)::

    POST /update_weights_from_disk
         {"model_path": str, "load_format": str | null, "abort_all_requests": bool,
          "weight_version": str | null, "flush_cache": bool, ...}
    200  {"success": true,  "message": str, "num_paused_requests": int}
    400  {"success": false, "message": str, "num_paused_requests": int}

We send only ``model_path`` and, when known, ``weight_version`` (every other field keeps SGLang's
default: wait for running requests, flush the radix cache so no KV computed with the old weights
is reused). SGLang reads the whole checkpoint from ``model_path`` and, when loading fails, reloads
the weights it had, so a failed reload leaves the old version serving. ``GET /model_info``
(``/get_model_info`` before SGLang 0.5) reports the ``weight_version`` we set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deltaroll.engines.errors import EngineReloadError
from deltaroll.engines.transport import HEALTH_TIMEOUT_S, EngineHttp


def update_weights_from_disk(http: EngineHttp, model_path: Path, version: str | None) -> None:
    """SGLang's reload (the reference engine answers the same call): ``POST
    /update_weights_from_disk`` and raise :class:`EngineReloadError` unless it reports success."""
    path = str(Path(model_path).resolve())
    body: dict[str, Any] = {"model_path": path}
    if version is not None:
        body["weight_version"] = version
    reply = http.post("/update_weights_from_disk", body)
    success = isinstance(reply.body, dict) and reply.body.get("success") is True
    if not (reply.ok and success):
        raise EngineReloadError(http.endpoint, path, reply.message(), reply.status)


class SGLangEngineClient:
    """Reloads a running SGLang server from a checkpoint directory."""

    kind = "sglang"
    version_is_digest = False

    def __init__(self, endpoint: str, *, timeout: float) -> None:
        self.endpoint = endpoint
        self._http = EngineHttp(endpoint, timeout)

    def health(self) -> bool:
        return self._http.healthy("/health")

    def reload(self, model_path: Path, *, version: str | None = None) -> None:
        update_weights_from_disk(self._http, model_path, version)

    def loaded_version(self) -> str | None:
        for path in ("/model_info", "/get_model_info"):
            reply = self._http.get(path, timeout=HEALTH_TIMEOUT_S)
            if reply.ok and isinstance(reply.body, dict):
                version = reply.body.get("weight_version")
                return str(version) if version is not None else None
        return None
