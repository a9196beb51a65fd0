"""Prometheus metrics of the operator, served on $DELTAROLL_METRICS_PORT when it is set.

Names follow Prometheus conventions (``_total`` counters, ``_seconds`` and ``_bytes`` units).
Labels are bounded (kinds, phases, reasons), never object names, so cardinality stays small.
"""

from __future__ import annotations

import os
from typing import Final

from prometheus_client import Counter, Histogram, start_http_server

PORT_ENV: Final = "DELTAROLL_METRICS_PORT"

RECONCILES = Counter(
    "deltaroll_reconciles_total",
    "Reconciliations of custom resources, by kind and resulting phase.",
    ["kind", "phase"],
)
RECONCILE_ERRORS = Counter(
    "deltaroll_reconcile_errors_total",
    "Reconciliations that raised (retried by Kopf with backoff), by kind.",
    ["kind"],
)
TRANSITIONS = Counter(
    "deltaroll_modeldelta_transitions_total",
    "ModelDelta phase transitions, by phase and the Ready condition's reason.",
    ["phase", "reason"],
)
JOBS_CREATED = Counter("deltaroll_jobs_created_total", "Worker Jobs created.")
JOB_DURATION = Histogram(
    "deltaroll_job_duration_seconds",
    "From a worker Job's creation until its ModelDelta became Ready or Failed.",
    ["result"],
    buckets=(10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400),
)
PUBLISHED_BYTES = Counter(
    "deltaroll_published_delta_bytes_total",
    "Bytes of the deltas of versions that became Ready (as the store counts them).",
)


def serve_from_environment() -> int | None:
    """Start the metrics HTTP server if $DELTAROLL_METRICS_PORT is set; the port, or None."""
    port = os.environ.get(PORT_ENV)
    if not port:
        return None
    start_http_server(int(port))
    return int(port)
