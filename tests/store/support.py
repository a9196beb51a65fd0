"""Shared helpers of the store tests: constants, a bucket factory for the moto server, and a
bit-exact pull check, and a loopback listener that records what a client sends it."""

from __future__ import annotations

import contextlib
import filecmp
import http.server
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3

from deltaroll.store import Store
from deltaroll.store.retry import RetryPolicy
from fixtures.files import visible_names

SECRET_SENTINEL = "SENTINEL-secret-7f3a9c-never-print"
ACCESS_KEY_SENTINEL = "AKIASENTINEL7F3A9C"
FAST_RETRY = RetryPolicy(attempts=3, initial_s=0.01, max_s=0.05)


def make_bucket(endpoint: str) -> str:
    """A fresh bucket on the S3 endpoint, so every test starts from an empty store."""
    name = f"deltaroll-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


def pulls_bit_exact(store: Store, ref: str, expected: Path, out: Path, model: str = "tiny") -> bool:
    """Whether ``ref`` pulls into ``out`` as exactly the files of ``expected``."""
    store.pull(model, ref, out)
    names = visible_names(expected)
    _, mismatch, errors = filecmp.cmpfiles(out, expected, names, shallow=False)
    return visible_names(out) == names and not mismatch and not errors


@dataclass
class Recorded:
    """What :func:`recording_listener` saw: each request's line and headers."""

    endpoint: str
    requests: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def traffic(self) -> str:
        """Every request line and header, as one text to search."""
        return "\n".join(
            f"{line}\n" + "\n".join(f"{k}: {v}" for k, v in headers.items())
            for line, headers in zip(self.requests, self.headers, strict=True)
        )


@contextlib.contextmanager
def recording_listener() -> Iterator[Recorded]:
    """A loopback HTTP listener that answers every request 404 and records it: a stand-in for
    the instance metadata service or for a bucket whose traffic a test reads."""
    recorded = Recorded("")

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            recorded.requests.append(f"{self.command} {self.path}")
            recorded.headers.append(dict(self.headers.items()))
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _answer

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    recorded.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield recorded
    finally:
        server.shutdown()
        server.server_close()
