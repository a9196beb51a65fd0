"""Serving the agent's verified objects to the other agents of its ModelDeployment.

``GET /v1/models/<model>/objects/<sha256>`` (:mod:`deltaroll.api.peers`): 200 with the bytes of an
object this agent's cache holds verified (hashed once per file, as the agent's own reads are),
404 for anything else, 503 while it already serves ``max_peers`` peers. Every response is sent
through one :class:`~deltaroll.agent.throttle.TokenBucket`, so serving never takes more of the
pod's network or disk than allowed, whatever the number of peers. The server reads nothing but
the cache scope of the agent's own store and model, and never writes.
"""

from __future__ import annotations

import os
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

import structlog

from deltaroll.agent.background_server import BackgroundServer
from deltaroll.agent.metrics import AgentMetrics
from deltaroll.agent.throttle import TokenBucket
from deltaroll.api.peers import parse_object_path
from deltaroll.store.cache import ObjectCache

log = structlog.get_logger(__name__)

_BLOCK = 256 << 10


class _Handler(BaseHTTPRequestHandler):
    server: PeerServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        parsed = parse_object_path(self.path)
        if parsed is None or parsed[0] != self.server.model:
            self._empty(HTTPStatus.NOT_FOUND)
            return
        if not self.server.slots.acquire(blocking=False):
            self._empty(HTTPStatus.SERVICE_UNAVAILABLE, retry_after=True)
            return
        try:
            self._send_object(parsed[1])
        finally:
            self.server.slots.release()

    def _send_object(self, digest: str) -> None:
        cache = self.server.cache
        if not cache.verified(digest):
            self._empty(HTTPStatus.NOT_FOUND)
            return
        try:  # opened now: a prune that unlinks it later leaves this read whole
            fd = os.open(cache.path(digest), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            self._empty(HTTPStatus.NOT_FOUND)
            return
        with os.fdopen(fd, "rb") as handle:
            size = os.fstat(fd).st_size
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            sent = 0
            while block := handle.read(_BLOCK):
                self.server.bucket.take(len(block))
                self.wfile.write(block)
                sent += len(block)
                self.server.metrics.served_bytes.inc(len(block))
        log.debug("agent.peer_served", digest=digest, bytes=sent, peer=self.client_address[0])

    def _empty(self, status: HTTPStatus, *, retry_after: bool = False) -> None:
        self.send_response(status)
        if retry_after:
            self.send_header("Retry-After", "1")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Peers poll for objects; the structured log says what matters."""


class PeerServer(BackgroundServer):
    """Serves one agent's cache to its peers from daemon threads."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        model: str,
        cache: ObjectCache,
        rate: int,
        max_peers: int,
        metrics: AgentMetrics,
    ) -> None:
        super().__init__(host, port, _Handler, "agent-peers")
        self.model, self.cache, self.metrics = model, cache, metrics
        self.bucket = TokenBucket(rate)
        self.slots = threading.BoundedSemaphore(max_peers)
