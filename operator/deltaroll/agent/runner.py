"""Wiring one agent together from its config: store, engine client, reporter, health server and,
with a peer selector, the peer server and the way to its peers' objects."""

from __future__ import annotations

import threading

import structlog

from deltaroll.agent.config import AgentConfig
from deltaroll.agent.health import HealthServer
from deltaroll.agent.metrics import AgentMetrics
from deltaroll.agent.peer_directory import PodPeers
from deltaroll.agent.peer_fetch import PeerFetcher
from deltaroll.agent.peer_server import PeerServer
from deltaroll.agent.pod_tokens import (
    REMEMBER_WITH_LIVE_CHECK_S,
    TokenAuthenticator,
    token_review_call,
)
from deltaroll.agent.reconcile import Agent
from deltaroll.agent.report import PodReporter, core_v1_api
from deltaroll.agent.scrub import Scrubber
from deltaroll.agent.volume import WeightsVolume
from deltaroll.api.peers import AUDIENCE as PEER_AUDIENCE
from deltaroll.engines import engine_client
from deltaroll.store import Store
from deltaroll.store.node_cache import NodeCacheClient

log = structlog.get_logger(__name__)


def build_agent(config: AgentConfig) -> tuple[Agent, PeerServer | None]:
    """An agent for ``config``, talking to the real store, engine and Kubernetes API, and its
    peer server (bound, not started) when it has a peer selector."""
    engine = engine_client(config.engine, config.engine_url, timeout=config.engine_timeout_s)
    volume = WeightsVolume(config.weights_dir, config.cache_dir)
    store = Store(config.store, cache_dir=volume.cache_dir)
    api = core_v1_api(config.service_account_dir)
    metrics = AgentMetrics()
    server = peers = None
    if config.peer_selector is not None:
        directory = PodPeers(api, config.pod_namespace, config.peer_selector, config.pod_name)
        server = PeerServer(
            config.peer_host,
            config.peer_port,
            model=config.model,
            cache=store.cache,
            rate=config.peer_serve_rate,
            max_peers=config.peer_serve_max,
            metrics=metrics,
            authenticator=TokenAuthenticator(
                token_review_call(config.service_account_dir),
                PEER_AUDIENCE,
                remember_s=REMEMBER_WITH_LIVE_CHECK_S,  # the server checks membership by UID
            ),
            namespace=config.pod_namespace,
            directory=directory,
        )
        peers = PeerFetcher(
            directory,
            config.pod_name,
            config.model,
            metrics,
            token_file=config.peer_token,
            seeders=config.peer_seeders,
            wait_s=config.peer_wait_s,
            seeder_grace_s=config.seeder_grace_s,
            standby_grace_s=config.standby_grace_s,
            timeout_s=config.peer_timeout_s,
        )
    agent = Agent(
        config,
        store=store,
        engine=engine,
        reporter=PodReporter(
            api,
            config.pod_namespace,
            config.pod_name,
            peer_port=server.port if server is not None else None,
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
        metrics=metrics,
        peers=peers,
    )
    return agent, server


def run_agent(config: AgentConfig, stop: threading.Event) -> None:
    """Serve ``/healthz``, ``/metrics`` and the peers, and reconcile until ``stop`` is set."""
    agent, peer_server = build_agent(config)
    server = HealthServer(
        config.health_host, config.health_port, agent.healthz, agent.metrics.registry
    )
    server.start()
    log.info("agent.health_listening", host=config.health_host, port=server.port)
    if peer_server is not None:
        peer_server.start()
        log.info("agent.peers_listening", host=config.peer_host, port=peer_server.port)
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
        if peer_server is not None:
            peer_server.stop()
        server.stop()
