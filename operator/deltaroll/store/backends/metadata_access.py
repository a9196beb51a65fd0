"""Whether this process's S3 clients may ask the cloud instance metadata service (IMDS) for
credentials when they have none: on a cloud node that hands out the node's own role.

The operator says so from its policy (:func:`allow_in_this_process`, again on every policy
change); any other process (a worker Job, an agent, the CLI) reads
``$DELTAROLL_ALLOW_INSTANCE_METADATA``: ``true`` for every store it opens, or the store URIs
(policy patterns, whitespace-separated) it may open so. The operator gives a worker Job exactly
its store, and only a store the admin lists in ``operatorIdentityStores`` for the namespace, so a
Job for any other store (or a source the tenant names) never reaches the node's role.
"""

from __future__ import annotations

import os

from deltaroll.api.policy import INSTANCE_METADATA_ENV, allowed

_decided: bool | None = None  # the operator's policy; None: the environment says


def allow_in_this_process(allow: bool | None) -> None:
    """The operator's policy for its own clients (replaces the environment's word; None: the
    environment's word again)."""
    global _decided
    _decided = allow


def may_ask_instance_metadata(store_uri: str) -> bool:
    """Whether a client of ``store_uri`` without credentials may fall back to IMDS."""
    if _decided is not None:
        return _decided
    value = os.environ.get(INSTANCE_METADATA_ENV, "")
    return is_true(value) or allowed(store_uri, value.split())


def is_true(value: str | None) -> bool:
    """``1``, ``true`` or ``yes`` (any case): how the environment's flags say yes."""
    return (value or "").strip().lower() in ("1", "true", "yes")
