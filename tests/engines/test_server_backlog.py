"""The reference engine's servers hold a burst of clients until they accept them (the
standard library's backlog of 5 dropped the SYNs of the rest, a second's retry each)."""

from __future__ import annotations

from deltaroll.engines.reference.loading import load_model
from deltaroll.engines.reference.server import ReferenceEngine, make_admin_server, make_server
from engines.checkpoints import TinyCheckpoints
from fixtures.handshakes import FLEET, completed_handshakes


def test_both_ports_complete_a_fleets_handshakes_before_accepting(
    checkpoints: TinyCheckpoints,
) -> None:
    engine = ReferenceEngine(load_model(checkpoints.v1), device="cpu")
    for server in (make_server(engine, "127.0.0.1", 0), make_admin_server(engine, 0)):
        try:
            assert completed_handshakes(server.server_address[1]) == FLEET
        finally:
            server.server_close()
