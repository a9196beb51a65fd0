"""Which admin policy is in force: the file ``$DELTAROLL_POLICY`` names (the chart's ConfigMap),
read again whenever it changes on disk (a ConfigMap update reaches a mounted file in a minute),
else the built-in defaults.

A policy file that does not parse stops the operator at start-up with the field to fix; one that
breaks later keeps the last good policy in force and logs why (a typo must not open the doors).
Each version of the file is parsed once (namespaces' overrides resolved with it); a new one also
sets whether the operator's own S3 clients may use instance metadata.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import structlog
import yaml
from pydantic import ValidationError

from deltaroll.api.common import StoreSpec
from deltaroll.api.policy import (
    DEFAULT_POLICY,
    DEFAULT_WORKER_IMAGE,
    INSTANCE_METADATA_ENV,
    POLICY_ENV,
    NamespacePolicy,
    Policy,
    allowed,
)
from deltaroll.controllers.errors import OperatorConfigError
from deltaroll.store.backends.metadata_access import allow_in_this_process

WORKER_IMAGE_ENV = "DELTAROLL_WORKER_IMAGE"
log = structlog.get_logger("deltaroll.controllers.policy")
_lock = threading.Lock()
_loaded: dict[str, tuple[int, Policy]] = {}


def read_policy(path: Path) -> Policy:
    """The policy in ``path`` (YAML or JSON); :class:`OperatorConfigError` naming what is wrong."""
    try:
        document = yaml.safe_load(path.read_text()) or {}
        return Policy.model_validate(document)
    except (OSError, yaml.YAMLError) as exc:
        raise OperatorConfigError(f"policy {path} cannot be read: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise OperatorConfigError(f"policy {path} is invalid: {problems}") from None


def current_policy() -> Policy:
    """The policy in force now."""
    name = os.environ.get(POLICY_ENV)
    if not name:
        return _in_force(DEFAULT_POLICY)
    path = Path(name)
    with _lock:
        try:
            stamp = path.stat().st_mtime_ns
        except OSError:
            stamp = -1
        cached = _loaded.get(name)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            policy = read_policy(path)
        except OperatorConfigError as exc:
            if cached is None:
                raise
            log.error("operator.policy_kept", error=str(exc))
            _loaded[name] = (stamp, cached[1])  # parsed once per change, good or bad
            return cached[1]
        _loaded[name] = (stamp, policy)
        if cached is not None:
            log.info("operator.policy_reloaded", instance_metadata=policy.allow_instance_metadata)
        return _in_force(policy)


def _in_force(policy: Policy) -> Policy:
    """``policy``, with this process's S3 clients told whether it allows instance metadata."""
    allow_in_this_process(policy.allow_instance_metadata)
    return policy


def namespace_policy(namespace: str) -> NamespacePolicy:
    """What the resources of ``namespace`` may ask for, under the policy in force now."""
    return current_policy().for_namespace(namespace)


def operator_image() -> str:
    """The worker image the chart gives the operator ($DELTAROLL_WORKER_IMAGE): the default of
    Jobs when neither the resource nor the policy names one."""
    return os.environ.get(WORKER_IMAGE_ENV) or DEFAULT_WORKER_IMAGE


def worker_env(store: StoreSpec, policy: NamespacePolicy) -> dict[str, str]:
    """Environment the policy adds to a worker Job of ``store``: instance metadata for exactly
    that store, when the admin allows instance metadata and lends the operator's identity to
    that store in this namespace (a Job with the store's Secret has keys of its own)."""
    lends = store.secret_ref is None and allowed(store.uri, policy.operator_identity_stores)
    if lends and current_policy().allow_instance_metadata:
        return {INSTANCE_METADATA_ENV: store.uri}
    return {}
