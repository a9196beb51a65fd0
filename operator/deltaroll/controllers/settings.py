"""Kopf's operational settings for production, in one startup handler.

- Progress and diff-base are kept in annotations under ``operator.deltaroll.dev`` (the CRD's status
  schema is structural and would prune Kopf's own status fields), a prefix of their own so the
  request annotations under ``deltaroll.dev`` stay in the state Kopf diffs: a promote fires the
  update handler at once.
- Events are posted for our transitions (info and up), not Kopf's debug chatter.
- Kopf waits up to 10 s (not its 5 s) for the watch to bring back its own diff-base patch before
  it handles an object again: with 1000 ModelDeployments starting together the watch lags more
  than 5 s, Kopf then took the stale body for a new object and ran the handler (a reconcile) and
  its patch a second time, which lagged the watch further. Only the watch delivering that patched
  resourceVersion ends the wait early, and an object's worker lives until the wait is over, so a
  longer wait keeps every worker of a start-up alive longer (30 s showed as idle CPU at 1000).
- Errors back off (1 s, 5 s, 15 s, then every 60 s) instead of hammering the API or the store.
- Finalizers: only ModelDeltas with ``deletionPolicy: Delete`` get one (the only cleanup the
  operator must do before an object goes); the finalizer name is ours.
- Peering follows the command line (``--standalone`` or ``--peering=NAME``, see
  ``deltaroll operator run``): with several replicas only one is active.
- Metrics are served on $DELTAROLL_METRICS_PORT.
- The admin's policy ($DELTAROLL_POLICY) is read before anything is reconciled: a bad one stops
  the operator with the field to fix.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf
import structlog

from deltaroll.api.annotations import FINALIZER, KOPF_PREFIX, LAST_HANDLED_KEY
from deltaroll.controllers import metrics
from deltaroll.controllers.policy import current_policy

log = structlog.get_logger("deltaroll.operator")
CONSISTENCY_TIMEOUT_S = 10.0


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    policy = current_policy()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key=LAST_HANDLED_KEY
    )
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = "deltaroll-operator"
    settings.posting.reporting_instance = os.environ.get("POD_NAME", "deltaroll-operator")
    settings.queueing.error_delays = (1, 5, 15, 60)
    settings.execution.max_workers = 8
    settings.persistence.consistency_timeout = CONSISTENCY_TIMEOUT_S
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    port = metrics.serve_from_environment()
    log.info(
        "operator.started",
        pod=os.environ.get("POD_NAME"),
        namespace=os.environ.get("POD_NAMESPACE"),
        peering=settings.peering.name,
        standalone=settings.peering.standalone,
        metrics_port=port,
        policy_namespaces=sorted(policy.namespaces),
        instance_metadata=policy.allow_instance_metadata,
    )
