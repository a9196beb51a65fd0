"""Local stand-ins for SGLang and vLLM servers that check every request against their docs.

They answer the way the real servers do (status codes, JSON shapes, error bodies) and enforce the
documented request shapes strictly, so an adapter that sends a wrong path, method, query or body
fails the test instead of passing against a lenient fake. Sources of each shape are cited in the
adapters' module docstrings (deltaroll.engines.sglang, deltaroll.engines.vllm). Both also serve
the OpenAI-compatible inference routes on the same server, as the real ones do: completions and
chat completions, with ``"stream": true`` as server-sent events over a chunked response
(``data: {...}`` events, then ``data: [DONE]``); :attr:`FakeEngine.hold` keeps the last event back
until a test releases it.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from safetensors.numpy import save_file

from deltaroll.api.engine_patch import (
    PROTOCOL,
    SGLANG_REQUEST_ENV,
    VLLM_DIGESTS,
    VLLM_METHOD,
    VLLM_PROBE,
    RankDigestRequest,
)

NO_BODY = object()  # a request sent without a body (distinct from JSON null)


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any


Answer = tuple[int, Any]  # (status, JSON body or None for an empty body)


@dataclass
class Stream:
    """A ``"stream": true`` answer: these SSE events, then ``[DONE]``."""

    events: list[dict[str, Any]]


class FakeEngine:
    """A threaded HTTP server on a free loopback port (``bind_port``: that one instead);
    subclasses implement :meth:`answer`."""

    bind_port = 0

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.hold = threading.Event()  # set: a stream's last event may go
        self.hold.set()
        self.streams_finished = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # as uvicorn: keep-alive, chunked streams

            def do_GET(self) -> None:  # noqa: N802
                self._handle("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._handle("POST")

            def _handle(self, method: str) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if raw:
                    try:
                        body: Any = json.loads(raw)
                    except json.JSONDecodeError:
                        self._send(400, {"detail": "Invalid JSON format"})
                        return
                else:
                    body = NO_BODY
                seen = Seen(method, parts.path, parse_qs(parts.query), body)
                fake.seen.append(seen)
                answer = fake.inference(seen) or fake.answer(seen)
                if isinstance(answer, Stream):
                    self._stream(answer)
                else:
                    self._send(*answer)

            def _stream(self, stream: Stream) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for number, event in enumerate(stream.events):
                    if number == len(stream.events) - 1:
                        fake.hold.wait(timeout=30)
                    self._chunk(b"data: " + json.dumps(event).encode() + b"\n\n")
                self._chunk(b"data: [DONE]\n\n")
                self._chunk(b"")
                fake.streams_finished += 1

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            def _send(self, status: int, payload: Any) -> None:
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.bind_port), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeEngine:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def calls(self) -> list[tuple[str, str]]:
        return [(s.method, s.path) for s in self.seen]

    def answer(self, seen: Seen) -> Answer:
        raise NotImplementedError

    def served_routes(self) -> set[tuple[str, str]]:
        """Every (method, path) it answers besides the OpenAI inference routes."""
        raise NotImplementedError

    def inference(self, seen: Seen) -> Answer | Stream | None:
        """The OpenAI-compatible routes both engines serve beside their own; None for others."""
        kind = {
            ("POST", "/v1/completions"): "text_completion",
            ("POST", "/v1/chat/completions"): "chat.completion",
        }.get((seen.method, seen.path))
        if kind is None:
            return None
        body = seen.body
        if not isinstance(body, dict) or not ("prompt" in body or "messages" in body):
            return 400, {"error": {"message": "prompt or messages: Field required", "code": 400}}
        words = [f"w{n}" for n in range(int(body.get("max_tokens") or 4))]
        if body.get("stream"):
            return Stream([{"object": f"{kind}.chunk", "choices": [{"index": 0, "text": w}]}
                           for w in words])  # fmt: skip
        return 200, {"object": kind, "choices": [{"index": 0, "text": " ".join(words)}]}


def not_found() -> Answer:
    return 404, {"detail": "Not Found"}


def checkpoint_dir(path: Path) -> Path:
    """A directory a server can load: config.json and a real safetensors file."""
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"model_type": "llama"}')
    save_file({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, path / "model.safetensors")
    return path


def loadable(path: str) -> str | None:
    """Why a directory cannot be loaded as a safetensors checkpoint, or None if it can."""
    if not os.path.isdir(path):
        return f"{path} is not a directory"
    if not any(name.endswith(".safetensors") for name in os.listdir(path)):
        return f"no safetensors files in {path}"
    return None


# SGLang: UpdateWeightFromDiskReqInput (sglang/srt/managers/io_struct.py).
SGLANG_UPDATE_FIELDS = {
    "model_path", "load_format", "abort_all_requests", "weight_version", "is_async",
    "torch_empty_cache", "keep_pause", "recapture_cuda_graph", "token_step", "flush_cache",
    "manifest",
}  # fmt: skip


@dataclass
class FakeSGLang(FakeEngine):
    """SGLang's server: /health, /model_info (/get_model_info), /update_weights_from_disk."""

    model_path: str
    weight_version: str = "default"
    legacy_model_info: bool = False  # SGLang < 0.5 only had /get_model_info
    #: ``--custom-weight-loader``; with ``model`` (a stand-in of the scheduler's model, one
    #: rank) the loader runs in this process as SGLang's scheduler would run it.
    custom_weight_loader: tuple[str, ...] = ()
    model: Any = None

    def __post_init__(self) -> None:
        super().__init__()

    def served_routes(self) -> set[tuple[str, str]]:
        info_path = "/get_model_info" if self.legacy_model_info else "/model_info"
        return {("GET", "/health"), ("GET", "/v1/models"), ("GET", info_path),
                ("POST", "/update_weights_from_disk"), ("GET", "/server_info"),
                ("POST", "/update_weights_from_tensor"),
                ("POST", "/update_weight_version")}  # fmt: skip

    def answer(self, seen: Seen) -> Answer:
        route = (seen.method, seen.path)
        info_path = "/get_model_info" if self.legacy_model_info else "/model_info"
        if route == ("GET", "/health"):
            return 200, None
        if route == ("GET", "/v1/models"):
            model = {"id": "served", "object": "model", "root": self.model_path}
            return 200, {"object": "list", "data": [model]}
        if route == ("GET", info_path):
            return 200, {"model_path": self.model_path, "weight_version": self.weight_version}
        if route == ("POST", "/update_weights_from_disk"):
            return self._update(seen.body)
        if route == ("GET", "/server_info"):
            return 200, {
                "tp_size": 1,
                "pp_size": 1,
                "model_path": self.model_path,
                "custom_weight_loader": list(self.custom_weight_loader),
            }
        if route == ("POST", "/update_weights_from_tensor"):
            return self._update_from_tensor(seen.body)
        if route == ("POST", "/update_weight_version"):
            if not isinstance(seen.body, dict) or not isinstance(seen.body.get("new_version"), str):
                return 422, {"detail": "new_version: Field required"}
            self.weight_version = seen.body["new_version"]
            return 200, {"success": True, "message": "Weight version updated"}
        return not_found()

    def _update_from_tensor(self, body: Any) -> Answer:
        """``UpdateWeightsFromTensorReqInput``; SGLang answers success once the loader returns
        (``ModelRunner.update_weights_from_tensor``)."""
        if not isinstance(body, dict) or not isinstance(body.get("serialized_named_tensors"), list):
            return 422, {"detail": "serialized_named_tensors: Field required"}
        unknown = set(body) - SGLANG_TENSOR_FIELDS
        if unknown:
            return 422, {"detail": f"unknown fields {sorted(unknown)}"}
        tensors = [
            pickle.loads(base64.b64decode(item)) for item in body["serialized_named_tensors"]
        ]  # what MultiprocessingSerializer.deserialize does with each rank's string
        load_format = body.get("load_format")
        if load_format not in self.custom_weight_loader:
            message = f"Unknown load_format={load_format}"
            return 400, {"success": False, "message": message}
        from deltaroll.engines.extension import sglang_loader

        module, _, name = load_format.rpartition(".")
        assert module == sglang_loader.__name__
        getattr(sglang_loader, name)  # dynamic_import
        request = Path(os.environ[SGLANG_REQUEST_ENV])
        sglang_loader.patch_in_memory_on(self.model, request, rank=0, reduce_max=None)
        assert tensors == [[]]
        return 200, {"success": True, "message": "Success"}

    def _update(self, body: Any) -> Answer:
        if not isinstance(body, dict) or not isinstance(body.get("model_path"), str):
            return 422, {"detail": [{"loc": ["body", "model_path"], "msg": "Field required"}]}
        unknown = set(body) - SGLANG_UPDATE_FIELDS
        if unknown:
            return 422, {"detail": f"unknown fields {sorted(unknown)}"}
        problem = loadable(body["model_path"])
        if problem is not None:
            message = f"Failed to update weights: {problem}.\nRolling back to original weights."
            return 400, {"success": False, "message": message, "num_paused_requests": 0}
        self.model_path = body["model_path"]
        if body.get("weight_version") is not None:
            self.weight_version = body["weight_version"]
        message = "Succeeded to update model weights."
        return 200, {"success": True, "message": message, "num_paused_requests": 0}


SGLANG_TENSOR_FIELDS = {
    "serialized_named_tensors", "load_format", "flush_cache", "abort_all_requests",
    "weight_version",
}  # fmt: skip


def vllm_error(status: int, message: str) -> Answer:
    """vLLM's ErrorResponse body (create_error_response / http_exception_handler)."""
    kind = "BadRequestError" if status == 400 else "InternalServerError"
    return status, {"error": {"message": message, "type": kind, "param": None, "code": status}}


@dataclass
class FakeVLLM(FakeEngine):
    """``vllm serve`` with VLLM_SERVER_DEV_MODE=1 and a weight-transfer backend.

    ``backend``: "disk" (``--weight-transfer-config '{"backend": "disk"}'``), "nccl" (configured
    for a trainer, so init with empty info fails), "ipc" (whose init info has only defaulted
    fields, so an empty init succeeds, and the disk path is refused by its update-info
    parser after its start wrapped the model for a layerwise reload, which then stays: the
    failed update ended the session, so no finish can finalize it), or None (a vLLM without
    the weight-transfer routes). ``server_info=False`` hides ``/server_info``; ``dev_mode=False``
    hides every development route.
    """

    served_dir: str
    backend: str | None = "disk"
    dev_mode: bool = True
    server_info: bool = True
    model_path: str = ""
    weight_version: str | None = None
    paused: bool = False
    session_active: bool = False  # the Worker's _weight_update_active
    layerwise_pending: bool = False  # layers wrapped for a layerwise reload not yet finalized
    staged_path: str | None = None
    rpc_reloads: int = 0
    prefix_cache_resets: int = 0
    #: With ``--worker-extension-cls``: a stand-in of the worker's model (one rank), patched in
    #: this process as vLLM's worker would run the extension's method.
    extension_model: Any = None
    #: What ``/pause`` answers instead of pausing (None: it pauses).
    pause_error: Answer | None = None

    def __post_init__(self) -> None:
        super().__init__()
        from deltaroll.engines.served_duty import DutyLimit

        self._digest_limit = DutyLimit()
        self.model_path = self.served_dir
        self._routes: dict[tuple[str, str], Any] = {
            ("GET", "/health"): lambda s: (200, None),
            ("GET", "/v1/models"): self._models,
        }
        if self.dev_mode:
            self._routes |= {
                ("POST", "/pause"): self._pause,
                ("POST", "/resume"): self._resume,
                ("POST", "/reset_prefix_cache"): self._reset_prefix_cache,
                ("POST", "/collective_rpc"): self._collective_rpc,
            }
        if self.dev_mode and self.server_info:
            self._routes[("GET", "/server_info")] = self._server_info
        if self.dev_mode and self.backend is not None:
            self._routes |= {
                ("POST", "/init_weight_transfer_engine"): self._init,
                ("POST", "/start_weight_update"): self._start,
                ("POST", "/update_weights"): self._update,
                ("POST", "/finish_weight_update"): self._finish,
                ("POST", "/update_weight_version"): self._update_weight_version,
                ("GET", "/weight_info"): lambda s: (200, {"weight_version": self.weight_version}),
            }

    def served_routes(self) -> set[tuple[str, str]]:
        return set(self._routes)

    def answer(self, seen: Seen) -> Answer:
        handler = self._routes.get((seen.method, seen.path))
        return not_found() if handler is None else handler(seen)

    def _models(self, seen: Seen) -> Answer:
        model = {"id": "served", "object": "model", "root": self.served_dir, "owned_by": "vllm"}
        return 200, {"object": "list", "data": [model]}

    def _server_info(self, seen: Seen) -> Answer:
        if seen.query.get("config_format", ["text"]) != ["json"]:
            return 200, {"vllm_config": "VllmConfig(...)", "vllm_env": {}, "system_env": {}}
        transfer = None if self.backend is None else {"backend": self.backend}
        config = {"model_config": {"model": self.served_dir}, "weight_transfer_config": transfer}
        return 200, {"vllm_config": config, "vllm_env": {"VLLM_SERVER_DEV_MODE": True}}

    def _pause(self, seen: Seen) -> Answer:
        if seen.query.get("mode", ["abort"]) not in (["abort"], ["wait"], ["keep"]):
            return 422, {"detail": "mode must be abort, wait or keep"}
        if self.pause_error is not None:
            return self.pause_error
        self.paused = True
        return 200, {"status": "paused"}

    def _resume(self, seen: Seen) -> Answer:
        self.paused = False
        return 200, {"status": "resumed"}

    def _reset_prefix_cache(self, seen: Seen) -> Answer:
        if seen.query.get("reset_running_requests", ["false"]) not in (["true"], ["false"]):
            return 422, {"detail": "reset_running_requests must be a boolean"}
        self.prefix_cache_resets += 1
        return 200, None

    def _init(self, seen: Seen) -> Answer:
        if not isinstance(seen.body, dict) or seen.body.get("init_info") is None:
            return vllm_error(400, "Missing 'init_info' in request body")
        if self.backend == "nccl":
            return vllm_error(
                400,
                "NCCLWeightTransferInitInfo.__init__() missing 3 required positional arguments: "
                "'master_address', 'master_port', and 'world_size'",
            )
        return 200, {"message": "Weight transfer initialized"}

    # Start, update and finish follow vLLM's Worker (vllm/v1/worker/gpu_worker.py, 0.27+): the
    # worker tracks one session; a failed update ends it, a failed finish does not. Both the
    # ipc and the disk engine wrap the model for a layerwise reload at start and finalize it at
    # finish; only the disk engine also finalizes when its update fails.

    def _start(self, seen: Seen) -> Answer:
        if seen.body is not NO_BODY and not isinstance(seen.body, dict):
            return vllm_error(400, "Invalid JSON format")
        if self.session_active:
            return vllm_error(
                500,
                "start_weight_update called while a weight update is already active. "
                "Call finish_weight_update first.",
            )
        self.session_active, self.staged_path, self.layerwise_pending = True, None, True
        return 200, {"message": "Weight update started"}

    def _update(self, seen: Seen) -> Answer:
        if not isinstance(seen.body, dict) or seen.body.get("update_info") is None:
            return vllm_error(400, "Missing 'update_info' in request body")
        info = seen.body["update_info"]
        if not self.session_active:
            return vllm_error(500, "start_weight_update must be called before update_weights.")
        problem = self._update_problem(info)
        if problem is not None:
            self.session_active = False  # the worker ends the session on any failure
            if self.backend == "disk":
                self.layerwise_pending = False  # the disk engine aborts its own session
            return vllm_error(400, problem)
        self.staged_path = info["path"]
        return 200, {"message": "Weights updated"}

    def _update_problem(self, info: Any) -> str | None:
        """Why the configured engine refuses ``update_info`` (a ValueError: HTTP 400)."""
        if self.backend == "ipc":  # WeightTransferEngine.parse_update_info, nothing loaded
            return (
                "Invalid update_info for IPCWeightTransferEngine: IPCWeightTransferUpdateInfo."
                f"__init__() got an unexpected keyword argument {next(iter(info), '')!r}"
            )
        if not isinstance(info, dict) or set(info) != {"path"}:
            return f"Invalid update_info for DiskWeightTransferEngine: got fields {info}"
        path = info["path"]
        if not isinstance(path, str) or not path or not os.path.isabs(path):
            return "`path` must be an absolute local directory"
        if not os.path.isdir(path):
            return f"Shared-disk checkpoint path must be a local directory: {path}"
        if loadable(path) is not None:
            return f"Shared-disk checkpoint directory contains no safetensors files: {path}"
        return None

    def _finish(self, seen: Seen) -> Answer:
        body = {} if seen.body is NO_BODY else seen.body
        if not isinstance(body, dict) or set(body) - {"weight_version"}:
            return 422, {"detail": f"unexpected body {body}"}
        if not self.session_active:
            return vllm_error(
                500, "finish_weight_update called without a matching start_weight_update."
            )
        self.layerwise_pending = False
        if self.backend == "disk" and self.staged_path is None:
            return vllm_error(500, "No checkpoint was loaded during the shared-disk update session")
        self.session_active = False
        if self.staged_path is not None:
            self.model_path = self.staged_path
        if body.get("weight_version") is not None:
            self.weight_version = body["weight_version"]
        return 200, {"message": "Weight update finished"}

    def _update_weight_version(self, seen: Seen) -> Answer:
        body = seen.body
        if not isinstance(body, dict) or not isinstance(body.get("new_version"), str):
            return 422, {"detail": "new_version: Field required"}
        self.weight_version = body["new_version"]
        return 200, {"success": True, "new_version": body["new_version"]}

    def _collective_rpc(self, seen: Seen) -> Answer:
        if not isinstance(seen.body, dict) or seen.body.get("method") is None:
            return 400, {"detail": "Missing 'method' in request body"}
        unknown = set(seen.body) - {"method", "args", "kwargs", "timeout"}
        if unknown:
            return 422, {"detail": f"unknown fields {sorted(unknown)}"}
        if seen.body["method"] == VLLM_PROBE and self.extension_model is not None:
            return 200, {"results": [PROTOCOL]}
        if seen.body["method"] in (VLLM_METHOD, VLLM_DIGESTS) and self.extension_model is not None:
            return self._run_extension(seen.body)
        if seen.body["method"] != "reload_weights":
            return vllm_error(500, f"'Worker' object has no attribute {seen.body['method']!r}")
        problem = loadable(self.served_dir)
        if problem is not None:
            return vllm_error(500, problem)
        self.rpc_reloads += 1
        self.model_path = self.served_dir
        return 200, {"results": [None]}

    def _run_extension(self, body: dict[str, Any]) -> Answer:
        kwargs = body.get("kwargs", {})
        if not all(isinstance(value, str) for value in kwargs.values()):
            return 400, {"detail": "only serialized string args/kwargs are passed"}
        from deltaroll.engines.extension.vllm_worker import DeltarollWorkerExtension

        assert hasattr(DeltarollWorkerExtension, body["method"])
        from deltaroll.api.weight_change import LiveApplyRequest
        from deltaroll.engines.extension.ranked_digests import digests_on_rank
        from deltaroll.engines.extension.ranked_patch import patch_on_rank

        if body["method"] == VLLM_DIGESTS:
            asked = RankDigestRequest.model_validate_json(kwargs["request"])
            answer = digests_on_rank(
                self.extension_model, asked, rank=0, reduce_max=None, limit=self._digest_limit
            )
            return 200, {"results": [answer.model_dump()]}
        request = LiveApplyRequest.model_validate_json(kwargs["request"])
        result = patch_on_rank(self.extension_model, request, rank=0, reduce_max=None)
        return 200, {"results": [result.model_dump()]}
