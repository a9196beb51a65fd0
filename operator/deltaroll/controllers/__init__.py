"""The operator's controllers: Kopf handlers over pure planners, one per custom resource.

Pure planners decide, thin handlers read and write, so the decisions are tested without a cluster.

One folder per custom resource, and analysis:

- :mod:`.modeldelta`      ModelDelta: compute a delta in a worker Job, publish it to the store
                          (jobs, observe, planner, retention, storeview, handlers)
- :mod:`.modeldeployment` ModelDeployment: move inference pods from the stable version to a new
                          one in canary steps (planner, pods, overlap, target, writes, handlers)
- :mod:`.analysis`        canary analysis: metric templates measured on a schedule, judged by CEL

Shared:

- :mod:`.kube`            the Kubernetes reads and writes, on the official client
- :mod:`.keyed_locks`     one lock per object while its reconciles run, none kept after
- :mod:`.settings`        Kopf's production settings (one startup handler)
- :mod:`.pod_defaults`    what every pod the operator creates gets: Pod Security "restricted",
                          no ServiceAccount token, default resources
- :mod:`.invalid`         an object that does not parse: kstatus Stalled, one Warning Event
- :mod:`.metrics`         Prometheus metrics of the operator (bounded labels, never object names)
- :mod:`.errors`          named errors of this layer (bad operator flags or environment)

The controllers read what other processes report only through :mod:`deltaroll.api` (the agent's
state, a Job's result); they import neither the agent nor the worker.

Importing :func:`register_handlers` is cheap; calling it imports Kopf and registers the handlers
on Kopf's default registry (``deltaroll operator run`` does this before ``kopf.run``).
"""

from __future__ import annotations


def register_handlers() -> None:
    """Import the modules whose decorators register Kopf handlers."""
    from deltaroll.controllers import settings  # noqa: F401
    from deltaroll.controllers.modeldelta import handlers as modeldelta  # noqa: F401
    from deltaroll.controllers.modeldeployment import handlers as modeldeployment  # noqa: F401
