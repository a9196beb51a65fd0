"""The vLLM adapter: the weight-transfer API's ``disk`` backend, else ``collective_rpc``.

Shapes come from vLLM's own sources and docs: ``docs/training/weight_transfer/README.md`` (the
endpoint table), ``docs/training/weight_transfer/disk.md`` (the disk backend),
``vllm/entrypoints/serve/dev/rlhf/api_router.py`` (request bodies),
``vllm/distributed/weight_transfer/disk_engine.py`` (``update_info = {"path": <absolute dir>}``),
``vllm/entrypoints/serve/dev/rpc/api_router.py`` (``/collective_rpc``) and
``vllm/entrypoints/serve/dev/cache/api_router.py`` (``/reset_prefix_cache``). All of them exist
only with ``VLLM_SERVER_DEV_MODE=1``; the disk backend needs
``--weight-transfer-config '{"backend": "disk"}'``. One reload is::

    POST /pause?mode=wait                          let running requests finish, hold new ones
    POST /init_weight_transfer_engine {"init_info": {}}         a no-op for the disk backend
    POST /start_weight_update                                   (no body)
    POST /update_weights {"update_info": {"path": "/abs/checkpoint/dir"}}
    POST /finish_weight_update {"weight_version": "<version>"}  (no body without a version)
    POST /reset_prefix_cache?reset_running_requests=true        no KV from the old weights
    POST /resume                                                always, also after a failure

Errors come back as ``{"error": {"message", "type", "code"}}`` (4xx/5xx). When the weight-transfer
routes are missing (404: an older vLLM) or the server was not started with the disk backend (init
fails), the adapter falls back to ``POST /collective_rpc {"method": "reload_weights"}``, which
re-reads the directory vLLM was launched on; it therefore refuses a ``model_path`` other than
that directory (``GET /v1/models`` → ``root``), which is what the agent's in-place apply gives.

Sparse in place: vLLM applies sparse, flat-index patches in place only through its
``sparse_nccl`` backend, which needs the sender to join an NCCL process group with the vLLM
workers on the GPU; it cannot be driven over HTTP from a sidecar, so this adapter does not use
it. Both paths here re-read the (already patched) checkpoint from the pod's local volume: disk
bandwidth, no network. vLLM's reload is not transactional ("weights loaded before an error may
already have been applied"), so a failure after loading began is reported with
``old_weights_kept=False``. ``GET /weight_info`` reports the ``weight_version`` we committed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog

from deltaroll.engines.errors import EngineReloadError, EngineUnreachableError
from deltaroll.engines.transport import HEALTH_TIMEOUT_S, EngineHttp, HttpReply

log = structlog.get_logger(__name__)


class VLLMEngineClient:
    """Reloads a running vLLM server (``VLLM_SERVER_DEV_MODE=1``) from a checkpoint directory."""

    kind = "vllm"

    def __init__(self, endpoint: str, *, timeout: float) -> None:
        self.endpoint = endpoint
        self._http = EngineHttp(endpoint, timeout)

    def health(self) -> bool:
        return self._http.healthy("/health")

    def loaded_version(self) -> str | None:
        reply = self._http.get("/weight_info", timeout=HEALTH_TIMEOUT_S)
        if reply.ok and isinstance(reply.body, dict) and reply.body.get("weight_version"):
            return str(reply.body["weight_version"])
        return None

    def reload(self, model_path: Path, *, version: str | None = None) -> None:
        """Pause, load ``model_path``, drop cached prefixes, resume (see the module docstring)."""
        path = str(Path(model_path).resolve())
        paused = self._http.post("/pause?mode=wait").ok
        try:
            init = self._http.post("/init_weight_transfer_engine", {"init_info": {}})
            if init.ok:
                self._reload_through_weight_transfer(path, version)
            else:
                log.info(
                    "vllm weight transfer unavailable, falling back to collective_rpc",
                    endpoint=self.endpoint,
                    status=init.status,
                    reason=init.message(),
                )
                self._reload_through_collective_rpc(path)
            self._http.post("/reset_prefix_cache?reset_running_requests=true")
        finally:
            if paused:
                self._resume()

    def _resume(self) -> None:
        """Resume generation; never raises, so it cannot hide why a reload failed."""
        try:
            reply = self._http.post("/resume")
        except EngineUnreachableError as exc:
            log.error("vllm did not resume", endpoint=self.endpoint, reason=exc.reason)
            return
        if not reply.ok:
            log.error("vllm did not resume", endpoint=self.endpoint, reason=reply.message())

    def _reload_through_weight_transfer(self, path: str, version: str | None) -> None:
        self._expect(self._http.post("/start_weight_update"), path, old_weights_kept=True)
        update = self._http.post("/update_weights", {"update_info": {"path": path}})
        self._expect(update, path, old_weights_kept=False)
        finish_body: dict[str, Any] | None = (
            {"weight_version": version} if version is not None else None
        )
        self._expect(
            self._http.post("/finish_weight_update", finish_body), path, old_weights_kept=False
        )

    def _reload_through_collective_rpc(self, path: str) -> None:
        served = self._served_directory()
        if served is not None and served != path:
            raise EngineReloadError(
                self.endpoint,
                path,
                f"vLLM can only re-read the directory it was launched on ({served}) without the "
                "disk weight-transfer backend: patch that directory in place, or start vLLM with "
                'VLLM_SERVER_DEV_MODE=1 --weight-transfer-config \'{"backend": "disk"}\'',
                409,
            )
        rpc = self._http.post("/collective_rpc", {"method": "reload_weights"})
        if rpc.status == 404:
            raise EngineReloadError(
                self.endpoint,
                path,
                "vLLM exposes no weight-reload endpoint: start it with VLLM_SERVER_DEV_MODE=1 "
                '(and --weight-transfer-config \'{"backend": "disk"}\')',
                404,
            )
        self._expect(rpc, path, old_weights_kept=False)

    def _served_directory(self) -> str | None:
        reply = self._http.get("/v1/models", timeout=HEALTH_TIMEOUT_S)
        if not (reply.ok and isinstance(reply.body, dict)):
            return None
        for model in reply.body.get("data") or []:
            root = model.get("root") if isinstance(model, dict) else None
            if isinstance(root, str) and root.startswith("/"):
                return str(Path(root).resolve())
        return None

    def _expect(self, reply: HttpReply, path: str, *, old_weights_kept: bool) -> None:
        if not reply.ok:
            raise EngineReloadError(
                self.endpoint,
                path,
                reply.message(),
                reply.status,
                old_weights_kept=old_weights_kept,
            )
