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

In memory (:meth:`SGLangEngineClient.apply_delta`): SGLang (>= 0.4.9) started with
``--custom-weight-loader deltaroll.engines.extension.sglang_loader.patch_in_memory`` and
``DELTAROLL_PATCH_REQUEST`` (a file on the shared volume; the agent's container gets the same
variable) runs that loader in every scheduler when asked to load tensors in that format::

    GET  /server_info (/get_server_info before 0.5)      {"tp_size": N, "pp_size": M,
                                                          "custom_weight_loader": [...], ...}
    write the LiveApplyRequest to $DELTAROLL_PATCH_REQUEST
    POST /update_weights_from_tensor
         {"serialized_named_tensors": [<an empty list, serialized>] * tp_size,
          "load_format": "deltaroll.engines.extension.sglang_loader.patch_in_memory",
          "flush_cache": true}
    200  {"success": true, "message": "Success"}         (whatever the loader did)
    read each rank's PatchResult from $DELTAROLL_PATCH_REQUEST.rank<N>.json
    POST /update_weight_version {"new_version": ...}     once every rank applied it

The tokenizer manager holds new requests and waits for running ones (its ``model_update_lock``),
as for a reload. SGLang answers success whenever the loader returns, so the ranks' answers come
from the volume and the version label is set only after all of them applied the delta.
``serialized_named_tensors`` is what SGLang's ``MultiprocessingSerializer`` makes of ``[]``: a
fixed base64 string, not built here with pickle; the delta itself never travels through it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Final

from deltaroll.api.engine_patch import (
    SGLANG_LOADER,
    SGLANG_REQUEST_ENV,
    PatchResult,
    rank_answer_path,
)
from deltaroll.api.weight_change import LiveApplyRequest, LiveApplyResult, ServedDigests
from deltaroll.checkpoint.staging import write_file_atomically
from deltaroll.engines.errors import EngineReloadError, LivePatchError
from deltaroll.engines.rank_answers import combined, parse_answers
from deltaroll.engines.transport import HEALTH_TIMEOUT_S, EngineHttp

#: base64 of Python's pickle of an empty list (protocol 5), as SGLang's serializer writes it.
EMPTY_TENSOR_LIST: Final = "gAVdlC4="


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

    def apply_delta(
        self, delta_dir: Path, *, from_version: str, to_version: str, reverse: bool = False
    ) -> LiveApplyResult:
        """Every scheduler scatters the delta into its parameters (see the module docstring);
        LivePatchError or LayoutChangeError when it did not, the old weights served."""
        request_file = _request_file()
        request = LiveApplyRequest(
            delta_path=str(Path(delta_dir).resolve()),
            from_version=from_version,
            to_version=to_version,
            reverse=reverse,
        )
        tp_size, ranks = self._parallel_sizes()
        answer_files = [rank_answer_path(request_file, r) for r in range(ranks)]
        for stale in answer_files:
            stale.unlink(missing_ok=True)
        write_file_atomically(request_file, request.model_dump_json().encode(), durable=False)
        started = time.perf_counter()
        reply = self._http.post(
            "/update_weights_from_tensor",
            {
                "serialized_named_tensors": [EMPTY_TENSOR_LIST] * tp_size,
                "load_format": SGLANG_LOADER,
                "flush_cache": True,
            },
        )
        held = time.perf_counter() - started
        success = isinstance(reply.body, dict) and reply.body.get("success") is True
        if not (reply.ok and success):
            raise LivePatchError(
                f"SGLang at {self.endpoint} did not run the Deltaroll loader (HTTP {reply.status}: "
                f"{reply.message()}): start it with --custom-weight-loader {SGLANG_LOADER}"
            )
        answers = parse_answers([_answer(path) for path in answer_files], ranks)
        if all(a.outcome == "applied" for a in answers):
            version = self._http.post("/update_weight_version", {"new_version": to_version})
            if not version.ok:
                raise LivePatchError(
                    f"SGLang applied the delta but refused its version label: {version.message()}",
                    old_weights_kept=False,
                )
        return combined(answers, to_version, pause_s=held, drain_s=0.0)

    def served_digests(
        self, tensors: list[str] | None = None, *, checkpoint: Path | None = None
    ) -> ServedDigests | None:
        """SGLang's schedulers hold slices of fused tensors; the loader offers no digest of the
        checkpoint's tensors (None)."""
        return None

    def _parallel_sizes(self) -> tuple[int, int]:
        """(tensor-parallel size, ranks in all) from the server's arguments, once they show
        that the loader is allowed (nothing is written or paused otherwise)."""
        for path in ("/server_info", "/get_server_info"):
            reply = self._http.get(path, timeout=HEALTH_TIMEOUT_S)
            if not (reply.ok and isinstance(reply.body, dict)):
                continue
            if SGLANG_LOADER not in (reply.body.get("custom_weight_loader") or []):
                raise LivePatchError(
                    f"SGLang at {self.endpoint} does not allow the Deltaroll loader: start it "
                    f"with --custom-weight-loader {SGLANG_LOADER} from an image with this "
                    "Deltaroll version"
                )
            tp, pp = reply.body.get("tp_size", 1), reply.body.get("pp_size", 1)
            if isinstance(tp, int) and isinstance(pp, int) and 0 < tp * pp <= 4096:
                return tp, tp * pp
        raise LivePatchError(f"SGLang at {self.endpoint} does not say its tp_size (/server_info)")

    def loaded_version(self) -> str | None:
        for path in ("/model_info", "/get_model_info"):
            reply = self._http.get(path, timeout=HEALTH_TIMEOUT_S)
            if reply.ok and isinstance(reply.body, dict):
                version = reply.body.get("weight_version")
                return str(version) if version is not None else None
        return None


def _request_file() -> Path:
    configured = os.environ.get(SGLANG_REQUEST_ENV, "")
    if not configured or not Path(configured).is_absolute():
        raise LivePatchError(
            f"set {SGLANG_REQUEST_ENV} to the same absolute path on the shared volume in the "
            "agent's and SGLang's containers, to patch SGLang's weights in memory"
        )
    return Path(configured)


def _answer(path: Path) -> Any:
    """A rank's answer file, as a dict for :func:`parse_answers`; LivePatchError when the rank
    wrote none or something else."""
    try:
        return PatchResult.model_validate_json(path.read_bytes()).model_dump()
    except FileNotFoundError:
        raise LivePatchError(
            f"no answer in {path}: SGLang's schedulers did not run the Deltaroll loader with "
            f"{SGLANG_REQUEST_ENV} set (the engine's container needs it too)"
        ) from None
    except ValueError as exc:
        raise LivePatchError(f"{path} is not a Deltaroll patch result: {exc}") from exc
