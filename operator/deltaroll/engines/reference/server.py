"""The reference engine's HTTP servers (standard library ``ThreadingHTTPServer``, with
:mod:`deltaroll.listening`'s backlog).

Two listeners on one engine. The inference port (the pod port a Service exposes) serves
(JSON in, JSON out)::

    GET  /health             200 {"status": "ok", "version"}
    GET  /v1/models          OpenAI model list (one model, "root" = its directory)
    POST /v1/completions     OpenAI-style {prompt, max_tokens=16, temperature=0} -> choices
    POST /eval               {"texts": [...]} -> {"loss", "finite", "tokens", "version"}

The admin port listens on 127.0.0.1 only, so only the containers of the pod (the agent) reach
it::

    GET  /health
    GET  /weights_checksum   {"version", "model_path", "tensors": {name: {dtype, shape, digest}}}
    POST /update_weights_from_disk   SGLang-shaped {model_path, load_format?, weight_version?}
         200 {"success": true, "message", "num_paused_requests": 0, "version"}
         400 {"success": false, "message"}; the old weights stay served
    POST /apply_delta        LiveApplyRequest -> 200 LiveApplyResult | 409 LiveApplyRefusal
    POST /served_digest      ServedDigestRequest -> 200 ServedDigests | 429 (Retry-After)

(the last two's shapes are in :mod:`deltaroll.api.weight_change`). The served model is one
:class:`LoadedModel`; a reload builds and verifies a new one, then swaps a single reference,
so every request runs on exactly one version. An in-memory apply (:mod:`.live_apply`) patches
the served model's tensors instead, with every request held at the :class:`RequestGate` and
none in flight. Why the standard library: a handful of blocking, CPU-bound endpoints need
threads, not an event loop.
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deltaroll.api.weight_change import (
    LiveApplyRefusal,
    LiveApplyRequest,
    LiveApplyResult,
    ServedDigestRequest,
    ServedDigests,
)
from deltaroll.engines.errors import (
    EngineRequestError,
    LayoutChangeError,
    LivePatchError,
    ModelLoadError,
)
from deltaroll.engines.live_patch import warm_live_patch
from deltaroll.engines.reference.gate import RequestGate
from deltaroll.engines.reference.inference import complete, mean_token_loss
from deltaroll.engines.reference.live_apply import apply_live
from deltaroll.engines.reference.loading import LoadedModel, load_model
from deltaroll.engines.reference.served import (
    DigestRateLimitedError,
    ServedDigester,
    UnknownTensorError,
)
from deltaroll.listening import FleetHTTPServer

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 16 * 1024 * 1024
ADMIN_HOST = "127.0.0.1"
INFERENCE_ROUTES = frozenset(
    {("GET", "/health"), ("GET", "/v1/models"), ("POST", "/v1/completions"), ("POST", "/eval")}
)
ADMIN_ROUTES = frozenset(
    {
        ("GET", "/health"),
        ("GET", "/weights_checksum"),
        ("POST", "/update_weights_from_disk"),
        ("POST", "/apply_delta"),
        ("POST", "/served_digest"),
    }
)


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields we do not use

    prompt: str | list[str]
    max_tokens: int = Field(16, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0.0, le=10.0)
    model: str | None = None


class EvalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(min_length=1, max_length=10_000)


class UpdateWeightsRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # SGLang clients may send its other fields

    model_path: str = Field(min_length=1)
    load_format: Literal["auto", "safetensors"] | None = None
    weight_version: str | None = None


class ReferenceEngine:
    """The served model, the gate requests pass, and the lock that keeps weight changes (and
    served digests) one at a time."""

    def __init__(self, loaded: LoadedModel, *, device: str) -> None:
        self._current = loaded
        self._device = device
        self._reload_lock = threading.Lock()
        self.gate = RequestGate()
        self._digester = ServedDigester()

    @property
    def current(self) -> LoadedModel:
        return self._current

    def reload(self, model_path: Path, *, expected_version: str | None) -> LoadedModel:
        """Load and verify ``model_path`` beside the served model, then swap; raises on failure.

        Peak memory is two copies of the weights: the price of never serving a half-load.
        """
        with self._reload_lock:
            loaded = load_model(model_path, device=self._device, expected_version=expected_version)
            self._current = loaded
        return loaded

    def apply_delta(self, request: LiveApplyRequest) -> LiveApplyResult:
        """Patch the served weights in memory (see :mod:`.live_apply`); raises
        :class:`LivePatchError` with the old weights still served."""
        with self._reload_lock:
            return apply_live(self._current, request, self.gate, self._serve)

    def _serve(self, loaded: LoadedModel) -> None:
        self._current = loaded

    def served_digests(self, request: ServedDigestRequest) -> ServedDigests:
        """Digests of the tensors as held now (never during a change)."""
        with self._reload_lock:
            loaded = self._current
            return ServedDigests(
                version=loaded.version,
                tensors=self._digester.digests(loaded, request.tensors),
            )


class _Handler(BaseHTTPRequestHandler):
    server: _EngineServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        loaded = self.server.engine.current
        if ("GET", self.path) not in self.server.routes:
            self._error(HTTPStatus.NOT_FOUND, f"no route GET {self.path}")
        elif self.path == "/health":
            self._send(HTTPStatus.OK, {"status": "ok", "version": loaded.version})
        elif self.path == "/weights_checksum":
            self._send(HTTPStatus.OK, _weights_checksum(loaded))
        elif self.path == "/v1/models":
            self._send(HTTPStatus.OK, _model_list(loaded))
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no route GET {self.path}")

    def do_POST(self) -> None:  # noqa: N802
        routes = {
            "/v1/completions": self._completions,
            "/eval": self._eval,
            "/update_weights_from_disk": self._update_weights_from_disk,
            "/apply_delta": self._apply_delta,
            "/served_digest": self._served_digest,
        }
        route = routes.get(self.path) if ("POST", self.path) in self.server.routes else None
        try:
            body = self._read_body()
            if route is None:
                self._error(HTTPStatus.NOT_FOUND, f"no route POST {self.path}")
                return
            route(body)
        except (ValidationError, EngineRequestError, json.JSONDecodeError) as exc:
            self._bad_request(exc)
        except Exception as exc:  # a bug or a torch failure: answer, keep serving
            log.exception("request failed", path=self.path)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {exc}")

    def _completions(self, body: dict[str, Any]) -> None:
        request = CompletionRequest.model_validate(body)
        with self.server.engine.gate.admitted():
            self._complete(request)

    def _complete(self, request: CompletionRequest) -> None:
        loaded = self.server.engine.current
        prompts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
        choices = []
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        for index, prompt in enumerate(prompts):
            result = complete(
                loaded, prompt, max_tokens=request.max_tokens, temperature=request.temperature
            )
            choices.append(
                {
                    "index": index,
                    "text": result.text,
                    "logprobs": None,
                    "finish_reason": result.finish_reason,
                }
            )
            usage["prompt_tokens"] += result.prompt_tokens
            usage["completion_tokens"] += result.completion_tokens
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        self._send(
            HTTPStatus.OK,
            {
                "id": f"cmpl-{uuid.uuid4().hex}",
                "object": "text_completion",
                "created": int(time.time()),
                "model": loaded.path.name,
                "system_fingerprint": loaded.version,
                "choices": choices,
                "usage": usage,
            },
        )

    def _eval(self, body: dict[str, Any]) -> None:
        request = EvalRequest.model_validate(body)
        with self.server.engine.gate.admitted():
            loaded = self.server.engine.current
            result = mean_token_loss(loaded, request.texts)
        finite = math.isfinite(result.loss)
        self._send(
            HTTPStatus.OK,
            {
                "loss": result.loss if finite else None,
                "finite": finite,
                "tokens": result.tokens,
                "version": loaded.version,
            },
        )

    def _update_weights_from_disk(self, body: dict[str, Any]) -> None:
        try:
            request = UpdateWeightsRequest.model_validate(body)
        except ValidationError as exc:
            self._send(HTTPStatus.BAD_REQUEST, {"success": False, "message": _first_error(exc)})
            return
        old = self.server.engine.current.version
        try:
            loaded = self.server.engine.reload(
                Path(request.model_path), expected_version=request.weight_version
            )
        except ModelLoadError as exc:
            log.warning("reload refused", model_path=request.model_path, reason=str(exc))
            message = f"{exc}; still serving version {old}"
            self._send(HTTPStatus.BAD_REQUEST, {"success": False, "message": message})
            return
        log.info("reloaded", model_path=str(loaded.path), old=old, new=loaded.version)
        self._send(
            HTTPStatus.OK,
            {
                "success": True,
                "message": f"loaded version {loaded.version} from {loaded.path}",
                "num_paused_requests": 0,
                "version": loaded.version,
            },
        )

    def _apply_delta(self, body: dict[str, Any]) -> None:
        request = LiveApplyRequest.model_validate(body)
        try:
            result = self.server.engine.apply_delta(request)
        except LivePatchError as exc:
            log.warning("in-memory apply refused", delta=request.delta_path, reason=str(exc))
            refusal = LiveApplyRefusal(
                message=str(exc),
                layout_change=isinstance(exc, LayoutChangeError),
                old_weights_kept=exc.old_weights_kept,
            )
            self._send(HTTPStatus.CONFLICT, refusal.model_dump())
            return
        log.info("applied in memory", **result.model_dump(exclude={"success", "method"}))
        self._send(HTTPStatus.OK, result.model_dump())

    def _served_digest(self, body: dict[str, Any]) -> None:
        request = ServedDigestRequest.model_validate(body)
        try:
            digests = self.server.engine.served_digests(request)
        except UnknownTensorError as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc))
            return
        except DigestRateLimitedError as exc:
            retry = {"Retry-After": str(math.ceil(exc.retry_after_s))}
            self._send(HTTPStatus.TOO_MANY_REQUESTS, {"error": {"message": str(exc)}}, retry)
            return
        self._send(HTTPStatus.OK, digests.model_dump())

    def _read_body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the unread body would be taken for the next request
            raise EngineRequestError(f"request body over {MAX_BODY_BYTES} bytes")
        raw = self.rfile.read(length) if length else b""
        if not raw.strip():
            return {}
        body = json.loads(raw)
        if not isinstance(body, dict):
            raise EngineRequestError("request body must be a JSON object")
        return body

    def _bad_request(self, exc: Exception) -> None:
        message = _first_error(exc) if isinstance(exc, ValidationError) else str(exc)
        if isinstance(exc, json.JSONDecodeError):
            message = f"request body is not JSON: {exc}"
        if self.path == "/update_weights_from_disk":
            self._send(HTTPStatus.BAD_REQUEST, {"success": False, "message": message})
        else:
            self._error(HTTPStatus.BAD_REQUEST, message)

    def _error(self, status: HTTPStatus, message: str) -> None:
        error_type = {
            HTTPStatus.NOT_FOUND: "NotFoundError",
            HTTPStatus.INTERNAL_SERVER_ERROR: "InternalServerError",
        }.get(status, "BadRequestError")
        self._send(status, {"error": {"message": message, "type": error_type, "code": status}})

    def _send(
        self, status: HTTPStatus, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload, allow_nan=False).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
        log.debug("http", client=self.client_address[0], line=format % args)


class _EngineServer(FleetHTTPServer):
    def __init__(
        self, address: tuple[str, int], engine: ReferenceEngine, routes: frozenset[tuple[str, str]]
    ) -> None:
        super().__init__(address, _Handler)
        self.engine = engine
        self.routes = routes


def make_server(engine: ReferenceEngine, host: str, port: int) -> ThreadingHTTPServer:
    """The inference server bound to ``host:port`` (0 picks a free port: read
    ``server_address``)."""
    return _EngineServer((host, port), engine, INFERENCE_ROUTES)


def make_admin_server(engine: ReferenceEngine, port: int) -> ThreadingHTTPServer:
    """The admin server (reload, checksums), on the loopback address only."""
    return _EngineServer((ADMIN_HOST, port), engine, ADMIN_ROUTES)


def serve(model_path: Path, *, host: str, port: int, admin_port: int, device: str = "cpu") -> None:
    """Load ``model_path`` (raising :class:`ModelLoadError` if it cannot) and serve until killed."""
    import signal

    loaded = load_model(model_path, device=device)
    warm_live_patch()  # before serving: the first change would load it beside requests
    engine = ReferenceEngine(loaded, device=device)
    servers = [make_server(engine, host, port), make_admin_server(engine, admin_port)]
    for server, role in zip(servers, ("inference", "admin"), strict=True):
        bound_host, bound_port = server.server_address[:2]
        log.info("serving", role=role, host=bound_host, port=bound_port, version=loaded.version)
    admin = threading.Thread(target=servers[1].serve_forever, name="admin", daemon=True)
    admin.start()

    def stop(signum: int, frame: object) -> None:
        for server in servers:
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    try:
        servers[0].serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        admin.join(timeout=10)
        for server in servers:
            server.server_close()


def _weights_checksum(loaded: LoadedModel) -> dict[str, Any]:
    return {
        "version": loaded.version,
        "model_path": str(loaded.path),
        "tensors": {
            t.name: {"dtype": t.dtype, "shape": list(t.shape), "digest": t.digest}
            for t in loaded.tensors
        },
    }


def _model_list(loaded: LoadedModel) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {
                "id": loaded.path.name,
                "object": "model",
                "owned_by": "deltaroll",
                "root": str(loaded.path),
                "version": loaded.version,
            }
        ],
    }


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"
