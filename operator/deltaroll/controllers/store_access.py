"""With which identity the operator opens a tenant's store: the tenant's, never its own.

A store with ``secretRef`` is opened with that Secret's data only (never topped up from the
operator's environment). Without one, the operator's own identity (its environment, its
workload identity) is used only for a store the admin's policy lists for the namespace in
``operatorIdentityStores``; any other store is read anonymously, so a tenant naming another
team's bucket gets what the public gets.
"""

from __future__ import annotations

from collections.abc import Mapping

from deltaroll.api.common import StoreSpec
from deltaroll.api.policy import NamespacePolicy, allowed
from deltaroll.controllers import kube
from deltaroll.controllers.errors import SecretNotFoundError

ANONYMOUS: Mapping[str, str] = {}


def store_credentials(
    namespace: str, store: StoreSpec, policy: NamespacePolicy
) -> Mapping[str, str] | None:
    """Credentials for :class:`deltaroll.store.Store`: the Secret's data, :data:`ANONYMOUS`, or
    None (the operator's environment) where the admin allowed exactly that."""
    if store.secret_ref is None:
        return None if allowed(store.uri, policy.operator_identity_stores) else ANONYMOUS
    data = kube.read_secret_data(namespace, store.secret_ref.name)
    if data is None:
        raise SecretNotFoundError(
            f"Secret {store.secret_ref.name} (spec.store.secretRef) not found in namespace "
            f"{namespace}"
        )
    return data
