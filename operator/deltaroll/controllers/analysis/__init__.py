"""Analysis of a canary: metric templates measured on a schedule and judged with CEL.

- :mod:`.runs`       when a measurement is due, and how one changes a run's result (pure)
- :mod:`.verdict`    successCondition / failureCondition over ``result`` and ``baseline`` (CEL)
- :mod:`.endpoints`  where a pod's engine answers (podIP + port, or the sandbox's host port)
- :mod:`.http_probe` POST to canary and stable engines, a number at a JSONPath
- :mod:`.prometheus` an instant query against Prometheus' HTTP API
- :mod:`.job`        an analysis Job: success when it completes
- :mod:`.measure`    one measurement of a template, whichever its provider

The rollout planner only reads run phases; the handler takes the due measurements before
planning, so the planner stays a pure function.
"""
