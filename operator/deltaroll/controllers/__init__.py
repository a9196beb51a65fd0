"""The operator's controllers: Kopf handlers over pure planners, one per custom resource.

Pure planners decide, thin handlers read and write, so the decisions are tested without a cluster.

ModelDelta (compute a delta between two checkpoints in a worker Job, publish it to the store):

- :mod:`.jobs`            the worker Job of a ModelDelta, built from its spec (pure)
- :mod:`.observe`         a Job and its pods reduced to what the planner needs (pure)
- :mod:`.planner`         (spec, observed state) -> (status, actions) for a ModelDelta (pure)
- :mod:`.retention`       which versions a deletion must keep: those a ModelDeployment names (pure)
- :mod:`.storeview`       what the operator reads from a store (manifests only, never weights)
- :mod:`.kube`            the Kubernetes reads and writes, on the official client (shared)
- :mod:`.modeldelta`      the Kopf handlers: read, plan, apply

ModelDeployment (move inference pods from the stable version to a new one in canary steps):

- :mod:`.modeldeployment` the Kopf handlers: read, take due measurements, plan, apply
- :mod:`.rollout_planner` (spec, status, pods, requests, now) -> a plan, like Argo's canary (pure)
- :mod:`.rollout_pods`    pods as the planner sees them; which pod serves which version (pure)
- :mod:`.rollout_target`  whether spec.version is ready to roll out (its ModelDelta, or the store)
- :mod:`.rollout_kube`    pod annotations and ModelDeployment status writes, never its spec
- :mod:`.analysis`        canary analysis: metric templates measured on a schedule, judged by CEL

Shared:

- :mod:`.settings`        Kopf's production settings (one startup handler)
- :mod:`.metrics`         Prometheus metrics of the operator (bounded labels, never object names)
- :mod:`.errors`          named errors of this layer (bad operator flags or environment)

Importing :func:`register_handlers` is cheap; calling it imports Kopf and registers the handlers
on Kopf's default registry (``deltaroll operator run`` does this before ``kopf.run``).
"""

from __future__ import annotations

import importlib

HANDLER_MODULES = (
    "deltaroll.controllers.settings",
    "deltaroll.controllers.modeldelta",
    "deltaroll.controllers.modeldeployment",
)


def register_handlers() -> None:
    """Import the modules whose decorators register Kopf handlers."""
    for module in HANDLER_MODULES:
        importlib.import_module(module)
