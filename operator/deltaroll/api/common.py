"""Shapes both custom resources share: names, the store, conditions and the Job/pod knobs.

Field names are snake_case in Python and camelCase on the wire (``by_alias``); every field has a
``description`` because the CRD generator turns it into what ``kubectl explain`` prints.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema
from pydantic.alias_generators import to_camel

GROUP: Final = "deltaroll.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = "deltaroll.dev/v1alpha1"


class ApiModel(BaseModel):
    """Base of every API model: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase keys, unset fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def cel(rule: str, message: str, **extra: str) -> dict[str, str]:
    """One ``x-kubernetes-validations`` entry (a CEL rule the API server evaluates)."""
    return {"rule": rule, "message": message, **extra}


def cel_rules(*rules: dict[str, str]) -> dict[str, Any]:
    """``json_schema_extra`` carrying CEL rules for a model or a field."""
    return {"x-kubernetes-validations": list(rules)}


# Names that end up in bucket keys and file paths: no '/', no leading '.', so no '..' either.
NAME_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,126}[A-Za-z0-9])?$"
ModelName = Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=128)]
VersionRef = Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=128)]

# A Kubernetes object name in the same namespace (DNS-1123 subdomain).
K8S_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
ObjectName = Annotated[str, StringConstraints(pattern=K8S_NAME_PATTERN, max_length=253)]

# "30s", "5m", "1h": one number and one unit, like Argo Rollouts' pause durations.
DURATION_PATTERN = r"^[0-9]{1,6}(s|m|h)$"
Duration = Annotated[str, StringConstraints(pattern=DURATION_PATTERN, max_length=7)]

RFC3339_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$"
)
Timestamp = Annotated[
    str,
    StringConstraints(pattern=RFC3339_PATTERN),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]

# URIs never carry credentials (no '@' before the path for s3; the Secret holds them) and
# never climb out of their prefix with '..' segments (a CEL rule and the validator say so).
STORE_URI_PATTERN = (
    r"^(file:///[^\s]*"
    r"|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?"
    r"|hf://buckets/[A-Za-z0-9._-]+/[A-Za-z0-9._-]+(/[^\s]*)?)$"
)
SOURCE_URI_PATTERN = (
    r"^(file:///[^\s]*"
    r"|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?"
    r"|hf://[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._@-]*(/[^\s]*)?)$"
)
DOT_DOT_SEGMENT = r"(^|/)[.][.](/|$)"
NO_DOT_DOT = cel(
    f"!self.matches('{DOT_DOT_SEGMENT}')",
    "URI must not contain '..' path segments",
)


def no_dot_dot(uri: str) -> str:
    """Refuse '..' path segments: a name or URI from a manifest must not climb out."""
    if re.search(DOT_DOT_SEGMENT, uri):
        raise ValueError("URI must not contain '..' path segments")
    return uri


StoreUri = Annotated[
    str,
    StringConstraints(pattern=STORE_URI_PATTERN, max_length=1024),
    AfterValidator(no_dot_dot),
    Field(json_schema_extra=cel_rules(NO_DOT_DOT)),
]
SourceUri = Annotated[
    str,
    StringConstraints(pattern=SOURCE_URI_PATTERN, max_length=1024),
    AfterValidator(no_dot_dot),
    Field(json_schema_extra=cel_rules(NO_DOT_DOT)),
]

# Kubernetes resource quantities ("500m", "16Gi", 2): int or string, as core/v1 declares them.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


def _quantity(value: int | str) -> int | str:
    if isinstance(value, str) and not re.match(QUANTITY_PATTERN, value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 500m, 16Gi, 2)")
    return value


Quantity = Annotated[
    int | str,
    AfterValidator(_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": True,
            "pattern": QUANTITY_PATTERN,
        }
    ),
]


class SecretReference(ApiModel):
    """A Secret in the resource's own namespace."""

    name: ObjectName = Field(description="Name of the Secret, in the same namespace.")


class StoreSpec(ApiModel):
    """Where versions live: the bucket every Job and every inference pod talks to."""

    uri: StoreUri = Field(
        description=(
            "Store URI: file:///path (a directory, e.g. a ReadWriteMany volume), "
            "s3://bucket/prefix (any S3-compatible store), or "
            "hf://buckets/<namespace>/<bucket>/prefix (a Hugging Face Storage Bucket). "
            "Never put credentials in the URI; use secretRef."
        )
    )
    secret_ref: SecretReference | None = Field(
        default=None,
        description=(
            "Secret whose keys become environment variables of the Jobs and agents that use "
            "this store: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_REGION, "
            "AWS_ALLOW_HTTP for s3://; HF_TOKEN for hf://. Omit for anonymous or "
            "workload-identity access."
        ),
    )


ConditionStatus = Literal["True", "False", "Unknown"]
REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


class Condition(ApiModel):
    """One observation of the resource's state, as metav1.Condition defines it."""

    type: Annotated[str, StringConstraints(max_length=316)] = Field(
        description="Type of condition in CamelCase, e.g. Ready, Progressing, Degraded."
    )
    status: ConditionStatus = Field(description="Status of the condition: True, False or Unknown.")
    reason: Annotated[str, StringConstraints(pattern=REASON_PATTERN, max_length=1024)] = Field(
        description="Machine-readable CamelCase reason for the last transition."
    )
    message: Annotated[str, StringConstraints(max_length=32768)] = Field(
        default="", description="Human-readable details: what happened and what to do about it."
    )
    last_transition_time: Timestamp = Field(
        description="When the status last changed (not when the condition was last written)."
    )
    observed_generation: Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        description="metadata.generation of the resource this condition was computed from.",
    )


Conditions = Annotated[
    list[Condition],
    Field(
        max_length=16,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    ),
]


class Toleration(ApiModel):
    """A core/v1 Toleration: lets the Job's pods run on tainted (e.g. GPU) nodes."""

    key: Annotated[str, StringConstraints(max_length=316)] | None = Field(
        default=None, description="Taint key the toleration applies to; empty means all keys."
    )
    operator: Literal["Exists", "Equal"] | None = Field(
        default=None, description="Exists or Equal (the default)."
    )
    value: Annotated[str, StringConstraints(max_length=63)] | None = Field(
        default=None, description="Taint value to match when operator is Equal."
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty means all effects."
    )
    toleration_seconds: int | None = Field(
        default=None,
        description="How long a NoExecute taint is tolerated before eviction; unset is forever.",
    )


class ResourceRequirements(ApiModel):
    """Compute resources of a container, as core/v1 ResourceRequirements."""

    limits: dict[str, Quantity] | None = Field(
        default=None,
        description='Maximum resources, e.g. {"nvidia.com/gpu": 1, "memory": "64Gi"}.',
    )
    requests: dict[str, Quantity] | None = Field(
        default=None, description='Minimum resources the scheduler reserves, e.g. {"cpu": "4"}.'
    )


class LocalObjectReference(ApiModel):
    """A reference to an object by name in the same namespace."""

    name: ObjectName = Field(description="Name of the object.")


class EnvVar(ApiModel):
    """An environment variable with a literal value."""

    name: Annotated[
        str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$", max_length=256)
    ] = Field(description="Name of the variable.")
    value: Annotated[str, StringConstraints(max_length=32768)] = Field(
        default="", description="Value of the variable."
    )


class PodTemplateKnobs(ApiModel):
    """What a platform team tunes on the pods of a Job the operator creates."""

    image: Annotated[str, StringConstraints(max_length=1024)] | None = Field(
        default=None,
        description="Container image; defaults to the worker image the chart configures.",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None, description="Image pull policy: Always, IfNotPresent or Never."
    )
    image_pull_secrets: Annotated[list[LocalObjectReference], Field(max_length=16)] | None = Field(
        default=None, description="Secrets for pulling the image from a private registry."
    )
    resources: ResourceRequirements | None = Field(
        default=None,
        description="Container resources; ask for nvidia.com/gpu to diff on a GPU.",
    )
    node_selector: dict[str, Annotated[str, StringConstraints(max_length=63)]] | None = Field(
        default=None, description="Node labels the pods must match, e.g. a GPU node pool."
    )
    tolerations: Annotated[list[Toleration], Field(max_length=32)] | None = Field(
        default=None, description="Tolerations for tainted nodes (GPU nodes usually are)."
    )
    service_account_name: ObjectName | None = Field(
        default=None,
        description=(
            "ServiceAccount the pods run as (e.g. one bound to a cloud role for workload "
            "identity); defaults to the namespace's default ServiceAccount."
        ),
    )
    priority_class_name: ObjectName | None = Field(
        default=None, description="PriorityClass of the pods."
    )
