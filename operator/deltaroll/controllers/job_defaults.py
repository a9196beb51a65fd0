"""What the admin's policy puts into the pods of the Jobs the operator creates. Pure.

A resource that names no image or ServiceAccount gets the policy's; resources are resolved name by
name in :func:`deltaroll.controllers.pod_defaults.resources` (the resource's own, then the policy's,
then the built-in defaults: one place for every default). Whether the resource may name what it
names is :mod:`.admission`'s question, asked before a Job is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from deltaroll.api.common import PodTemplateKnobs, ResourceRequirements
from deltaroll.api.policy import DEFAULT_WORKER_IMAGE, JobPolicy
from deltaroll.controllers.pod_defaults import JobKind
from deltaroll.controllers.pod_defaults import resources as resolved_resources


@dataclass(frozen=True)
class JobDefaults:
    """The image, ServiceAccount, resources and environment of a Job the resource leaves unset."""

    kind: JobKind
    image: str
    service_account_name: str | None = None
    resources: ResourceRequirements | None = None
    env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        kind: JobKind,
        policy: JobPolicy,
        operator_image: str,
        env: Mapping[str, str] | None = None,
    ) -> JobDefaults:
        return cls(
            kind=kind,
            image=policy.image or operator_image,
            service_account_name=policy.service_account_name,
            resources=policy.resources,
            env=dict(env or {}),
        )

    def image_of(self, knobs: PodTemplateKnobs) -> str:
        return knobs.image or self.image

    def service_account_of(self, knobs: PodTemplateKnobs) -> str | None:
        return knobs.service_account_name or self.service_account_name

    def resources_of(self, knobs: PodTemplateKnobs) -> dict[str, Any]:
        """The container's resources: the resource's own over the policy's over the built-in."""
        return resolved_resources(self.kind, knobs.resources, self.resources)

    def env_list(self) -> list[dict[str, str]]:
        return [{"name": name, "value": value} for name, value in sorted(self.env.items())]


#: Without a policy: the release's worker image and the built-in resources, nothing else.
RELEASE_DEFAULTS: Final = JobDefaults("worker", DEFAULT_WORKER_IMAGE)
RELEASE_ANALYSIS_DEFAULTS: Final = JobDefaults("analysis", DEFAULT_WORKER_IMAGE)
