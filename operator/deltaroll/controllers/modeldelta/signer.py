"""The operator's signing key, and signing what a ModelDelta's Job published with it.

A ModelDelta's Job runs in the tenant's namespace, where anyone who can create pods can read its
Secrets, so the private key never goes there: the chart mounts it into the operator alone
(``signing.existingSecret``), ``deltaroll operator run --signing-key`` loads it at start-up, and
the operator signs after its checks (:mod:`deltaroll.store.vouch`), in its own process. Without
a key the operator signs nothing and ModelDeltas behave as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import structlog

from deltaroll.api.modeldelta import ModelDelta
from deltaroll.checkpoint.errors import CheckpointError
from deltaroll.controllers.modeldelta.planner import SignVersion
from deltaroll.store import Store, StoreAccessError, StoreError, TransientStoreError
from deltaroll.store.signing import SigningKey
from deltaroll.store.vouch import vouch_and_sign

log = structlog.get_logger("deltaroll.controllers.modeldelta")
_key: SigningKey | None = None


def configure(key: SigningKey | None) -> None:
    """Use ``key`` for every version ModelDeltas publish from now on (None: sign nothing)."""
    global _key
    _key = key
    if key is not None:
        log.info("operator.signing_key", key_id=key.public.key_id)


def key() -> SigningKey | None:
    return _key


def sign(
    delta: ModelDelta,
    action: SignVersion,
    *,
    credentials: Mapping[str, str] | None,
    cache_dir: Path,
) -> str | None:
    """Sign the version after the checks; why the checks refused it, or None when signed.
    A store that is unavailable or refuses the operator raises: nothing is decided."""
    assert _key is not None  # the planner asks only when a key is configured
    meta = delta.metadata
    origin = f"operator:modeldelta/{meta.get('namespace')}/{meta.get('name')}"
    store = Store(delta.spec.store.uri, credentials=credentials, cache_dir=cache_dir)
    try:
        vouch_and_sign(
            store.catalog,
            delta.spec.model,
            action.version,
            _key,
            parent=action.parent,
            name=action.name,
            origin=origin,
            namespace=meta.get("namespace"),
        )
    except (TransientStoreError, StoreAccessError):
        raise
    except (StoreError, CheckpointError) as exc:
        log.warning("modeldelta.sign_refused", version=action.version, error=str(exc))
        return str(exc)
    log.info("modeldelta.signed", version=action.version, name=action.name, origin=origin)
    return None
