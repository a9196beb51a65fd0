"""The operator's controllers: Kopf handlers over pure planners.

- :mod:`.jobs`      the worker Job of a ModelDelta, built from its spec (pure)
- :mod:`.observe`   a Job and its pods reduced to what the planner needs (pure)
- :mod:`.planner`   (spec, observed state) -> (status, actions) for a ModelDelta (pure)
- :mod:`.retention` which versions a deletion must keep (pure)
- :mod:`.storeview` what the operator reads from a store (manifests only)
- :mod:`.kube`      the Kubernetes reads and writes, on the official client
- :mod:`.modeldelta` the Kopf handlers: read, plan, apply
- :mod:`.settings`  Kopf's production settings (one startup handler)
- :mod:`.metrics`   Prometheus metrics

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
