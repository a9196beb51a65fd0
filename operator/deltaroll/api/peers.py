"""Agents serving their verified objects to the other agents of their ModelDeployment.

The contract every agent keeps, so that a fleet moves each object across the bucket link a few
times, not once per pod:

- **Where.** A pod whose agent serves peers says so with the annotation
  :data:`~deltaroll.api.annotations.POD_PEER_PORT`; the address is ``status.podIP``. Agents find
  each other by listing the pods of their namespace that match the ModelDeployment's selector.
- **Who may ask.** Every request carries ``Authorization: Bearer <token>``: the caller's
  pod-bound ServiceAccount token for :data:`AUDIENCE` (a projected volume; a token the API
  server itself refuses, so a peer that receives it holds no key to anything). The server asks
  the API server who it is (TokenReview) and serves only pods of its own namespace that its
  ModelDeployment's selector lists: 401 without a token, 403 otherwise (the body says why).
  A tenant's other ModelDeployments may read other stores with other credentials: they get
  nothing from it either.
- **What.** ``GET`` :func:`object_path` answers 200 with the object's bytes (only objects the
  serving agent holds verified, of its own model), 404 when it holds none, 503 when it already
  serves as many peers as it allows. With the header :data:`WAIT_HEADER` (seconds, at most
  :data:`MAX_WAIT_S`) a caller asks a peer that is still fetching the object to answer once it
  holds it (or with the 404 when the wait is over, saying in :data:`ARRIVING_HEADER` how much of
  it has arrived when it is fetching it): it waits for the object instead of polling.
  The receiver hashes what it got and keeps it only if the sha256 is the name it asked for: a
  peer cannot make another pod load anything.
- **Who seeds.** :func:`seeders`: for each object the same few live peers told to serve the same
  version (rendezvous hashing of the pod names by the object's digest), ranked among the pods
  the operator named in :data:`~deltaroll.api.annotations.POD_SEED_AMONG` (:func:`seed_among`,
  of the pods told the version that do not hold it yet) where any of them is listed, so that
  agents which list the pods while the operator is still telling the others agree on them
  (each of the first agents once saw itself first among the few pods told so far and fetched
  the object too); else among the pods listed as told to serve the version. The first fetches
  it from the bucket at once; the next stand by, asking the first, and fetch it from the bucket
  only when the first is gone or slow; the rest ask the peers, seeders first, and fall back to
  the bucket when no peer has served it in time.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable
from typing import Final

from deltaroll.api.common import K8S_NAME_PATTERN

AUDIENCE: Final = "deltaroll-peer"
"""The audience of the token an agent presents to its peers (and only to them)."""
PEER_PORT_NAME: Final = "deltaroll-peer"
"""The containerPort name of the agent's peer server in the chart's pod snippet."""
DEFAULT_PEER_PORT: Final = 8082
DEFAULT_SEEDERS: Final = 2
"""How many agents may fetch each object from the bucket: the first at once, the second only when
the first is gone or slow (so a seeder dying mid-transfer does not leave every other pod waiting
out the fallback, and the object still crosses the bucket link once when nothing fails)."""
SEED_CANDIDATES: Final = 8
"""How many pods the operator names to seed a version's objects: each object's seeders are
ranked among them, so a fleet's bucket reads spread over a few pods, and the annotation stays
small whatever the fleet's size."""
ARRIVING_HEADER: Final = "X-Deltaroll-Arriving"
"""Response header of a 404: how many bytes of the object the server has received so far, when
it is fetching it (a standby seeder waits longer while the first seeder's download grows)."""
WAIT_HEADER: Final = "X-Deltaroll-Wait"
"""Request header: how many seconds the server may hold the request for an object it lacks."""
MAX_WAIT_S: Final = 10.0
"""The longest a peer holds one request (a waiting request holds one of its serving slots)."""

_OBJECT_PATH = re.compile(
    r"^/v1/models/(?P<model>[A-Za-z0-9][A-Za-z0-9._-]{0,199})/objects/(?P<digest>[0-9a-f]{64})$"
)


def object_path(model: str, digest: str) -> str:
    """The route of one object on a peer's server."""
    return f"/v1/models/{model}/objects/{digest}"


def parse_object_path(path: str) -> tuple[str, str] | None:
    """(model, digest) of a request path; None for anything else (a query, ``..``, a bad name)."""
    match = _OBJECT_PATH.match(path)
    return None if match is None else (match["model"], match["digest"])


def parse_wait(value: str | None) -> float:
    """The seconds a request's :data:`WAIT_HEADER` asks for, at most :data:`MAX_WAIT_S`; 0
    without one. Raises ValueError, naming the header, for anything but a number >= 0."""
    if value is None:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{WAIT_HEADER} must be a number of seconds >= 0, not {value[:40]!r}")
    return min(seconds, MAX_WAIT_S)


def rank(digest: str, names: Iterable[str]) -> list[str]:
    """``names`` (pod names) in the order every agent agrees on for ``digest``: highest
    rendezvous weight first. A pod joining or leaving moves only the objects it ranks first."""

    def weight(name: str) -> bytes:
        return hashlib.sha256(f"{digest}\0{name}".encode()).digest()

    return sorted(set(names), key=weight, reverse=True)


def seeders(digest: str, names: Iterable[str], count: int = DEFAULT_SEEDERS) -> list[str]:
    """The pods among ``names`` that may fetch ``digest`` from the bucket: the first at once,
    the others when it is gone or slow."""
    return rank(digest, names)[:count]


_POD_NAME = re.compile(K8S_NAME_PATTERN)


def seed_among(version: str, pulling: Iterable[str]) -> str:
    """The :data:`~deltaroll.api.annotations.POD_SEED_AMONG` value for ``version``: the first
    :data:`SEED_CANDIDATES` by rendezvous weight of the pods told it that do not hold it yet (a
    pod joining moves the names only where it ranks among them)."""
    return ",".join(rank(version, pulling)[:SEED_CANDIDATES])


def parse_seed_among(value: str) -> tuple[str, ...]:
    """The pod names of a :data:`~deltaroll.api.annotations.POD_SEED_AMONG` value: at most
    :data:`SEED_CANDIDATES`, pod names only (anything else is left out: the annotation only
    steers who reads the bucket, and the agent ranks among the pods it lists without it)."""
    names = (part.strip() for part in value.split(",", SEED_CANDIDATES)[:SEED_CANDIDATES])
    return tuple(dict.fromkeys(name for name in names if _POD_NAME.match(name)))
