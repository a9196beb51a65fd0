"""The vLLM adapter: the weight-transfer API's ``disk`` backend, else ``collective_rpc``.

Shapes come from vLLM's own sources and docs: ``docs/training/weight_transfer/README.md`` (the
endpoint table), ``docs/training/weight_transfer/disk.md`` (the disk backend),
``vllm/entrypoints/serve/dev/rlhf/api_router.py`` (request bodies; in 0.34:
``vllm/entrypoints/rl/online/api_router.py``),
``vllm/distributed/weight_transfer/disk_engine.py`` (``update_info = {"path": <absolute dir>}``),
``vllm/entrypoints/serve/dev/server_info/api_router.py`` (``/server_info``),
``vllm/entrypoints/serve/dev/rpc/api_router.py`` (``/collective_rpc``) and
``vllm/entrypoints/serve/dev/cache/api_router.py`` (``/reset_prefix_cache``). All of them exist
only with ``VLLM_SERVER_DEV_MODE=1``, and version tags from vLLM 0.27.0 (vllm-project/vllm#49040;
checked against the 0.26.0 and 0.27.0 wheels). The disk backend (vllm-project/vllm#52152, in no
release up to 0.34.0) needs ``--weight-transfer-config '{"backend": "disk"}'``. One reload is::

    POST /pause?mode=wait                          let running requests finish, hold new ones
    GET  /server_info?config_format=json           vllm_config.weight_transfer_config.backend
    POST /init_weight_transfer_engine {"init_info": {}}         a no-op for the disk backend
    POST /start_weight_update                                   (no body)
    POST /update_weights {"update_info": {"path": "/abs/checkpoint/dir"}}
    POST /finish_weight_update {"weight_version": "<version>"}  (no body without a version)
    POST /reset_prefix_cache?reset_running_requests=true        no KV from the old weights
    POST /resume                                                always, also after a failure

The backend is read from the server's configuration before any update starts: an empty
``init_info`` is also a valid init for the ``ipc`` backend (``IPCWeightTransferInitInfo`` has
only defaulted fields), whose start wraps the model for a layerwise reload that a failed update
leaves in place (vLLM's Worker ends a session whose update failed, so no finish comes). Only
without ``/server_info`` does the update's own error tell: another backend refuses the path as
"Invalid update_info for <Its>WeightTransferEngine", and the adapter falls back as below. A
started update is always ended, as in a ``try``/``finally``: when the update does not succeed
(an error, or no answer), the adapter posts ``/finish_weight_update`` without a version, which
ends a session still open and keeps the version (vLLM has no abort); a session vLLM already
ended makes it refuse that finish, which is logged, and the update's error is the one raised.

Errors come back as ``{"error": {"message", "type", "code"}}`` (4xx/5xx). When the weight-transfer
routes are missing (404: an older vLLM), the server runs another backend, or init fails, the
adapter falls back to ``POST /collective_rpc {"method": "reload_weights"}``, which re-reads the
directory vLLM was launched on; it therefore refuses a ``model_path`` other than that directory
(``GET /v1/models`` → ``root``), which is what the agent's in-place apply gives. It then sets
the version with ``POST /update_weight_version {"new_version": ...}``, which the disk path sets at
finish, so ``GET /weight_info`` reports the ``weight_version`` we committed on both paths.

In memory (:meth:`VLLMEngineClient.apply_delta`): vLLM applies sparse, flat-index patches in
place only through its ``sparse_nccl`` backend, whose sender must join an NCCL group with the
workers on the GPU; a sidecar cannot. So the workers patch themselves: started with
``--worker-extension-cls deltaroll.engines.extension.vllm_worker.DeltarollWorkerExtension``
(vLLM >= 0.8.3 on the V1 engine, ``/collective_rpc`` with ``VLLM_SERVER_DEV_MODE=1``), each
worker reads the delta from the shared volume and scatters its slice::

    POST /collective_rpc {"method": "deltaroll_patch_protocol"}   {"results": [1, ...]}
    POST /pause?mode=wait                                 hold new requests, drain running ones
                                                          (refused: nothing is patched, reload)
    POST /collective_rpc {"method": "deltaroll_patch_in_memory",
                          "kwargs": {"request": "<LiveApplyRequest as JSON>"}}
    200  {"results": [<PatchResult of rank 0>, ...]}      (vLLM passes only strings as kwargs)
    POST /update_weight_version {"new_version": ...}      once every rank applied it
    POST /reset_prefix_cache?reset_running_requests=true
    POST /resume                                          always

The agent's check of what is served asks the same workers, without a pause (the engine core runs
it between two steps; the extension keeps it to 10 % of the time)::

    POST /collective_rpc {"method": "deltaroll_served_digests",
                          "kwargs": {"request": "<RankDigestRequest as JSON>"}}
    200  {"results": [<RankDigests of rank 0>, ...]}      (every rank: the same digests)

The engine core runs a ``collective_rpc`` between two steps, so reading and checking the delta
(``prepare_s``) is inside the pause along with the scatter (``write_s``). A rank that cannot
apply the delta leaves every rank's weights as they were, and the agent reloads from disk as
below; a vLLM without the extension (``'Worker' object has no attribute``) or with another
version of it is found by the first call, before anything pauses. The reloads
re-read the (already patched) checkpoint from the pod's local volume: disk bandwidth, no
network. vLLM's reload is not transactional ("weights loaded before an error may
already have been applied"), so a failure after loading began is reported with
``old_weights_kept=False``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError

from deltaroll.api.engine_patch import (
    PROTOCOL,
    VLLM_DIGESTS,
    VLLM_METHOD,
    VLLM_PROBE,
    HeldTensor,
    RankDigestRequest,
)
from deltaroll.api.weight_change import LiveApplyRequest, LiveApplyResult, ServedDigests
from deltaroll.engines.errors import (
    EngineReloadError,
    EngineUnreachableError,
    LivePatchError,
)
from deltaroll.engines.rank_answers import agreed_digests, combined, parse_answers, parse_digests
from deltaroll.engines.transport import HEALTH_TIMEOUT_S, EngineHttp, HttpReply

log = structlog.get_logger(__name__)

DISK = "disk"
UNKNOWN = "unknown"  # the server does not say which backend it runs


class VLLMEngineClient:
    """Reloads a running vLLM server (``VLLM_SERVER_DEV_MODE=1``) from a checkpoint directory."""

    kind = "vllm"
    version_is_digest = False

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
            if not (self._disk_backend_ready() and self._reload_from_disk(path, version)):
                self._reload_through_collective_rpc(path, version)
            self._http.post("/reset_prefix_cache?reset_running_requests=true")
        finally:
            if paused:
                self._post_without_raising("/resume", "vllm did not resume")

    def apply_delta(
        self, delta_dir: Path, *, from_version: str, to_version: str, reverse: bool = False
    ) -> LiveApplyResult:
        """Every worker scatters the delta into its parameters (see the module docstring);
        LivePatchError or LayoutChangeError when it did not, the old weights served."""
        request = LiveApplyRequest(
            delta_path=str(Path(delta_dir).resolve()),
            from_version=from_version,
            to_version=to_version,
            reverse=reverse,
        )
        self._check_extension()
        started = time.perf_counter()
        self._pause_for(request.delta_path)
        drained = time.perf_counter()
        try:
            rpc = self._http.post(
                "/collective_rpc",
                {"method": VLLM_METHOD, "kwargs": {"request": request.model_dump_json()}},
            )
            if not rpc.ok:
                raise LivePatchError(
                    f"vLLM at {self.endpoint} failed to run the Deltaroll extension (HTTP "
                    f"{rpc.status}): {rpc.message()}"
                )
            body = rpc.body if isinstance(rpc.body, dict) else {}
            answers = parse_answers(body.get("results"))
            if all(a.outcome == "applied" for a in answers):
                self._expect(
                    self._http.post("/update_weight_version", {"new_version": to_version}),
                    request.delta_path,
                    old_weights_kept=False,
                )
                self._http.post("/reset_prefix_cache?reset_running_requests=true")
        finally:
            self._post_without_raising("/resume", "vllm did not resume")
        held = time.perf_counter() - started
        return combined(answers, to_version, pause_s=held, drain_s=drained - started)

    def _pause_for(self, delta_path: str) -> None:
        """Hold new requests and drain running ones, or raise :class:`LivePatchError` with
        nothing changed: a patch while requests run would give them a mix of versions. A refused
        pause is followed by a resume, in case the engine paused before it failed."""
        reply = self._http.post("/pause?mode=wait")
        if reply.ok:
            return
        self._post_without_raising("/resume", "vllm did not resume")
        raise LivePatchError(
            f"vLLM at {self.endpoint} did not pause (HTTP {reply.status}: {reply.message()}), so "
            f"the delta in {delta_path} was not applied in memory; its weights are unchanged"
        )

    def _check_extension(self) -> None:
        """Refuse, before vLLM is paused, when its workers lack the extension or speak another
        version of its contract."""
        reply = self._http.post("/collective_rpc", {"method": VLLM_PROBE})
        body = reply.body if isinstance(reply.body, dict) else {}
        answers = body.get("results") if reply.ok else None
        if not (isinstance(answers, list) and answers and all(a == PROTOCOL for a in answers)):
            raise LivePatchError(
                f"vLLM at {self.endpoint} has no Deltaroll extension speaking protocol "
                f"{PROTOCOL} ({reply.message() if not reply.ok else answers}): start it with "
                "VLLM_SERVER_DEV_MODE=1 and --worker-extension-cls "
                "deltaroll.engines.extension.vllm_worker.DeltarollWorkerExtension from an image "
                "with this Deltaroll version"
            )

    def served_digests(
        self, tensors: list[str] | None = None, *, checkpoint: Path
    ) -> ServedDigests | None:
        """Digests of ``tensors`` (all: None) as the workers hold them, each gathered from
        every rank's slice by the extension; None when the workers ask to be asked later.

        The dtype and shape a rank needs to place a tensor come from the headers of
        ``checkpoint``, the agent's own weights, never from a directory vLLM names (what the
        engine's container says is not trusted for being there). A tensor whose replicas
        differ gets :data:`REPLICAS_DIFFER`, which no version's digest is; one the workers
        cannot hash (MoE experts, quantized) makes the whole check an error."""
        from deltaroll.checkpoint import open_checkpoint

        refs = open_checkpoint(Path(checkpoint)).tensors
        names = sorted(refs) if tensors is None else tensors
        unknown = [n for n in names if n not in refs]
        if unknown:
            raise LivePatchError(f"the checkpoint in {checkpoint} has no tensor {unknown[0]!r}")
        request = RankDigestRequest(
            tensors=[
                HeldTensor(name=n, dtype=refs[n].dtype, shape=list(refs[n].shape)) for n in names
            ]
        )
        reply = self._http.post(
            "/collective_rpc",
            {"method": VLLM_DIGESTS, "kwargs": {"request": request.model_dump_json()}},
        )
        if not (reply.ok and isinstance(reply.body, dict)):
            raise LivePatchError(
                f"vLLM at {self.endpoint} did not hash its tensors (HTTP {reply.status}): "
                f"{reply.message()}"
            )
        answers = parse_digests(reply.body.get("results"))
        if any(a.retry_after_s > 0 for a in answers):
            return None
        version = self.loaded_version()
        try:
            return ServedDigests(version=version or "", tensors=agreed_digests(answers))
        except ValidationError as exc:
            raise LivePatchError(
                f"vLLM at {self.endpoint} serves weight version {version!r}, not one Deltaroll set"
            ) from exc

    def _post_without_raising(self, path: str, failure: str) -> None:
        """POST ``path``, logging a failure instead of raising it, so it cannot hide why a
        reload failed."""
        try:
            reply = self._http.post(path)
        except EngineUnreachableError as exc:
            log.error(failure, endpoint=self.endpoint, reason=exc.reason)
            return
        if not reply.ok:
            log.error(failure, endpoint=self.endpoint, reason=reply.message())

    def _disk_backend_ready(self) -> bool:
        """Whether the server runs the disk backend (as far as its configuration says) and
        initialised it."""
        backend = self._configured_backend()
        if backend not in (DISK, UNKNOWN):
            log.info(
                "vllm runs another weight-transfer backend, using collective_rpc",
                endpoint=self.endpoint,
                backend=backend,
            )
            return False
        init = self._http.post("/init_weight_transfer_engine", {"init_info": {}})
        if not init.ok:
            log.info(
                "vllm weight transfer unavailable, falling back to collective_rpc",
                endpoint=self.endpoint,
                status=init.status,
                reason=init.message(),
            )
        return init.ok

    def _configured_backend(self) -> str | None:
        """``weight_transfer_config.backend`` from the dev-mode server info: None when none is
        configured, :data:`UNKNOWN` when the server does not say."""
        reply = self._http.get("/server_info?config_format=json", timeout=HEALTH_TIMEOUT_S)
        config = reply.body.get("vllm_config") if isinstance(reply.body, dict) else None
        if not (reply.ok and isinstance(config, dict)):
            return UNKNOWN
        transfer = config.get("weight_transfer_config")
        return str(transfer.get("backend")) if isinstance(transfer, dict) else None

    def _reload_from_disk(self, path: str, version: str | None) -> bool:
        """One start/update/finish session; False if the server's backend is not disk after
        all (the update refused a path as another backend's update info)."""
        self._expect(self._http.post("/start_weight_update"), path, old_weights_kept=True)
        update: HttpReply | None = None
        try:
            update = self._http.post("/update_weights", {"update_info": {"path": path}})
        finally:
            if update is None or not update.ok:
                # vLLM has no abort: finish without a version ends the session, keeps the version
                self._post_without_raising("/finish_weight_update", "vllm update not finished")
        if not update.ok and _another_backend(update):
            log.info(
                "vllm runs another weight-transfer backend, using collective_rpc",
                endpoint=self.endpoint,
                reason=update.message(),
            )
            return False
        self._expect(update, path, old_weights_kept=False)
        finish_body: dict[str, Any] | None = (
            {"weight_version": version} if version is not None else None
        )
        self._expect(
            self._http.post("/finish_weight_update", finish_body), path, old_weights_kept=False
        )
        return True

    def _reload_through_collective_rpc(self, path: str, version: str | None) -> None:
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
        if version is not None:
            self._set_version(path, version)

    def _set_version(self, path: str, version: str) -> None:
        """Tag the reloaded weights, as finish does on the disk path; a vLLM without version
        tags (404) reports none, which the agent accepts."""
        reply = self._http.post("/update_weight_version", {"new_version": version})
        if reply.status == 404:
            log.info("vllm keeps no weight version", endpoint=self.endpoint)
            return
        self._expect(reply, path, old_weights_kept=False)

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


def _another_backend(reply: HttpReply) -> bool:
    """A backend's update-info parser refusing the disk backend's ``{"path": ...}``
    (``WeightTransferEngine.parse_update_info``)."""
    message = reply.message()
    return "Invalid update_info for" in message and "DiskWeightTransferEngine" not in message
