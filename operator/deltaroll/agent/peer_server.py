"""Serving the agent's verified objects to the other agents of its ModelDeployment, and no one
else.

``GET /v1/models/<model>/objects/<sha256>`` (:mod:`deltaroll.api.peers`) with the caller's
pod-bound token for :data:`~deltaroll.api.peers.AUDIENCE`: 401 without one, 403 unless the API
server vouches (TokenReview, :mod:`.pod_tokens`) that it is a pod of this agent's namespace and
ModelDeployment (the peer listing's members); then 200 with the bytes of an object this agent's
cache holds verified (hashed once per file, as the agent's own reads are), 404 for anything
else, 503 while it already serves ``max_peers`` peers. A request that may wait
(:data:`~deltaroll.api.peers.WAIT_HEADER`) for an object not held yet is answered when the
agent commits it, woken by the commit, not by polling. Every response is sent
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
from deltaroll.agent.peer_directory import PeerDirectory
from deltaroll.agent.pod_tokens import Refused, TokenAuthenticator, bearer_token
from deltaroll.agent.throttle import TokenBucket
from deltaroll.api.peers import (
    ARRIVING_HEADER,
    AUDIENCE,
    WAIT_HEADER,
    parse_object_path,
    parse_wait,
)
from deltaroll.store.cache import ObjectCache

log = structlog.get_logger(__name__)

_BLOCK = 256 << 10


class _Handler(BaseHTTPRequestHandler):
    server: PeerServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        parsed = parse_object_path(self.path)
        if parsed is None or parsed[0] != self.server.model:
            self._answer("missing")
            self._empty(HTTPStatus.NOT_FOUND)
            return
        try:
            wait_s = parse_wait(self.headers.get(WAIT_HEADER))
        except ValueError as exc:
            self._answer("bad")
            self._refuse(HTTPStatus.BAD_REQUEST, str(exc))
            return
        # a review is a call to the API server, a wait a thread: at most max_peers at once
        if not self.server.slots.acquire(blocking=False):
            self._answer("busy")
            self._empty(HTTPStatus.SERVICE_UNAVAILABLE, retry_after=True)
            return
        try:
            refusal = self.server.refusal(self.headers.get("Authorization", ""))
            if refusal is not None:
                self._answer("refused")
                self._refuse(*refusal)
            else:
                self._send_object(parsed[1], wait_s)
        finally:
            self.server.slots.release()

    def _answer(self, answer: str) -> None:
        self.server.metrics.peer_requests.labels(answer).inc()

    def _send_object(self, digest: str, wait_s: float) -> None:
        # a prune later leaves this read whole; one still being fetched is waited for
        handle = self.server.cache.open_arriving(digest, wait_s)
        if handle is None:
            self._answer("missing")
            arriving = self.server.cache.arriving_bytes(digest)
            self._empty(HTTPStatus.NOT_FOUND, arriving=arriving)
            return
        self._answer("served")
        with handle:
            size = os.fstat(handle.fileno()).st_size
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

    def _refuse(self, status: HTTPStatus, reason: str) -> None:
        body = reason.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _empty(
        self, status: HTTPStatus, *, retry_after: bool = False, arriving: int | None = None
    ) -> None:
        self.send_response(status)
        if retry_after:
            self.send_header("Retry-After", "1")
        if arriving is not None:
            self.send_header(ARRIVING_HEADER, str(arriving))
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
        authenticator: TokenAuthenticator,
        namespace: str,
        directory: PeerDirectory,
    ) -> None:
        super().__init__(host, port, _Handler, "agent-peers")
        self.model, self.cache, self.metrics = model, cache, metrics
        self.authenticator, self.namespace, self.directory = authenticator, namespace, directory
        self.bucket = TokenBucket(rate)
        self.slots = threading.BoundedSemaphore(max_peers)

    def refusal(self, authorization: str) -> tuple[HTTPStatus, str] | None:
        """Why a request with this ``Authorization`` header is not served, or None."""
        token = bearer_token(authorization)
        if token is None:
            status = HTTPStatus.UNAUTHORIZED
            reason = f"a bearer token for the {AUDIENCE} audience is needed"
        else:
            status = HTTPStatus.FORBIDDEN
            try:
                requester = self.authenticator.check(token)
            except Refused as exc:
                reason = str(exc)
            else:
                if requester.namespace != self.namespace:
                    reason = f"this agent serves the pods of namespace {self.namespace} only"
                elif not self.directory.member(requester.pod_name, requester.pod_uid):
                    reason = "this agent serves the pods of its own ModelDeployment only"
                else:
                    return None
        self.metrics.peer_refused.inc()
        log.info("agent.peer_refused", status=int(status), reason=reason)
        return status, reason
