"""structlog set-up for long-running commands (the operator, the worker, the agent).

JSON lines in a cluster (``DELTAROLL_LOG_FORMAT=json``, the chart's default), coloured console
lines locally; always on stderr, so a command's ``--json`` stdout stays one object.
"""

from __future__ import annotations

import logging
import os
import sys

import structlog


def configure_logging(fmt: str | None = None, level: str | None = None) -> None:
    """Configure structlog (and stdlib logging, which Kopf uses) once per process."""
    fmt = (fmt or os.environ.get("DELTAROLL_LOG_FORMAT") or "console").lower()
    level_name = (level or os.environ.get("DELTAROLL_LOG_LEVEL") or "info").upper()
    numeric = logging.getLevelNamesMapping().get(level_name, logging.INFO)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(
        stream=sys.stderr, level=numeric, format="%(levelname)s %(name)s %(message)s"
    )
