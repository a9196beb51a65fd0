"""``deltaroll engine proxy``: the pod's inference port, in front of an engine on loopback.

It passes the requests :mod:`deltaroll.engines.inference_routes` allows to the engine and answers
everything else 404 without forwarding it. aiohttp (already a dependency) parses HTTP on both
sides, so no request is re-framed by hand: the proxy sends the engine a new request with the
matched target, the body (read whole, up to ``max_request_bytes``: prompts, not weights) and the
client's end-to-end headers. Responses are streamed back chunk by chunk as the engine writes
them, so server-sent events (``"stream": true``) reach the client token by token; a client that
goes away cancels its request to the engine (``handler_cancellation``), which aborts it there.

At most ``max_engine_connections`` requests are with the engine at once (the connection pool is
bounded by the same number): a request beyond them waits up to ``QUEUE_TIMEOUT_S`` for one to
finish, then gets 503 with ``Retry-After``, so a flood of slow clients holds a bounded number of
sockets and file descriptors on the engine's side, and a client learns to back off.

It runs in a container of its own without a ServiceAccount token: the one process that faces the
Service's clients holds nothing but the engine's loopback address.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

import aiohttp
import structlog
from aiohttp import web

from deltaroll.engines.inference_routes import Route, forwardable

log = structlog.get_logger(__name__)

DEFAULT_MAX_REQUEST_BYTES = 64 << 20
DEFAULT_MAX_ENGINE_CONNECTIONS = 1024  # above vLLM's and SGLang's running batch; they queue more
QUEUE_TIMEOUT_S = 30.0
RETRY_AFTER_S = 1
CONNECT_TIMEOUT_S = 10.0
# Per connection (RFC 9110 7.6.1), plus what each side's client library sets for itself.
_NOT_FORWARDED = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
        "te", "trailer", "transfer-encoding", "upgrade", "host", "content-length",
    }
)  # fmt: skip


def end_to_end(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """``headers`` without the hop-by-hop ones (also those ``Connection`` names)."""
    pairs = list(headers)
    named = {
        token.strip().lower()
        for key, value in pairs
        if key.lower() == "connection"
        for token in value.split(",")
    }
    return [(k, v) for k, v in pairs if k.lower() not in _NOT_FORWARDED | named]


def error_reply(status: int, kind: str, message: str, **headers: str) -> web.Response:
    """An OpenAI-style error body, as the engines answer theirs."""
    body = {"error": {"message": message, "type": kind, "code": status}}
    return web.json_response(body, status=status, headers=headers or None)


def refusal() -> web.Response:
    return error_reply(404, "NotFound", "not an inference route of this pod")


def busy() -> web.Response:
    return error_reply(
        503,
        "ServiceUnavailable",
        "the engine has as many requests as this pod passes; retry shortly",
        **{"Retry-After": str(RETRY_AFTER_S)},
    )


def build_app(
    upstream: str,
    routes: frozenset[Route],
    *,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    max_engine_connections: int = DEFAULT_MAX_ENGINE_CONNECTIONS,
    queue_timeout_s: float = QUEUE_TIMEOUT_S,
) -> web.Application:
    """The proxy as an aiohttp application (one catch-all route: matching is ours, on the raw
    target, not the router's on the decoded one)."""
    base = upstream.rstrip("/")
    app = web.Application(client_max_size=max_request_bytes)
    session_key = web.AppKey("session", aiohttp.ClientSession)
    slots_key = web.AppKey("slots", asyncio.Semaphore)

    async def session(app: web.Application) -> AsyncIterator[None]:
        app[slots_key] = asyncio.Semaphore(max_engine_connections)
        app[session_key] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max_engine_connections),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S),
            auto_decompress=False,  # bytes pass as the engine encoded them
        )
        yield
        await app[session_key].close()

    async def forward(request: web.Request) -> web.StreamResponse:
        target = forwardable(request.method, request.raw_path, routes)
        if target is None:
            log.info("proxy.refused", method=request.method, target=request.raw_path[:200])
            return refusal()
        body = await request.read()
        try:
            async with asyncio.timeout(queue_timeout_s):
                await app[slots_key].acquire()
        except TimeoutError:
            log.warning("proxy.busy", in_flight=max_engine_connections)
            return busy()
        try:
            return await relay(request, target, body)
        finally:
            app[slots_key].release()

    async def relay(request: web.Request, target: str, body: bytes) -> web.StreamResponse:
        try:
            upstream_reply = await app[session_key].request(
                request.method,
                base + target,  # yarl keeps the path; the query stays equivalent
                headers=end_to_end(request.headers.items()),
                data=body if body else None,
                allow_redirects=False,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("proxy.engine_unreachable", error=str(exc))
            return error_reply(502, "BadGateway", "the engine is not answering")
        async with upstream_reply:
            response = web.StreamResponse(
                status=upstream_reply.status,
                reason=upstream_reply.reason,
                headers=end_to_end(upstream_reply.headers.items()),
            )
            if upstream_reply.content_length is not None:
                response.content_length = upstream_reply.content_length
            await response.prepare(request)
            async for chunk in upstream_reply.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
        return response

    app.cleanup_ctx.append(session)
    app.router.add_route("*", "/{target:.*}", forward)
    return app


def serve(
    upstream: str,
    routes: frozenset[Route],
    *,
    host: str,
    port: int,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    max_engine_connections: int = DEFAULT_MAX_ENGINE_CONNECTIONS,
) -> None:
    """Serve until SIGTERM or SIGINT; requests in flight get a grace period to finish."""
    log.info(
        "proxy.serving",
        listen=f"{host}:{port}",
        upstream=upstream,
        routes=sorted(f"{method} {path}" for method, path in routes),
    )
    web.run_app(
        build_app(
            upstream,
            routes,
            max_request_bytes=max_request_bytes,
            max_engine_connections=max_engine_connections,
        ),
        host=host,
        port=port,
        handler_cancellation=True,
        access_log=None,
        print=None,
        shutdown_timeout=30.0,
    )
