"""Entry points run inside the operator's Kubernetes Jobs (``deltaroll worker ...``).

Each command does one unit of heavy work against a store and publishes the result, so a Job that
is retried, or a second Job racing the first, ends with the same version and nothing half-written:

- ``compute``      diff a target checkpoint against a parent version (:mod:`.compute`; split
                   across the indexes of an Indexed Job by :mod:`.shards`)
- ``import``       turn a trainer's TRL sparse patch into a version (:mod:`.compute`)
- ``materialize``  publish a full snapshot (anchor) of a version (:mod:`.snapshots`)
- ``squash``       give a version a direct delta from an older one (:mod:`.snapshots`)

Modules: ``sources`` (a checkpoint URI to a local path), ``parent`` (a version to a local
checkpoint, through a cache), ``result`` (where the termination message goes), ``errors``. What a
Job tells the controller (its report and exit codes) is defined in :mod:`deltaroll.api.job_result`;
the version facts it reports are read from the store (:mod:`deltaroll.store.facts`).
"""
