"""``/healthz`` and ``/metrics`` on the agent's health port (standard-library HTTP server).

``/healthz`` answers 200 once a verified version is on the weights volume and stays 200
afterwards: it is the startup probe that holds the engine back until it has weights to load,
and it must not fail later while the agent swaps versions (that is what the readiness gate is
for). Its JSON body says the agent's state either way. ``/metrics`` is Prometheus' text format.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from deltaroll.agent.background_server import BackgroundServer

HealthCheck = Callable[[], tuple[bool, dict[str, Any]]]


class _Handler(BaseHTTPRequestHandler):
    server: HealthServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        if path in ("/healthz", "/livez", "/readyz"):
            healthy, detail = self.server.check()
            status = HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE
            self._send(status, json.dumps(detail).encode(), "application/json")
        elif path == "/metrics":
            self._send(HTTPStatus.OK, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        else:
            self._send(HTTPStatus.NOT_FOUND, b'{"error": "not found"}', "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Probes every few seconds would flood the log; stay quiet."""


class HealthServer(BackgroundServer):
    """Serves the probe and the metrics from a daemon thread."""

    def __init__(
        self, host: str, port: int, check: HealthCheck, registry: CollectorRegistry
    ) -> None:
        super().__init__(host, port, _Handler, "agent-health")
        self.check = check
        self.registry = registry
