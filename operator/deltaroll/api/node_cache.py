"""The node cache's HTTP API: the contract between agents and the per-node cache DaemonSet.

One daemon per node keeps the objects its agents fetched, so each object crosses the bucket
link once per node. It holds no store credentials: an agent that misses is granted a *fill
lease*, fetches the object from the store with its own credentials and uploads it; the daemon
checks the bytes against the digest before anyone reads them. Objects are partitioned by the
requester's namespace and the store URI it names: the namespace comes from the agent's
pod-bound ServiceAccount token (checked with a TokenReview for :data:`AUDIENCE`, a token the API
server itself refuses), never from the request, so tenant A never reads what tenant B fetched.

- ``GET  /v1/objects/<sha256>?store=<uri>&size=<bytes>&wait=<s>``, ``Authorization: Bearer``:
  200 with the object (checked against its digest as it is read); 404 with a
  :class:`FillLease` (nobody has it: fetch it and ``PUT`` it); 409 with a :class:`NodeCacheBusy`
  (another agent was filling it and did not finish within ``wait``: fetch it yourself). With
  ``lease=0`` (a peek: the caller has other sources) a miss is a 404 without a lease; a fill
  under way is waited for as by any GET (a waiting agent takes the object as it lands).
  Each namespace keeps at most its share of the node's disk and no object is larger than the
  daemon's cap (400 for a larger ``size``: fetch it yourself).
- ``PUT  /v1/objects/<sha256>?store=<uri>&size=<bytes>`` with header :data:`LEASE_HEADER`: the
  bytes; 201 once verified and cached, 422 if they are not the object, 409 if the lease is not
  (or no longer) the caller's.
- ``POST /v1/objects/<sha256>/abandon?store=<uri>`` with :data:`LEASE_HEADER`: the fill failed;
  waiters stop waiting at once (one of them gets the next lease).
- ``POST /v1/objects/<sha256>/renew?store=<uri>`` with :data:`LEASE_HEADER`: the holder is still
  fetching; 200 with the :class:`FillLease`, good for another ``ttl_s``; 409 if the fill is not
  the caller's (another agent's, or ended: uploaded, abandoned, or lapsed and handed to a waiter;
  a lapsed lease that no waiter has taken yet is renewed). A holder renews every
  :data:`RENEW_EVERY` of ``ttl_s`` while it fetches, and an upload keeps the lease while its
  bytes arrive, so a live fill of any length keeps its lease and the lease of an agent that died
  passes to the next within ``ttl_s`` (not the length of the longest download there could be).
- ``GET /metrics`` (Prometheus) and ``GET /healthz``: no token.
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

AUDIENCE: Final = "deltaroll-node-cache"
OBJECTS_PATH: Final = "/v1/objects"
ABANDON_SUFFIX: Final = "/abandon"
RENEW_SUFFIX: Final = "/renew"
#: The fraction of a lease's ``ttl_s`` after which its holder renews it.
RENEW_EVERY: Final = 0.25
#: How long a fill lease lasts unless renewed: how soon a crashed agent's fill passes on.
DEFAULT_FILL_TTL_S: Final = 20.0
LEASE_HEADER: Final = "X-Deltaroll-Fill-Lease"
STORE_PARAM: Final = "store"
SIZE_PARAM: Final = "size"
WAIT_PARAM: Final = "wait"
LEASE_PARAM: Final = "lease"
MAX_STORE_URI: Final = 1024
#: The longest a GET may ask to wait for another agent's fill.
MAX_WAIT_S: Final = 600.0
DEFAULT_PORT: Final = 8470

LeaseId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]


class FillLease(BaseModel):
    """The body of a 404 (and of a renewal): the caller fetches the object and uploads it,
    renewing the lease while it fetches; one not renewed within ``ttl_s`` passes on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lease: LeaseId
    ttl_s: float = Field(
        gt=0, description="after this without a renewal the lease passes to the next agent"
    )


class NodeCacheBusy(BaseModel):
    """The body of a 409: why the caller should fetch the object from the store itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: str
