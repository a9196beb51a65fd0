"""The agent's health and peer servers hold a fleet's connections until they accept them: with
the standard library's backlog of 5, the 7th pod to ask a busy seeder at once lost its SYN and
waited a second to retry."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from deltaroll.agent.background_server import BackgroundServer
from fixtures.handshakes import FLEET, completed_handshakes


def test_the_standard_librarys_backlog_drops_most_of_a_fleet() -> None:
    """What the fix is for, measured the same way: bound, not yet accepting."""
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as server:
        assert completed_handshakes(server.server_address[1]) < FLEET


def test_a_fleet_completes_its_handshakes_before_the_server_accepts() -> None:
    server = BackgroundServer("127.0.0.1", 0, BaseHTTPRequestHandler, "backlog-test")
    try:
        assert completed_handshakes(server.port) == FLEET
    finally:
        server.server_close()
