"""Two pods never get the same host port, nor one another process may take before the pod binds
it (an operator's server bound port 0 and got a pod's health port: its agent never started)."""

from __future__ import annotations

import socket

from deltaroll_sandbox.kubelet import pod


def test_pods_ports_come_from_below_the_ephemeral_range_and_are_never_shared(monkeypatch):
    monkeypatch.setattr(pod, "_reserved_ports", set())
    ports = [pod._reserve_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert all(pod.POD_PORTS.start <= port < pod._ephemeral_low() for port in ports)


def test_a_port_in_use_on_any_address_is_skipped(monkeypatch):
    monkeypatch.setattr(pod, "_reserved_ports", set())
    with socket.socket() as taken:
        for port in range(pod.POD_PORTS.start, pod.POD_PORTS.stop - 1):
            try:
                taken.bind(("127.0.0.1", port))
            except OSError:
                continue
            break
        taken.listen()
        monkeypatch.setattr(pod, "POD_PORTS", range(port, port + 2))
        assert pod._reserve_port() == port + 1
