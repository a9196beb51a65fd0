"""JSON over HTTP for the engine adapters, on the standard library's ``urllib``.

Why not aiohttp: the adapters make one request at a time, each possibly minutes long (a weight
reload), from whatever the caller runs in; a blocking call is the simplest thing that fits both a
thread and ``asyncio.to_thread``. Non-2xx answers are returned, not raised, because every engine
puts its reason in the body and the adapter knows how to read it; only transport failures raise.
"""

from __future__ import annotations

import ipaddress
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from deltaroll.engines.errors import EngineConfigError, EngineUnreachableError


@dataclass(frozen=True)
class HttpReply:
    """An engine's answer: status, parsed JSON body (None if not JSON) and the raw text."""

    status: int
    body: Any
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def message(self) -> str:
        """The engine's own reason, wherever its framework put it."""
        body = self.body
        if isinstance(body, dict):
            error = body.get("error")
            if isinstance(error, dict) and error.get("message"):
                return str(error["message"])  # vLLM / OpenAI: {"error": {"message": ...}}
            for key in ("message", "detail", "error"):
                if body.get(key):
                    return str(body[key])  # SGLang "message", FastAPI "detail"
        return self.text.strip()[:2000] or f"HTTP {self.status} with an empty body"


def normalize_endpoint(endpoint: str) -> str:
    """Check an engine URL (``http(s)://host:port[/prefix]``) and return it without a trailing /."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EngineConfigError(
            f"engine endpoint {endpoint!r} is not an http(s) URL: use e.g. http://127.0.0.1:8000"
        )
    if parts.username or parts.password:
        raise EngineConfigError(
            "engine endpoint must not carry credentials in the URL: "
            f"use {parts.scheme}://{parts.hostname}:{parts.port or ''} and a network policy instead"
        )
    if parts.query or parts.fragment:
        raise EngineConfigError(f"engine endpoint {endpoint!r} must not have a query or fragment")
    return endpoint.rstrip("/")


def is_loopback(url: str) -> bool:
    """Whether ``url``'s host is this machine's loopback (``localhost``, 127.0.0.0/8, ``::1``):
    inside a pod, an address no other pod reaches."""
    host = urlsplit(url).hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def request_json(
    method: str,
    url: str,
    body: dict[str, Any] | None = None,
    *,
    timeout: float,
    endpoint: str,
) -> HttpReply:
    """Send ``body`` as JSON (no body when None) and return the engine's reply."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return _reply(response.status, response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return _reply(exc.code, exc.read())
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EngineUnreachableError(endpoint, str(reason)) from exc


def _reply(status: int, raw: bytes) -> HttpReply:
    text = raw.decode("utf-8", errors="replace")
    try:
        body = json.loads(text) if text.strip() else None
    except json.JSONDecodeError:
        body = None
    return HttpReply(status=status, body=body, text=text)


#: Health checks must answer fast; a slow one means "not healthy now".
HEALTH_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class EngineHttp:
    """An engine's base URL and the timeout for its slow calls (reloads)."""

    endpoint: str
    timeout: float

    def post(self, path: str, body: dict[str, Any] | None = None) -> HttpReply:
        return request_json(
            "POST", self.endpoint + path, body, timeout=self.timeout, endpoint=self.endpoint
        )

    def get(self, path: str, *, timeout: float | None = None) -> HttpReply:
        return request_json(
            "GET", self.endpoint + path, timeout=timeout or self.timeout, endpoint=self.endpoint
        )

    def healthy(self, path: str = "/health") -> bool:
        """True when ``GET path`` answers 2xx within :data:`HEALTH_TIMEOUT_S`."""
        try:
            return self.get(path, timeout=HEALTH_TIMEOUT_S).ok
        except EngineUnreachableError:
            return False
