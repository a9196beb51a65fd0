"""Pulls through an S3 gateway that answers GetObject with a redirect to a CDN, as the Hub's S3
gateway (s3.hf.co) does for clients it does not recognise.

The gateway here forwards every request to moto except GetObject, which it answers with
``307 Temporary Redirect`` to a CDN on another port. The CDN serves the bytes with neither
``ETag`` nor ``Last-Modified`` (the least a redirected response may carry). obstore follows the
redirect, drops the ``Authorization`` header on the way to the other origin (the CDN URL carries
its own authority) and needs neither header: the pull is bit-exact."""

from __future__ import annotations

import http.client
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest

from deltaroll.store import Store
from fixtures.checkpoints import read_tensors
from store.support import FAST_RETRY
from store.test_explicit_credentials import credentials, make_bucket

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "host"}


@dataclass
class Traffic:
    """What reached each server: the gateway's redirects and the CDN's requests."""

    redirected: list[str] = field(default_factory=list)
    cdn_requests: list[tuple[str, bool]] = field(default_factory=list)  # (path, had auth)


def _forward(
    origin: str, method: str, path: str, headers: dict[str, str], body: bytes
) -> tuple[int, list[tuple[str, str]], bytes]:
    parts = urlsplit(origin)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, path, body=body or None, headers=headers)
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        conn.close()


def _serve(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _exists(origin: Any, path: str) -> bool:
    """The gateway answers a missing key itself (the S3 404), and redirects only to bytes."""
    bucket, key = urlsplit(path).path.strip("/").split("/", 1)
    try:
        origin.head_object(Bucket=bucket, Key=key)
    except origin.exceptions.ClientError:
        return False
    return True


def _is_get_object(method: str, path: str) -> bool:
    """Path-style GetObject: ``GET /<bucket>/<key>``; a listing is ``GET /<bucket>?...``."""
    return method == "GET" and urlsplit(path).path.strip("/").count("/") >= 1


@pytest.fixture
def gateway(moto_endpoint: str) -> Iterator[tuple[str, Traffic]]:
    traffic = Traffic()
    # The CDN reads the origin with its own authority, as a signed CDN URL stands for.
    creds = credentials(moto_endpoint)
    origin = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
    )

    class Cdn(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            traffic.cdn_requests.append((self.path, "Authorization" in self.headers))
            bucket, key = urlsplit(self.path).path.removeprefix("/cdn/").split("/", 1)
            body = origin.get_object(Bucket=bucket, Key=key)["Body"].read()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    cdn = _serve(Cdn)

    class Gateway(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            if _is_get_object(self.command, self.path) and _exists(origin, self.path):
                traffic.redirected.append(self.path)
                self.send_response(307)
                token = uuid.uuid4().hex
                location = f"http://127.0.0.1:{cdn.server_port}/cdn{urlsplit(self.path).path}"
                self.send_header("Location", f"{location}?X-Signature={token}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            status, reply_headers, reply = _forward(
                moto_endpoint, self.command, self.path, headers, body
            )
            self.send_response(status)
            for name, value in reply_headers:
                if name.lower() not in _HOP_BY_HOP | {"content-length"}:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        def log_message(self, *_: object) -> None:
            pass

    gate = _serve(Gateway)
    yield f"http://127.0.0.1:{gate.server_port}", traffic
    for server in (gate, cdn):
        server.shutdown()
        server.server_close()


def test_a_pull_follows_the_gateways_redirect_to_a_cdn_without_etag_or_last_modified(
    gateway: tuple[str, Traffic], moto_endpoint: str, checkpoints: list[Path], tmp_path: Path
) -> None:
    endpoint, traffic = gateway
    uri = f"s3://{make_bucket(moto_endpoint)}/models"
    store = Store(
        uri, credentials=credentials(endpoint), cache_dir=tmp_path / "c", retry=FAST_RETRY
    )
    store.push("tiny", checkpoints[0], name="step-0")
    store.push("tiny", checkpoints[1], base=checkpoints[0], name="step-1")

    puller = Store(
        uri, credentials=credentials(endpoint), cache_dir=tmp_path / "c2", retry=FAST_RETRY
    )
    puller.pull("tiny", "step-1", tmp_path / "out")

    got, want = read_tensors(tmp_path / "out"), read_tensors(checkpoints[1])
    assert got.keys() == want.keys()
    assert all(got[name].equal(tensor) for name, tensor in want.items())
    # Every object came through the CDN, and no request carried the store's signature there.
    assert traffic.redirected, "the pull read no object through the gateway"
    assert len(traffic.cdn_requests) == len(traffic.redirected)
    assert not any(had_auth for _, had_auth in traffic.cdn_requests)
