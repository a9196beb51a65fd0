"""The ModelDeployment controller: move inference pods from the stable version to a new one in
canary steps.

- :mod:`.planner`   (spec, status, pods, requests, now) -> a plan, like Argo's canary (pure)
- :mod:`.pods`      pods as the planner sees them; which pod serves which version (pure)
- :mod:`.overlap`   which of two ModelDeployments selecting one pod keeps it (pure)
- :mod:`.target`    whether spec.version is ready to roll out (its ModelDelta, or the store)
- :mod:`.writes`    pod annotations and ModelDeployment status writes, never its spec
- :mod:`.handlers`  the Kopf handlers: read, take due measurements, plan, apply (importing it
                    registers them)

Canary analysis (metric templates measured on a schedule, judged by CEL) is
:mod:`deltaroll.controllers.analysis`.
"""
