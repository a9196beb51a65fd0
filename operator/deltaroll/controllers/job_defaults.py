"""What the admin's policy puts into the pods of the Jobs the operator creates. Pure.

A resource that names no image, ServiceAccount or resources gets the policy's; resources are
merged key by key (the resource's own requests and limits win, as with a LimitRange's
defaults). Whether the resource may name what it names is :mod:`.admission`'s question, asked
before a Job is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from deltaroll.api.common import PodTemplateKnobs, ResourceRequirements
from deltaroll.api.policy import DEFAULT_WORKER_IMAGE, JobPolicy


@dataclass(frozen=True)
class JobDefaults:
    """The image, ServiceAccount, resources and environment of a Job the resource leaves unset."""

    image: str
    service_account_name: str | None = None
    resources: ResourceRequirements | None = None
    env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls, policy: JobPolicy, operator_image: str, env: Mapping[str, str] | None = None
    ) -> JobDefaults:
        return cls(
            image=policy.image or operator_image,
            service_account_name=policy.service_account_name,
            resources=policy.resources,
            env=dict(env or {}),
        )

    def image_of(self, knobs: PodTemplateKnobs) -> str:
        return knobs.image or self.image

    def service_account_of(self, knobs: PodTemplateKnobs) -> str | None:
        return knobs.service_account_name or self.service_account_name

    def resources_of(self, knobs: PodTemplateKnobs) -> dict[str, Any] | None:
        """The container's resources: the policy's defaults under the resource's own."""
        base = self.resources.to_wire() if self.resources is not None else {}
        own = knobs.resources.to_wire() if knobs.resources is not None else {}
        merged = {
            kind: {**base.get(kind, {}), **own.get(kind, {})}
            for kind in ("requests", "limits")
            if base.get(kind) or own.get(kind)
        }
        return merged or None

    def env_list(self) -> list[dict[str, str]]:
        return [{"name": name, "value": value} for name, value in sorted(self.env.items())]


#: Without a policy: the release's worker image, nothing else.
RELEASE_DEFAULTS: Final = JobDefaults(DEFAULT_WORKER_IMAGE)
