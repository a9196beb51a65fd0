"""The ModelDelta controller: compute a delta between two checkpoints in a worker Job, publish it
to the store.

- :mod:`.jobs`       the worker Job of a ModelDelta, built from its spec (pure)
- :mod:`.observe`    a Job and its pods reduced to what the planner needs (pure)
- :mod:`.planner`    (spec, observed state) -> (status, actions) for a ModelDelta (pure)
- :mod:`.retention`  which versions a deletion must keep: those a ModelDeployment names (pure)
- :mod:`.storeview`  what the operator reads from a store (manifests only, never weights)
- :mod:`.handlers`   the Kopf handlers: read, plan, apply (importing it registers them)
"""
