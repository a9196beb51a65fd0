"""The cluster admin's policy: what tenants' ModelDeltas and ModelDeployments may ask for.

A tenant who may create a ModelDelta or a ModelDeployment in a namespace does not get the
operator's power with it. The chart renders this policy (``policy`` in values.yaml) into a
ConfigMap the operator reads (``$DELTAROLL_POLICY``, a YAML or JSON file); without one the
operator runs with :data:`DEFAULT_POLICY`'s defaults. A resource asking for anything the policy
of its namespace does not allow is refused (Ready=False, Stalled=True, reason ``PolicyDenied``,
one Warning Event) before any store is opened or any Job created.

``namespaces`` override ``default`` field by field (into ``worker`` and ``analysis`` too): a
field a namespace entry does not set is the default's. Lists match by :func:`allowed`: an entry
ending in ``/``, ``:``, ``@`` or ``.`` is a prefix (``s3://team-a/`` allows ``s3://team-a`` and
everything below it; ``ghcr.io/acme/worker:`` every tag of one image; ``http://10.`` the pod
network 10.0.0.0/8), any other entry must match exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Final

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    model_validator,
)
from pydantic.alias_generators import to_camel

from deltaroll.api.common import ObjectName, ResourceRequirements

POLICY_ENV: Final = "DELTAROLL_POLICY"
#: Lets this process's S3 clients ask the cloud instance metadata service for credentials: "true"
#: for every store, else the store URIs (whitespace-separated patterns) it may do so for. The
#: operator gives a worker Job exactly its store, only for an operatorIdentityStores entry.
INSTANCE_METADATA_ENV: Final = "DELTAROLL_ALLOW_INSTANCE_METADATA"
DEFAULT_WORKER_IMAGE: Final = "ghcr.io/deltaroll/worker:latest"
_PREFIX_ENDS: Final = ("/", ":", "@", ".")

Pattern = Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class _PolicyModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, extra="forbid"
    )


class JobPolicy(_PolicyModel):
    """What the pods of the Jobs the operator creates (worker or analysis) may run, and as whom."""

    image: Pattern | None = Field(
        default=None,
        description="Image of Jobs whose resource names none (worker: $DELTAROLL_WORKER_IMAGE "
        "or the release's worker image).",
    )
    service_account_name: ObjectName | None = Field(
        default=None, description="ServiceAccount of Jobs whose resource names none."
    )
    allowed_images: list[Pattern] = Field(
        default_factory=list, description="Images a resource may name besides `image`."
    )
    allowed_service_accounts: list[ObjectName] = Field(
        default_factory=list,
        description="ServiceAccounts a resource may name besides `serviceAccountName` (None of "
        "either: only the namespace's default ServiceAccount).",
    )
    allowed_priority_classes: list[ObjectName] = Field(
        default_factory=list, description="PriorityClasses a resource may name."
    )
    resources: ResourceRequirements | None = Field(
        default=None,
        description="Requests and limits of every resource name (cpu, memory, ...) the "
        "resource's own resources do not name, over the operator's built-in defaults; a "
        "name's request and limit come from the same place.",
    )


class NamespacePolicy(_PolicyModel):
    """What the resources of one namespace may ask for."""

    store_prefixes: list[Pattern] = Field(
        default_factory=lambda: ["s3://", "hf://"],
        description="Store and source URIs a resource may name (file:// reads the operator's "
        "own file system: allow only the paths meant for it).",
    )
    operator_identity_stores: list[Pattern] = Field(
        default_factory=list,
        description="Stores the operator may open with its own identity (its environment, "
        "workload identity) when the resource has no store.secretRef. Empty: never; such a "
        "store is read anonymously.",
    )
    worker: JobPolicy = Field(default_factory=JobPolicy, description="ModelDelta worker Jobs.")
    analysis: JobPolicy = Field(default_factory=JobPolicy, description="Analysis Jobs.")
    prometheus_addresses: list[Pattern] = Field(
        default_factory=list,
        description="Prometheus addresses analysis may query (empty: no Prometheus analysis).",
    )
    http_targets: list[Pattern] = Field(
        default_factory=lambda: ["http://"],
        description="URLs an HTTP analysis probe may call (it calls the selected pods' "
        "engines, http://<podIP>:<port>); e.g. one prefix per node or pod subnet you allow.",
    )


class Policy(_PolicyModel):
    """The admin's policy: a default for every namespace, and per-namespace overrides."""

    default: NamespacePolicy = Field(default_factory=NamespacePolicy)
    namespaces: dict[ObjectName, dict[str, Any]] = Field(
        default_factory=dict,
        description="Namespace -> the fields of NamespacePolicy that differ from `default`.",
    )
    allow_instance_metadata: bool = Field(
        default=False,
        description="Whether S3 clients may ask the cloud instance metadata service for "
        "credentials (on a cloud node, the node's role): the operator's, for the stores it "
        "opens with its own identity, and a worker Job's, for exactly its own store when that "
        "store is one of its namespace's operatorIdentityStores (no other Job gets it).",
    )

    _resolved: dict[str, NamespacePolicy] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _namespaces_parse(self) -> Policy:
        """Resolve every namespace's policy once, as the file is read (and refuse a bad one)."""
        default = self.default.model_dump(by_alias=True, exclude_none=True)
        self._resolved = {
            namespace: NamespacePolicy.model_validate(_merged(default, override))
            for namespace, override in self.namespaces.items()
            if override
        }
        return self

    def for_namespace(self, namespace: str) -> NamespacePolicy:
        """The default with the namespace's own fields over it."""
        return self._resolved.get(namespace, self.default)


DEFAULT_POLICY: Final = Policy()


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on ``base``, nested objects merged key by key."""
    merged = dict(base)
    for key, value in over.items():
        below = merged.get(key)
        both = isinstance(below, dict) and isinstance(value, dict)
        merged[key] = _merged(below, value) if both else value  # type: ignore[arg-type]
    return merged


def allowed(value: str, patterns: Iterable[str]) -> bool:
    """Whether ``value`` is one of ``patterns`` or lies under one of its prefixes."""
    for pattern in patterns:
        if pattern.endswith(_PREFIX_ENDS):
            if value.startswith(pattern) or value == pattern.rstrip("/"):
                return True
        elif value == pattern:
            return True
    return False
