"""The node cache daemon: one per node, so each object crosses the bucket link once per node.

The contract is :mod:`deltaroll.api.node_cache`. Objects live under the daemon's host folder in
one :class:`~deltaroll.store.cache.ObjectCache` per partition, ``<namespace>/<sha256 of
(namespace, store URI)>``; the namespace is the requester's, from its token
(:mod:`.pod_tokens`); what it keeps stays within the disk budgets of the node and of each
namespace (:mod:`.node_cache_budget`). A miss grants one agent a fill lease; others asking for
the same object wait for that fill (up to their ``wait``), then read it, or, if the fill failed
or its lease ran out (its agent crashed: a live holder renews it while it fetches), one of them
gets the next lease. An upload is hashed as it lands and enters the cache only if it is the
object; a read sends only a file known to be the object (hashed when it entered, and again if
it changed on disk since): a file altered on disk is removed and reported as a miss, never
served. The agent hashes what it receives as well: it trusts no daemon either.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from deltaroll.agent.node_cache_budget import DiskBudget, Limits
from deltaroll.agent.pod_tokens import Refused, Requester, TokenAuthenticator, bearer_token
from deltaroll.api.node_cache import (
    ABANDON_SUFFIX,
    DEFAULT_FILL_TTL_S,
    LEASE_HEADER,
    LEASE_PARAM,
    MAX_STORE_URI,
    MAX_WAIT_S,
    OBJECTS_PATH,
    RENEW_SUFFIX,
    SIZE_PARAM,
    STORE_PARAM,
    WAIT_PARAM,
    FillLease,
    NodeCacheBusy,
)
from deltaroll.api.object_cache import PARTIAL_DIR
from deltaroll.listening import LISTEN_BACKLOG
from deltaroll.store.cache import ObjectCache, staged_hash
from deltaroll.store.names import is_digest

log = structlog.get_logger(__name__)

_BLOCK: Final = 1 << 20
DEFAULT_MAX_BYTES: Final = 100 << 30


@dataclass
class Fill:
    """One agent fetching one object for the others."""

    lease: str
    holder: str  # the pod uid
    deadline: float
    done: asyncio.Event = field(default_factory=asyncio.Event)


class NodeCacheMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.served_bytes = Counter(
            "deltaroll_node_cache_served_bytes",
            "Bytes of objects served to agents from the node cache.",
            registry=self.registry,
        )
        self.filled = Counter(
            "deltaroll_node_cache_filled_objects",
            "Objects an agent fetched from its store and uploaded, verified and kept.",
            registry=self.registry,
        )
        self.filled_bytes = Counter(
            "deltaroll_node_cache_filled_bytes",
            "Bytes of the objects filled (what crossed the bucket link for this node).",
            registry=self.registry,
        )
        self.leases = Counter(
            "deltaroll_node_cache_leases",
            "Fill leases granted, and how they ended.",
            ["outcome"],
            registry=self.registry,
        )
        self.evicted = Counter(
            "deltaroll_node_cache_evicted_objects",
            "Objects removed, least recently used first, to keep within the disk budget.",
            registry=self.registry,
        )
        self.refused = Counter(
            "deltaroll_node_cache_refused",
            "Requests refused, by reason.",
            ["reason"],
            registry=self.registry,
        )


class NodeCache:
    """The daemon's state: the partitions on disk, the fills in flight, the metrics."""

    def __init__(
        self,
        directory: Path,
        authenticator: TokenAuthenticator,
        *,
        fill_ttl_s: float = DEFAULT_FILL_TTL_S,
        limits: Limits | None = None,
    ) -> None:
        self.directory = directory
        self.authenticator = authenticator
        self.fill_ttl_s = fill_ttl_s
        self.budget = DiskBudget(directory, limits or Limits.of(DEFAULT_MAX_BYTES))
        self.fills: dict[tuple[str, str], Fill] = {}
        self.metrics = NodeCacheMetrics()

    def clear_leftovers(self) -> None:
        """Remove what a previous run left and no budget counts: uploads left half-done (the
        daemon is their only writer) and objects of the layout before each namespace had its
        folder (``<partition>/<sha256>``; a namespace folder holds only partition folders)."""
        for partial in [
            *self.directory.glob(f"*/*/{PARTIAL_DIR}"),
            *self.directory.glob(f"*/{PARTIAL_DIR}"),
        ]:
            shutil.rmtree(partial, ignore_errors=True)
        for path in self.directory.glob("*/*"):
            if is_digest(path.name) and path.is_file():
                path.unlink(missing_ok=True)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get(OBJECTS_PATH + "/{digest}", self._get)
        app.router.add_put(OBJECTS_PATH + "/{digest}", self._put)
        app.router.add_post(OBJECTS_PATH + "/{digest}" + ABANDON_SUFFIX, self._abandon)
        app.router.add_post(OBJECTS_PATH + "/{digest}" + RENEW_SUFFIX, self._renew)
        return app

    # ---------------------------------------------------------------- requests

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _get(self, request: web.Request) -> web.StreamResponse:
        requester, cache, digest, size = await self._parse(request)
        try:
            wait_s = min(float(request.query.get(WAIT_PARAM, "0")), MAX_WAIT_S)
        except ValueError:
            raise self._refuse("bad_request", 400, f"{WAIT_PARAM} must be a number") from None
        key = (str(cache.root), digest)
        deadline = time.monotonic() + max(0.0, wait_s)
        while True:
            served = await self._serve(request, requester.namespace, cache, digest, size)
            if served is not None:
                return served
            fill = self.fills.get(key)
            now = time.monotonic()
            if fill is not None and fill.deadline <= now:
                self.metrics.leases.labels("expired").inc()
                self._end_fill(key, fill)
                fill = None
            if fill is None and request.query.get(LEASE_PARAM) == "0":
                return web.json_response({"reason": "not cached"}, status=404)
            if fill is None or fill.holder == requester.pod_uid:
                return self._grant(key, requester, fill)
            remaining = min(deadline, fill.deadline) - now
            if remaining <= 0 or deadline <= now:
                self.metrics.refused.labels("busy").inc()
                reason = "another agent on this node is fetching it; fetch it yourself"
                return _model(NodeCacheBusy(reason=reason), 409)
            try:
                await asyncio.wait_for(fill.done.wait(), remaining)
            except TimeoutError:
                continue

    async def _put(self, request: web.Request) -> web.Response:
        requester, cache, digest, size = await self._parse(request)
        key = (str(cache.root), digest)
        fill = self._held(key, request, requester)
        if fill is None:
            raise self._refuse("no_lease", 409, "no fill lease of yours for this object")
        if request.content_length != size:
            raise self._refuse("bad_request", 400, f"the body must be {size} bytes")
        staged = cache.staging_path(digest)
        hasher = hashlib.sha256()
        try:
            with open(staged, "xb") as handle:
                async for block in request.content.iter_chunked(_BLOCK):
                    self._extend(fill)  # no waiter takes over while the bytes arrive
                    # off the loop: a slow disk holds no GET
                    await asyncio.to_thread(_write_hashed, handle, hasher, block)
                hashed = staged_hash(handle, hasher.hexdigest())
            self._extend(fill)
            actual = await asyncio.to_thread(cache.commit, digest, staged, hashed=hashed)
        finally:
            staged.unlink(missing_ok=True)
            self._end_fill(key, fill)
        if actual != digest:
            self.metrics.leases.labels("corrupt").inc()
            raise self._refuse("corrupt_upload", 422, f"the bytes uploaded are {actual}")
        evicted = self.budget.added(requester.namespace, cache.path(digest), size)
        self.metrics.evicted.inc(len(evicted))
        self.metrics.leases.labels("filled").inc()
        self.metrics.filled.inc()
        self.metrics.filled_bytes.inc(size)
        log.info("node_cache.filled", digest=digest, size=size, pod=requester.pod_name)
        return web.json_response({"digest": digest}, status=201)

    async def _abandon(self, request: web.Request) -> web.Response:
        requester, cache, digest, _ = await self._parse(request, size_needed=False)
        key = (str(cache.root), digest)
        if (fill := self._held(key, request, requester)) is not None:
            self.metrics.leases.labels("abandoned").inc()
            self._end_fill(key, fill)
        return web.json_response({}, status=200)

    async def _renew(self, request: web.Request) -> web.Response:
        requester, cache, digest, _ = await self._parse(request, size_needed=False)
        fill = self._held((str(cache.root), digest), request, requester)
        if fill is None:
            raise self._refuse("no_lease", 409, "no fill lease of yours for this object")
        self._extend(fill)
        return _model(FillLease(lease=fill.lease, ttl_s=self.fill_ttl_s), 200)

    # ---------------------------------------------------------------- helpers

    async def _parse(
        self, request: web.Request, *, size_needed: bool = True
    ) -> tuple[Requester, ObjectCache, str, int]:
        """The requester (from its token), its partition, the digest and the declared size."""
        token = bearer_token(request.headers.get("Authorization", ""))
        if token is None:
            raise self._refuse("unauthenticated", 401, "a bearer token is required")
        try:
            requester = await self.authenticator.requester(token)
        except Refused as exc:
            raise self._refuse("unauthenticated", 403, str(exc)) from None
        digest = request.match_info["digest"]
        store = request.query.get(STORE_PARAM, "")
        if not is_digest(digest) or not store or len(store) > MAX_STORE_URI:
            raise self._refuse("bad_request", 400, "a sha256 digest and a store URI are required")
        size = 0
        if size_needed:
            try:
                size = int(request.query.get(SIZE_PARAM, ""))
            except ValueError:
                raise self._refuse("bad_request", 400, f"{SIZE_PARAM} must be a number") from None
            if not 0 <= size <= self.budget.limits.object:
                raise self._refuse(
                    "too_large",
                    400,
                    f"{SIZE_PARAM} must be within 0..{self.budget.limits.object} "
                    "(the node cache's largest object): fetch it from the store",
                )
        partition = hashlib.sha256(json.dumps([requester.namespace, store]).encode()).hexdigest()
        folder = self.directory / requester.namespace / partition[:32]
        return requester, ObjectCache(folder), digest, size

    def _grant(self, key: tuple[str, str], requester: Requester, fill: Fill | None) -> web.Response:
        if fill is None:
            fill = Fill(
                secrets.token_hex(16), requester.pod_uid, time.monotonic() + self.fill_ttl_s
            )
            self.fills[key] = fill
            self.metrics.leases.labels("granted").inc()
        return _model(FillLease(lease=fill.lease, ttl_s=self.fill_ttl_s), 404)

    def _held(
        self, key: tuple[str, str], request: web.Request, requester: Requester
    ) -> Fill | None:
        """The fill of ``key`` if the request holds its lease (its id, sent by the pod it was
        granted to); None when it is another agent's, or ended."""
        fill = self.fills.get(key)
        if fill is None or fill.lease != request.headers.get(LEASE_HEADER, ""):
            return None
        return fill if fill.holder == requester.pod_uid else None

    def _extend(self, fill: Fill) -> None:
        """The fill's agent is alive and at it: its lease lasts another ``fill_ttl_s``."""
        fill.deadline = time.monotonic() + self.fill_ttl_s

    def _end_fill(self, key: tuple[str, str], fill: Fill) -> None:
        if self.fills.get(key) is fill:
            del self.fills[key]
        fill.done.set()

    async def _serve(
        self, request: web.Request, namespace: str, cache: ObjectCache, digest: str, size: int
    ) -> web.StreamResponse | None:
        """Send the cached object if the file is the object (hashed before the first byte)."""
        handle = await asyncio.to_thread(_open_checked, cache, digest, size)
        if handle is None:
            if not cache.path(digest).exists():  # removed as wrong, or never there
                self.budget.forget(namespace, cache.path(digest))
            return None
        self.budget.used(namespace, cache.path(digest))
        try:
            response = web.StreamResponse(
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)}
            )
            await response.prepare(request)
            while block := await asyncio.to_thread(handle.read, _BLOCK):
                await response.write(block)
            await response.write_eof()
        finally:
            handle.close()
        self.metrics.served_bytes.inc(size)
        return response

    def _refuse(self, reason: str, status: int, message: str) -> web.HTTPException:
        self.metrics.refused.labels(reason).inc()
        return _ERRORS[status](
            text=json.dumps({"reason": message}), content_type="application/json"
        )


_ERRORS: Final[dict[int, type[web.HTTPException]]] = {
    400: web.HTTPBadRequest,
    401: web.HTTPUnauthorized,
    403: web.HTTPForbidden,
    409: web.HTTPConflict,
    422: web.HTTPUnprocessableEntity,
}


def _open_checked(cache: ObjectCache, digest: str, size: int) -> BinaryIO | None:
    """The cached file, open and known to hold ``digest`` (hashed when it entered, again only
    if the file changed since), if it has ``size`` bytes; None if absent or wrong (a wrong one
    is removed, as the cache removes any file that fails its check)."""
    handle = cache.open_verified(digest)
    if handle is not None and os.fstat(handle.fileno()).st_size != size:  # the request is wrong
        handle.close()
        return None
    return handle


def _write_hashed(handle: BinaryIO, hasher: Any, block: bytes) -> None:
    hasher.update(block)
    handle.write(block)


def _model(model: FillLease | NodeCacheBusy, status: int) -> web.Response:
    return web.Response(
        text=model.model_dump_json(), status=status, content_type="application/json"
    )


async def serve(cache: NodeCache, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve ``cache`` on ``host:port`` until ``stop`` is set."""
    cache.clear_leftovers()
    runner = web.AppRunner(cache.app(), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, backlog=LISTEN_BACKLOG).start()
        log.info("node_cache.listening", host=host, port=port, node=cache.authenticator.node_name)
        await stop.wait()
    finally:
        await runner.cleanup()
