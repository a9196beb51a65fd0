"""The listen backlog of every Deltaroll server, and the threaded HTTP server that uses it.

The standard library's ``socketserver`` listens with a backlog of 5. When a fleet's pods ask
one seeding peer at once (64 pods), or many clients reach an engine, the connections past the
kernel's accept queue have their SYN dropped and the client retries 1 s, then 3 s later: a
second's stall per connection for nothing. ``socket.SOMAXCONN`` asks for as many as the
kernel allows (it caps the number at ``net.core.somaxconn``), which fits a fleet; what a
server lets through at once it bounds itself, after accepting.

Top-level (beneath every part) because the agent and the reference engine both serve."""

from __future__ import annotations

import socket
from http.server import ThreadingHTTPServer

#: Connections the kernel holds for a server until it accepts them.
LISTEN_BACKLOG = socket.SOMAXCONN


class FleetHTTPServer(ThreadingHTTPServer):
    """A thread per request, daemon threads (a stuck client never holds the process at exit),
    and a backlog that fits a fleet (:data:`LISTEN_BACKLOG`)."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG
