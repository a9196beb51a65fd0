"""A threaded HTTP server bound at once and run from a daemon thread (the agent's health and
peer servers): the port is known before the agent reports it, and stopping closes it."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler

from deltaroll.listening import FleetHTTPServer


class BackgroundServer(FleetHTTPServer):
    """Bound in the constructor; :meth:`start` serves from a daemon thread named ``name``."""

    def __init__(
        self, host: str, port: int, handler: type[BaseHTTPRequestHandler], name: str
    ) -> None:
        super().__init__((host, port), handler)
        self._thread = threading.Thread(target=self.serve_forever, name=name, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
