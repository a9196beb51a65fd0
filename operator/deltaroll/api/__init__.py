"""The contracts: the custom resources' models and every shape that crosses a process boundary.

These models are the single source of truth: the CRDs in ``crds/`` are generated from them
(:mod:`deltaroll.api.crd`), the controllers parse what the API server hands them with them, and
every ``Field(description=...)`` becomes what ``kubectl explain`` prints.

Layers: ``common`` (shared shapes: names, store, conditions, Job knobs), ``modeldelta``,
``modeldeployment``, ``conditions`` (helpers that keep lastTransitionTime honest),
``annotations`` (the names of the annotations that operator, agent and plugin exchange),
``agent_state`` (the agent's state, as written into its pod's annotation), ``job_result`` (what a
worker Job reports in its termination message, and its exit codes), ``facts`` (what a published
version is, as a ModelDelta reports it), ``object_cache`` (the layout that processes sharing
an object cache directory keep to), ``peers`` (agents serving each other objects: the route, the
annotation, who seeds),
``parse`` (a body from the API server to a typed model or a named error), ``crd`` (pydantic JSON
schema to structural openAPIV3Schema).

The lowest layer: it imports pydantic, the standard library and :mod:`deltaroll.errors`, nothing
else of Deltaroll, so every process (operator, worker, agent, plugin) can read the same shapes.
"""

from __future__ import annotations

from deltaroll.api.common import GROUP, VERSION, Condition, StoreSpec
from deltaroll.api.errors import InvalidResourceError
from deltaroll.api.modeldelta import ModelDelta, ModelDeltaSpec, ModelDeltaStatus
from deltaroll.api.modeldeployment import (
    ModelDeployment,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
)
from deltaroll.api.parse import parse_resource

__all__ = [
    "GROUP",
    "VERSION",
    "Condition",
    "InvalidResourceError",
    "ModelDelta",
    "ModelDeltaSpec",
    "ModelDeltaStatus",
    "ModelDeployment",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
    "StoreSpec",
    "parse_resource",
]
