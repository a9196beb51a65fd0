"""ModelDelta: one version of a model, computed from a parent and a target, or imported.

A ModelDelta asks the operator to publish a version into the store: the diff of a target
checkpoint against the parent version (a Job, on a GPU when its resources ask for one), or a
trainer's TRL sparse patch imported onto the parent. Without a parent it publishes an anchor (a
full snapshot). Status reports what the worker published, never a guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints, model_validator

from deltaroll.api.common import (
    API_VERSION,
    NO_DOT_DOT,
    ApiModel,
    Conditions,
    ModelName,
    ObjectName,
    PodTemplateKnobs,
    SourceUri,
    StoreSpec,
    Timestamp,
    VersionRef,
    cel,
    cel_rules,
    no_dot_dot,
)

KIND: Final = "ModelDelta"
PLURAL: Final = "modeldeltas"

ModelDeltaPhase = Literal["Pending", "Computing", "Ready", "Failed"]


class VolumeMount(ApiModel):
    """A PersistentVolumeClaim mounted read-only into the worker, for checkpoints on a volume."""

    claim_name: ObjectName = Field(description="Name of the PersistentVolumeClaim to mount.")
    mount_path: Annotated[
        str,
        StringConstraints(pattern=r"^(/[A-Za-z0-9._-]+)+$", max_length=512),
        AfterValidator(no_dot_dot),
    ] = Field(
        description=(
            "Absolute path where the claim is mounted, without a trailing slash; the URI must "
            "be file://<mountPath>/..."
        ),
        json_schema_extra=cel_rules(NO_DOT_DOT),
    )


ON_VOLUME_MESSAGE = "a URI on a volume must be a file:// URI below volume.mountPath"
ON_VOLUME = cel(
    "!has(self.volume) || self.uri.startsWith('file://' + self.volume.mountPath + '/')",
    ON_VOLUME_MESSAGE,
    fieldPath=".uri",
)


def _check_on_volume(uri: str, volume: VolumeMount | None) -> None:
    if volume is not None and not uri.startswith(f"file://{volume.mount_path}/"):
        raise ValueError(ON_VOLUME_MESSAGE)


class CheckpointSource(ApiModel):
    """A target checkpoint to diff against the parent version."""

    model_config = ConfigDict(json_schema_extra=cel_rules(ON_VOLUME))

    uri: SourceUri = Field(
        description=(
            "The checkpoint (Hugging Face layout, single or sharded safetensors): "
            "s3://bucket/prefix, hf://<org>/<repo>[@revision][/subdir], "
            "hf://buckets/<namespace>/<bucket>/prefix, or file:///path on a mounted volume."
        )
    )
    volume: VolumeMount | None = Field(
        default=None, description="Volume to mount for a file:/// checkpoint."
    )

    @model_validator(mode="after")
    def _uri_on_volume(self) -> CheckpointSource:
        _check_on_volume(self.uri, self.volume)
        return self


TrlIndexFormat = Literal["auto", "indices-values", "idx-val"]


class TrlPatchSource(ApiModel):
    """A trainer's sparse patch (TRL format) to import onto the parent version."""

    model_config = ConfigDict(json_schema_extra=cel_rules(ON_VOLUME))

    uri: SourceUri = Field(
        description="The patch file (.safetensors) written by the trainer, as s3://, hf:// or file:///."
    )
    format: TrlIndexFormat = Field(
        default="auto",
        description=(
            "Which TRL generation wrote it: indices-values (<param>.indices/<param>.values), "
            "idx-val (<param>.idx/<param>.val with the index encoding in the file's metadata), "
            "or auto to detect it from the tensor names."
        ),
    )
    volume: VolumeMount | None = Field(
        default=None, description="Volume to mount for a file:/// patch."
    )

    @model_validator(mode="after")
    def _uri_on_volume(self) -> TrlPatchSource:
        _check_on_volume(self.uri, self.volume)
        return self


ONE_SOURCE_MESSAGE = "source needs exactly one of checkpoint or trlPatch"


class DeltaSource(ApiModel):
    """Where the new version comes from: exactly one of checkpoint or trlPatch."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel(
                "[has(self.checkpoint), has(self.trlPatch)].filter(x, x).size() == 1",
                ONE_SOURCE_MESSAGE,
            )
        )
    )

    checkpoint: CheckpointSource | None = Field(
        default=None, description="Diff this target checkpoint against the parent version."
    )
    trl_patch: TrlPatchSource | None = Field(
        default=None, description="Import this TRL sparse patch onto the parent version."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> DeltaSource:
        if (self.checkpoint is None) == (self.trl_patch is None):
            raise ValueError(ONE_SOURCE_MESSAGE)
        return self


class EncodingOptions(ApiModel):
    """How the delta's payloads are compressed."""

    zstd_level: Annotated[int, Field(ge=1, le=22)] = Field(
        default=3, description="zstd compression level, 1 (fast) to 22 (small)."
    )


class JobTemplate(PodTemplateKnobs):
    """The batch/v1 Job the operator creates to compute or import the version."""

    parallelism: Annotated[int, Field(ge=1, le=64)] = Field(
        default=1,
        description=(
            "Workers for sharded work: an Indexed Job whose indexes each take a share of the "
            "tensor files; the last step publishes the version. 1 runs a plain Job."
        ),
    )
    backoff_limit: Annotated[int, Field(ge=0, le=20)] = Field(
        default=2, description="Retries before the Job, and the ModelDelta, are marked Failed."
    )
    active_deadline_seconds: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="Wall-clock limit of the whole Job; unset means none."
    )
    ttl_seconds_after_finished: Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        description="Delete the finished Job (and its pods) this many seconds after it ends.",
    )


TRL_NEEDS_PARENT_MESSAGE = (
    "a trlPatch source needs a parent: the patch applies to the parent's weights"
)


class ModelDeltaSpec(ApiModel):
    """The version to publish and how to compute it."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel(
                "!has(self.source.trlPatch) || has(self.parent)",
                TRL_NEEDS_PARENT_MESSAGE,
                fieldPath=".parent",
            ),
        )
    )

    model: ModelName = Field(
        description="Model name: the folder of its versions in the store. Immutable.",
        json_schema_extra=cel_rules(cel("self == oldSelf", "model is immutable")),
    )
    version: VersionRef | None = Field(
        default=None,
        description=(
            "Human name of the version this publishes (e.g. step-120), an alias of its "
            "content-derived id. Defaults to metadata.name. Immutable."
        ),
        json_schema_extra=cel_rules(cel("self == oldSelf", "version is immutable")),
    )
    store: StoreSpec = Field(description="The store to read the parent from and publish into.")
    parent: VersionRef | None = Field(
        default=None,
        description=(
            "Version (name or id) the delta starts from. Omit to publish an anchor: a full "
            "snapshot with no parent."
        ),
    )
    source: DeltaSource = Field(description="Where the new weights come from.")
    anchor: bool = Field(
        default=False,
        description=(
            "Also publish a full snapshot of the new version, so pods far behind can start "
            "from it instead of replaying a long chain. Implied when parent is omitted."
        ),
    )
    encoding: EncodingOptions = Field(
        default_factory=EncodingOptions, description="Compression of the delta's payloads."
    )
    job: JobTemplate = Field(
        default_factory=JobTemplate,
        description="Image, resources and scheduling of the Job that does the work.",
    )
    deletion_policy: Literal["Retain", "Delete"] = Field(
        default="Retain",
        description=(
            "What deleting this ModelDelta does to the version in the store: Retain (keep it) "
            "or Delete (remove it, unless a ModelDeployment still uses it)."
        ),
    )

    @model_validator(mode="after")
    def _trl_needs_parent(self) -> ModelDeltaSpec:
        if self.source.trl_patch is not None and self.parent is None:
            raise ValueError(TRL_NEEDS_PARENT_MESSAGE)
        return self


class JobReference(ApiModel):
    """The Job working on this ModelDelta."""

    name: ObjectName = Field(description="Name of the Job, in the ModelDelta's namespace.")
    uid: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="UID of the Job, to tell a replaced Job from the old one."
    )


class ModelDeltaStatus(ApiModel):
    """What the operator observed: the Job's progress and what the worker published."""

    # Status is the operator's; tolerate fields a newer or older operator (or Kopf) wrote.
    model_config = ConfigDict(extra="ignore")

    phase: ModelDeltaPhase = Field(
        default="Pending",
        description=(
            "Pending (validating, waiting for the parent), Computing (the Job runs), Ready (the "
            "version is published), or Failed (see the Ready condition's message)."
        ),
    )
    version: VersionRef | None = Field(
        default=None, description="Human name the version was published under."
    )
    version_id: Annotated[str, StringConstraints(max_length=128)] | None = Field(
        default=None, description="Content-derived id of the published version."
    )
    parent_version_id: Annotated[str, StringConstraints(max_length=128)] | None = Field(
        default=None, description="Content-derived id of the parent version."
    )
    created_version_id: Annotated[str, StringConstraints(max_length=128)] | None = Field(
        default=None,
        description=(
            "The version this ModelDelta's own Job created in the store (not one that was "
            "there already): the only version deletionPolicy: Delete removes."
        ),
    )
    changed_fraction: Annotated[float, Field(ge=0, le=1)] | None = Field(
        default=None, description="Fraction of elements that differ from the parent, 0 to 1."
    )
    changed_percent: Annotated[str, StringConstraints(max_length=16)] | None = Field(
        default=None,
        description=(
            "changedFraction as a percentage (15.04%), for kubectl get: printer columns do not "
            "format numbers."
        ),
    )
    delta_bytes: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="Bytes of the delta in the store (payloads and manifest)."
    )
    full_bytes: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="Bytes of the full checkpoint of this version."
    )
    signed_by: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = Field(
        default=None,
        description=(
            "Id (SHA-256 of the raw key) of the operator's signing key, once the operator "
            "checked what this ModelDelta's Job published and signed it; absent when the "
            "operator has no signing key or did not sign (the message says why)."
        ),
    )
    job_ref: JobReference | None = Field(
        default=None, description="The Job computing (or that computed) this version."
    )
    start_time: Timestamp | None = Field(default=None, description="When the Job was created.")
    completion_time: Timestamp | None = Field(
        default=None, description="When the version was published or the work failed."
    )
    message: Annotated[str, StringConstraints(max_length=32768)] | None = Field(
        default=None, description="Short human-readable summary of the current phase."
    )
    observed_generation: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="metadata.generation the status was computed from."
    )
    conditions: Conditions | None = Field(
        default=None,
        description=(
            "Ready (True once published; False with the reason while pending or failed), "
            "Reconciling while the Job runs and Stalled when Failed (kstatus), each with "
            "observedGeneration."
        ),
    )


class ModelDelta(ApiModel):
    """A whole ModelDelta object, as the API server returns it."""

    api_version: Literal["deltaroll.dev/v1alpha1"] = Field(
        default=API_VERSION, description="deltaroll.dev/v1alpha1"
    )
    kind: Literal["ModelDelta"] = Field(default=KIND, description="ModelDelta")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")
    spec: ModelDeltaSpec = Field(description="The version to publish and how.")
    status: ModelDeltaStatus | None = Field(default=None, description="What the operator observed.")

    model_config = ConfigDict(extra="ignore")

    @property
    def version_name(self) -> str:
        """The name the version is published under (see :func:`version_name_of`)."""
        return str(
            version_name_of({"spec": {"version": self.spec.version}, "metadata": self.metadata})
        )


def as_percent(fraction: float) -> str:
    """A fraction as people read it: 15.04%, and <0.01% rather than 0.00% for a few elements."""
    if 0 < fraction < 0.00005:
        return "<0.01%"
    return f"{fraction:.2%}"


def version_name_of(body: Mapping[str, Any]) -> str | None:
    """The name a ModelDelta (a raw object, as the API lists it) publishes its version under:
    ``spec.version``, else ``metadata.name``."""
    return (body.get("spec") or {}).get("version") or (body.get("metadata") or {}).get("name")


def publishes(
    body: Mapping[str, Any], model: str, store_uri: str, version: str, *, or_id: bool = False
) -> bool:
    """Whether the ModelDelta ``body`` publishes ``version`` of ``model`` into ``store_uri``: under
    its :func:`version_name_of`, or (``or_id``) under the id it published (``status.versionId``)."""
    spec = body.get("spec") or {}
    if (spec.get("model"), (spec.get("store") or {}).get("uri")) != (model, store_uri):
        return False
    names = [version_name_of(body)]
    if or_id:
        names.append((body.get("status") or {}).get("versionId"))
    return version in names
