"""The store: where trainers, the operator's Jobs and every inference pod meet.

A store holds, per model, content-addressed objects, version manifests (a version = a parent
and the delta from it; publishing = writing the manifest last, conditionally), full-snapshot
anchors and human names. Backends: ``file://`` (a shared volume), ``s3://`` (obstore),
``hf://buckets/...`` (huggingface_hub). Pulls take the cheapest path through the version graph
from whatever the puller already has.

Modules, each with one job: ``uri`` (parse/validate URIs), ``names``/``keys`` (safe names and
the layout), ``backends`` (bytes in and out), ``retry``, ``manifests`` (the records),
``catalog`` (records in a store), ``transfer``/``cache`` (verified objects; ``cache_scope``
and ``cache_leases``: who may see them and who still uses them in a shared cache directory),
``graph`` (the planner), ``aliases``, ``staging`` (the shares of sharded computations),
``signing`` (publisher keys), ``signatures`` (signed versions), ``vouch`` (the checks before
signing a version someone else computed), and one module per operation: ``publish``,
``push``, ``pull``, ``gc``, ``squash``, ``log``; ``facts`` (a published version's numbers, read
back from its manifests); ``client`` is the :class:`Store` facade over all of them.
"""

from __future__ import annotations

from deltaroll.store.client import Store
from deltaroll.store.errors import (
    BaseNotInStoreError,
    BaseRequiredError,
    CorruptObjectError,
    InconsistentVersionError,
    InvalidManifestError,
    InvalidNameError,
    InvalidStoreUriError,
    NameConflictError,
    NoPathError,
    ObjectCacheError,
    ObjectNotFoundError,
    SignatureError,
    SquashError,
    StoreAccessError,
    StoreError,
    StoreRefusedError,
    TransferCancelledError,
    TransientStoreError,
    VersionNotFoundError,
)
from deltaroll.store.uri import StoreUri, parse_store_uri

__all__ = [
    "BaseNotInStoreError",
    "BaseRequiredError",
    "CorruptObjectError",
    "InconsistentVersionError",
    "InvalidManifestError",
    "InvalidNameError",
    "InvalidStoreUriError",
    "NameConflictError",
    "NoPathError",
    "ObjectCacheError",
    "ObjectNotFoundError",
    "SignatureError",
    "SquashError",
    "Store",
    "StoreAccessError",
    "StoreError",
    "StoreRefusedError",
    "StoreUri",
    "TransferCancelledError",
    "TransientStoreError",
    "VersionNotFoundError",
    "parse_store_uri",
]
