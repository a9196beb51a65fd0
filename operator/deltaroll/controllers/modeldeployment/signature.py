"""Whether spec.version carries a signature that ``spec.verification`` accepts.

The operator looks before it moves any pod, reading the store's signature records (one small object
per key) as the tenant: with the identity :mod:`..store_access` chose (the store's secretRef
credentials, as the agents read them; never the operator's own unless the admin's policy allows
exactly that store), and with the very keys it writes on the pods, so a version nobody signed holds
the rollout with its reason in status rather than in a canary pod that refuses it. The agents check
again before they fetch anything: this check spares a failed canary, it is not the gate. A signature
found is remembered per process and per identity (namespace and Secret: it covers fixed content,
but what one tenant could read says nothing about another); a missing one is looked for again on
every pass, so signing the version later resumes the rollout.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from deltaroll.api.modeldeployment import ModelDeploymentSpec
from deltaroll.api.public_keys import verify_keys_value
from deltaroll.controllers.errors import SecretNotFoundError
from deltaroll.controllers.modeldeployment.planner import TargetVersion
from deltaroll.controllers.modeldeployment.target import StoreIdentity
from deltaroll.store import SignatureError, Store, StoreError
from deltaroll.store.pull import chosen_name
from deltaroll.store.signing import parse_inline_key

NOT_SIGNED = "VersionNotSigned"
_found: set[tuple[str, ...]] = set()


def check(spec: ModelDeploymentSpec, target: TargetVersion, who: StoreIdentity) -> TargetVersion:
    """``target`` as it is when spec.version is signed for this store and the tenant's namespace
    (or nothing is required); Failed with reason VersionNotSigned when it is not; Pending when
    the store cannot say now."""
    if spec.verification is None or target.state != "Ready" or target.version_id is None:
        return target
    value = verify_keys_value(spec.verification.public_keys)
    secret = spec.store.secret_ref.name if spec.store.secret_ref else ""
    remembered = (
        who.namespace,
        secret,
        spec.store.uri,
        spec.model,
        target.version_id,
        spec.version,
        value,
    )
    if remembered in _found:
        return target
    keys = [parse_inline_key(text) for text in value.split(",")]
    try:
        store = Store(spec.store.uri, credentials=who.credentials(), cache_dir=_cache_dir())
        name = chosen_name(store.catalog, spec.model, spec.version)
        store.signed(spec.model, target.version_id, keys, name=name, namespace=who.namespace)
    except SignatureError as exc:
        # A signature written later (`deltaroll sign`) sends no event: from_store asks again.
        return dataclasses.replace(
            target, state="Failed", reason=NOT_SIGNED, message=str(exc), from_store=True
        )
    except SecretNotFoundError as exc:
        return dataclasses.replace(
            target, state="Pending", message=f"{exc}: create it with the store's credentials"
        )
    except StoreError as exc:
        return dataclasses.replace(
            target,
            state="Pending",
            message=f"its signature cannot be checked now ({exc})",
            from_store=True,
        )
    _found.add(remembered)
    return target


def _cache_dir() -> Path:
    """Scratch for the store client (signature records are read, never cached objects)."""
    return Path(tempfile.gettempdir()) / "deltaroll-operator"
