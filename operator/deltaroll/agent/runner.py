"""Wiring one agent together from its config: store, engine client, reporter, health server."""

from __future__ import annotations

import threading

import structlog

from deltaroll.agent.config import AgentConfig
from deltaroll.agent.health import HealthServer
from deltaroll.agent.reconcile import Agent
from deltaroll.agent.report import PodReporter, core_v1_api
from deltaroll.agent.scrub import Scrubber
from deltaroll.agent.volume import WeightsVolume
from deltaroll.engines import engine_client
from deltaroll.store import Store
from deltaroll.store.node_cache import NodeCacheClient

log = structlog.get_logger(__name__)


def build_agent(config: AgentConfig) -> Agent:
    """An agent for ``config``, talking to the real store, engine and Kubernetes API."""
    volume = WeightsVolume(config.weights_dir, config.cache_dir)
    return Agent(
        config,
        store=Store(config.store, cache_dir=volume.cache_dir),
        engine=engine_client(config.engine, config.engine_url, timeout=config.engine_timeout_s),
        reporter=PodReporter(
            core_v1_api(config.service_account_dir), config.pod_namespace, config.pod_name
        ),
        node_cache=(
            NodeCacheClient(
                config.node_cache_url,
                config.node_cache_token,
                config.store,
                wait_s=config.node_cache_wait_s,
            )
            if config.node_cache_url and config.node_cache_token
            else None
        ),
    )


def run_agent(config: AgentConfig, stop: threading.Event) -> None:
    """Serve ``/healthz`` and ``/metrics`` and reconcile until ``stop`` is set."""
    agent = build_agent(config)
    server = HealthServer(
        config.health_host, config.health_port, agent.healthz, agent.metrics.registry
    )
    server.start()
    log.info("agent.health_listening", host=config.health_host, port=server.port)
    scrub = None
    if config.scrub_rate > 0:
        scrubber = Scrubber(
            agent.volume.weights,
            agent.scrub,
            rate=config.scrub_rate,
            interval_s=config.scrub_interval_s,
            metrics=agent.metrics,
        )
        scrub = threading.Thread(target=scrubber.run, name="deltaroll-scrub", daemon=True)
        scrub.start()
    try:
        agent.run(stop)
    finally:
        agent.scrub.close()
        if scrub is not None:
            scrub.join(timeout=10)
        server.stop()
