"""Two pods never get the same host port, even when the OS offers a port twice."""

from __future__ import annotations

import socket

from deltaroll_sandbox.kubelet import pod


def test_a_port_offered_again_while_reserved_is_skipped(monkeypatch):
    offered = iter([41001, 41001, 41002])

    class ProbeSocket(socket.socket):
        def getsockname(self):
            return ("127.0.0.1", next(offered))

    monkeypatch.setattr(pod.socket, "socket", ProbeSocket)
    monkeypatch.setattr(pod, "_reserved_ports", set())
    assert [pod._reserve_port(), pod._reserve_port()] == [41001, 41002]
