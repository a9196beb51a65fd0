"""An agent's side of its node's cache (:mod:`deltaroll.api.node_cache`): one download per node.

For each object it lacks, the agent asks the node cache first. A hit is streamed into the
agent's own cache staging and hashed on the way, once (a wrong byte and it is fetched from the
store instead; the cache commits it with that hash); a miss comes with a fill lease: the agent
downloads from the store with its own credentials, as without a node cache, and uploads the
bytes for the node's other agents, renewing the lease while it downloads (if the agent dies,
the lease passes to another within its ``ttl_s``). An agent that another is filling for waits up
to ``wait_s``;
any failure of the node cache (down, busy, refusing the token) is logged and the agent downloads
the object itself: the node cache can make a pull cheaper, never stop it. An agent that gets
objects from its peers claims the same fill lease (:meth:`NodeCacheClient.claim`), so an object
crosses the node's link once whichever source it comes from. The token is the
agent's pod-bound ServiceAccount token for the node cache's audience (re-read per request: the
kubelet rotates it).
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final
from urllib.parse import quote

import structlog
import urllib3

from deltaroll.api.node_cache import (
    ABANDON_SUFFIX,
    LEASE_HEADER,
    LEASE_PARAM,
    OBJECTS_PATH,
    RENEW_EVERY,
    RENEW_SUFFIX,
    SIZE_PARAM,
    STORE_PARAM,
    WAIT_PARAM,
    FillLease,
)
from deltaroll.store.backends import Backend, ProgressCallback
from deltaroll.store.cache import StagedHash, staged_hash
from deltaroll.store.manifests import ObjectRef

log = structlog.get_logger(__name__)

_BLOCK: Final = 1 << 20
DEFAULT_WAIT_S: Final = 60.0
#: The shortest interval between renewals, whatever ``ttl_s`` a node cache grants.
MIN_RENEW_S: Final = 0.1


class NodeCacheClient:
    """Brings objects of one store through the node cache at ``url``."""

    def __init__(
        self,
        url: str,
        token_file: Path,
        store_uri: str,
        *,
        wait_s: float = DEFAULT_WAIT_S,
        on_node_bytes: Callable[[int], None] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.token_file = token_file
        self.store_uri = store_uri
        self.wait_s = wait_s
        self.on_node_bytes = on_node_bytes
        timeout = urllib3.Timeout(connect=5.0, read=wait_s + 30.0)
        self._http = urllib3.PoolManager(timeout=timeout, retries=False, maxsize=8)
        self._lock = threading.Lock()
        self.node_bytes = 0

    def bring(
        self,
        backend: Backend,
        key: str,
        ref: ObjectRef,
        staged: Path,
        progress: ProgressCallback | None = None,
    ) -> StagedHash | None:
        """Put object ``ref`` (store key ``key``) at ``staged``: from the node cache if it has it
        (its hash, taken as it arrived: commit it with that), else from the store (None),
        uploading it when the node cache granted a lease."""
        got = self._ask(ref, staged, self.wait_s, lease=True)
        if isinstance(got, StagedHash):
            if progress is not None:
                progress(ref.size)
            return got
        lease: FillLease | None = None
        if isinstance(got, FillLease):
            lease = got
        else:
            log.warning("store.node_cache_unused", digest=ref.digest, reason=got.value)
        try:
            with LeaseKeeper(self, ref, lease) if lease is not None else contextlib.nullcontext():
                backend.download_files([(key, staged)], progress=progress)
        except BaseException:
            if lease is not None:
                self.abandon(ref, lease)
            raise
        if lease is not None:
            self.upload(ref, lease, staged)
        return None

    def claim(self, ref: ObjectRef, staged: Path, wait_s: float) -> StagedHash | FillLease | Claim:
        """Put object ``ref`` at ``staged`` if the node cache holds it now, or once a fill under
        way lands within ``wait_s`` (its hash, to commit it with); else the lease to fetch it for
        the node (from wherever the caller gets it: :meth:`upload` it, or :meth:`abandon`), or
        why neither (FILLING: ask again to keep waiting)."""
        return self._ask(ref, staged, wait_s, lease=True)

    def upload(self, ref: ObjectRef, lease: FillLease, path: Path) -> None:
        """Give the node the object ``ref`` this agent fetched under ``lease`` (``path``)."""
        self._quietly("PUT", ref, lease, body=path)

    def abandon(self, ref: ObjectRef, lease: FillLease) -> None:
        """Give up the fill of ``ref``: the node's waiting agents stop waiting at once."""
        self._quietly("POST", ref, lease, suffix=ABANDON_SUFFIX)

    def renew(self, ref: ObjectRef, lease: FillLease, timeout_s: float) -> bool:
        """Keep the fill of ``ref`` this agent's for another ``lease.ttl_s``; False once the
        node cache says it is not (409: it lapsed and another agent took it, or it ended). A
        request that fails otherwise is only logged: the next renewal may get through."""
        url = self._object_url(ref, RENEW_SUFFIX)
        try:
            response = self._http.request(
                "POST", url, headers=self._headers(lease), timeout=timeout_s
            )
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            log.info("store.node_cache_renewal_failed", digest=ref.digest, error=str(exc))
            return True
        if response.status == 409:
            log.warning("store.node_cache_lease_lost", digest=ref.digest,
                        hint="another agent of the node may fetch it too")  # fmt: skip
            return False
        if response.status != 200:
            log.info("store.node_cache_renewal_failed", digest=ref.digest,
                     status=response.status)  # fmt: skip
        return True

    def take(self, ref: ObjectRef, staged: Path, wait_s: float = 0.0) -> StagedHash | Claim:
        """Put object ``ref`` at ``staged`` if the node cache holds it now, or once a fill
        under way lands within ``wait_s`` (its hash, to commit it with); otherwise why not,
        leaving the object to the caller's other sources: a peek asks for no fill lease."""
        got = self._ask(ref, staged, wait_s, lease=False)
        assert not isinstance(got, FillLease)  # a peek is never granted one
        return got

    def _ask(
        self, ref: ObjectRef, staged: Path, wait_s: float, *, lease: bool
    ) -> StagedHash | FillLease | Claim:
        try:
            got = self._get(ref, staged, wait_s=wait_s, lease=lease)
        except NodeCacheRefused as exc:
            if exc.status == 409:  # NodeCacheBusy: the other agent's fill has not landed yet
                return Claim.FILLING
            log.info("store.node_cache_unused", digest=ref.digest, error=str(exc))
            return Claim.UNAVAILABLE
        except (OSError, urllib3.exceptions.HTTPError, ValueError) as exc:
            # ValueError: a 404 whose body is not a lease (a proxy's page, another service)
            log.info("store.node_cache_unused", digest=ref.digest, error=str(exc))
            return Claim.UNAVAILABLE
        if got is None:
            return Claim.MISSING
        if isinstance(got, StagedHash):
            self._count(ref.size)
        return got

    def _count(self, size: int) -> None:
        with self._lock:
            self.node_bytes += size
        if self.on_node_bytes is not None:
            self.on_node_bytes(size)

    # ---------------------------------------------------------------- requests

    def _object_url(self, ref: ObjectRef, suffix: str = "") -> str:
        query = f"{STORE_PARAM}={quote(self.store_uri, safe='')}&{SIZE_PARAM}={ref.size}"
        return f"{self.url}{OBJECTS_PATH}/{ref.digest}{suffix}?{query}"

    def _headers(self, lease: FillLease | None = None) -> dict[str, str]:
        token = self.token_file.read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        if lease is not None:
            headers[LEASE_HEADER] = lease.lease
        return headers

    def _get(
        self, ref: ObjectRef, staged: Path, wait_s: float, *, lease: bool
    ) -> StagedHash | FillLease | None:
        """The object into ``staged`` (its hash), the lease to fill it, or (``lease`` False)
        None on a miss; raises otherwise."""
        url = f"{self._object_url(ref)}&{WAIT_PARAM}={wait_s}"
        if not lease:
            url += f"&{LEASE_PARAM}=0"
        response = self._http.request("GET", url, headers=self._headers(), preload_content=False)
        try:
            if response.status == 404:
                return FillLease.model_validate_json(response.read(1 << 16)) if lease else None
            if response.status != 200:
                raise NodeCacheRefused(response.status, response.read(4096))
            hasher = hashlib.sha256()
            written = 0
            with open(staged, "wb") as handle:
                for block in response.stream(_BLOCK):
                    written += len(block)
                    if written > ref.size:
                        break
                    hasher.update(block)
                    handle.write(block)
                hashed = staged_hash(handle, hasher.hexdigest())
            if written != ref.size or hashed.digest != ref.digest:
                staged.unlink(missing_ok=True)
                raise NodeCacheRefused(200, b"the bytes served are not the object")
            return hashed
        finally:
            response.release_conn()

    def _quietly(
        self,
        method: str,
        ref: ObjectRef,
        lease: FillLease,
        *,
        suffix: str = "",
        body: Path | None = None,
    ) -> None:
        """Upload or abandon a fill; a failure only costs the node's other agents a download."""
        url = self._object_url(ref, suffix)
        try:
            if body is None:
                response = self._http.request(method, url, headers=self._headers(lease))
            else:
                with open(body, "rb") as data:
                    headers = self._headers(lease) | {"Content-Length": str(ref.size)}
                    response = self._http.request(method, url, headers=headers, body=data)
            if response.status >= 300:
                raise NodeCacheRefused(response.status, response.data[:4096])
        except (OSError, urllib3.exceptions.HTTPError, NodeCacheRefused) as exc:
            log.warning("store.node_cache_fill_failed", digest=ref.digest, error=str(exc))


class LeaseKeeper:
    """Renews a fill lease from a thread until :meth:`stop` (or the lease is lost): a fill of
    any length keeps it, and once this process is gone it lapses within its ``ttl_s``. A
    renewal waits at most one interval for its answer, so a stalled node cache delays nothing
    for longer."""

    def __init__(self, client: NodeCacheClient, ref: ObjectRef, lease: FillLease) -> None:
        self._done = threading.Event()
        self._interval = max(MIN_RENEW_S, lease.ttl_s * RENEW_EVERY)

        def renew_until_done() -> None:
            while not self._done.wait(self._interval) and client.renew(
                ref, lease, timeout_s=self._interval
            ):
                pass

        self._thread = threading.Thread(target=renew_until_done, name="lease-keeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing (the caller uploads or abandons the fill next)."""
        self._done.set()
        self._thread.join(2 * self._interval)  # a daemon thread: one still waiting dies with us

    def __enter__(self) -> LeaseKeeper:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


class Claim(enum.Enum):
    """Why the node cache gave neither the object nor a fill lease."""

    MISSING = "the node cache does not hold it, and no agent of the node is fetching it"
    FILLING = "another agent of the node is fetching it"
    UNAVAILABLE = "the node cache cannot help now (logged)"


class NodeCacheRefused(Exception):
    """The node cache answered, but not with the object or a lease."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        super().__init__(f"node cache answered {status}: {body.decode(errors='replace')[:300]}")
