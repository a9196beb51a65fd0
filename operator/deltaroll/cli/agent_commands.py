"""``deltaroll agent run``: the sidecar of every inference pod (see :mod:`deltaroll.agent`).

The flags match the Helm chart's sidecar snippet (charts/deltaroll/README.md); the pod's own
name and namespace come from ``POD_NAME`` / ``POD_NAMESPACE`` (downward API env).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deltaroll.agent.config import DEFAULT_PEER_SERVE_RATE, DEFAULT_SCRUB_RATE, SERVICE_ACCOUNT_DIR
from deltaroll.api.node_cache import DEFAULT_FILL_TTL_S
from deltaroll.api.node_cache import DEFAULT_PORT as DEFAULT_NODE_CACHE_PORT
from deltaroll.api.peers import DEFAULT_PEER_PORT, DEFAULT_SEEDERS
from deltaroll.cli.aux_options import AllowAutoMapOpt, AllowAuxOpt

#: Config fields whose flag is not simply the field's name with dashes.
_FLAGS = {
    "poll_interval_s": "--poll-interval",
    "retry_max_s": "--retry-max",
    "retry_initial_s": "--retry-max",
    "failed_retry_s": "--failed-retry",
    "engine_timeout_s": "--engine-timeout",
    "scrub_interval_s": "--scrub-interval",
    "node_cache_url": "--node-cache",
    "node_cache_token": "--node-cache-token",
    "node_cache_wait_s": "--node-cache-wait",
    "peer_selector": "--peers",
    "peer_token": "--peer-token",
    "peer_wait_s": "--peer-wait",
    "seeder_grace_s": "--seeder-grace",
    "standby_grace_s": "--standby-grace",
    "peer_timeout_s": "--peer-timeout",
}


def register(app: typer.Typer) -> None:
    """Add the ``agent`` command group."""
    agent = typer.Typer(help="The pod agent: pull, apply and reload new weights, report.")
    agent.command("run")(run)
    agent.command("node-cache")(node_cache)
    app.add_typer(agent, name="agent")


def run(
    store: Annotated[str, typer.Option("--store", help="Store URI (file://, s3://, hf://).")],
    model: Annotated[str, typer.Option("--model", help="Model name in the store.")],
    annotations_file: Annotated[
        Path,
        typer.Option("--annotations-file", help="DownwardAPI file of the pod's annotations."),
    ],
    weights_dir: Annotated[
        Path, typer.Option("--weights-dir", help="Checkpoint directory the engine loads.")
    ],
    engine: Annotated[str, typer.Option("--engine", help="Engine kind: reference, sglang, vllm.")],
    engine_url: Annotated[
        str, typer.Option("--engine-url", help="Engine base URL, e.g. http://127.0.0.1:8000.")
    ],
    pod_name: Annotated[
        str, typer.Option("--pod-name", envvar="POD_NAME", help="This pod's name.")
    ] = "",
    pod_namespace: Annotated[
        str, typer.Option("--pod-namespace", envvar="POD_NAMESPACE", help="This pod's namespace.")
    ] = "",
    health_port: Annotated[
        int, typer.Option("--health-port", help="Port of /healthz and /metrics.")
    ] = 8081,
    health_host: Annotated[
        str,
        typer.Option(
            "--health-host",
            help="Address of /healthz and /metrics (loopback: only the pod's own exec probe "
            "and containers reach them; 0.0.0.0 lets Prometheus scrape the pod).",
        ),
    ] = "127.0.0.1",
    service_account_dir: Annotated[
        Path,
        typer.Option(
            "--service-account-dir",
            envvar="DELTAROLL_SERVICE_ACCOUNT_DIR",
            help="The agent's projected ServiceAccount token volume (token, ca.crt).",
        ),
    ] = SERVICE_ACCOUNT_DIR,
    cache_dir: Annotated[
        Path | None,
        typer.Option("--cache-dir", help="Object cache (default: beside the weights directory)."),
    ] = None,
    node_cache: Annotated[
        str | None,
        typer.Option(
            "--node-cache",
            envvar="DELTAROLL_NODE_CACHE",
            help="The node cache daemon's URL (http://$(HOST_IP):8470): objects are downloaded "
            "once per node.",
        ),
    ] = None,
    node_cache_token: Annotated[
        Path | None,
        typer.Option(
            "--node-cache-token",
            help="The pod's projected ServiceAccount token for the deltaroll-node-cache audience.",
        ),
    ] = None,
    node_cache_wait: Annotated[
        float,
        typer.Option("--node-cache-wait", help="Longest wait in seconds for another agent's fill."),
    ] = 60.0,
    poll_interval: Annotated[
        float, typer.Option("--poll-interval", help="Seconds between reads of the annotations.")
    ] = 1.0,
    retry_max: Annotated[
        float, typer.Option("--retry-max", help="Longest back-off in seconds after a failure.")
    ] = 30.0,
    failed_retry: Annotated[
        float, typer.Option("--failed-retry", help="Seconds before a Failed version is retried.")
    ] = 300.0,
    engine_timeout: Annotated[
        float, typer.Option("--engine-timeout", help="Longest wait in seconds for one reload.")
    ] = 900.0,
    scrub_rate: Annotated[
        int,
        typer.Option(
            "--scrub-rate",
            envvar="DELTAROLL_SCRUB_RATE",
            help="Bytes/s at which the served weights are re-hashed in the background "
            "(64 MiB/s by default; 0: no scrub).",
        ),
    ] = DEFAULT_SCRUB_RATE,
    scrub_interval: Annotated[
        float,
        typer.Option("--scrub-interval", help="Seconds of rest between two full scrub passes."),
    ] = 60.0,
    verify_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--verify-key",
            envvar="DELTAROLL_VERIFY_KEYS",
            help="A publisher public key (PEM file, or a directory of *.pem such as a mounted "
            "ConfigMap) every version must be signed by; repeatable (rotation). The pod's "
            "deltaroll.dev/verify-keys annotation adds more.",
        ),
    ] = None,
    allow_aux_file: AllowAuxOpt = None,
    allow_auto_map: AllowAutoMapOpt = False,
    peers: Annotated[
        str | None,
        typer.Option(
            "--peers",
            help="Label selector of the pods of this pod's ModelDeployment (its spec.selector, "
            "e.g. app=llm): serve them verified objects and fetch objects from them, so each "
            "object crosses the store link once (--peer-seeders times at most), not once per "
            "pod. Needs pods list in the agent's Role, create tokenreviews and --peer-token.",
        ),
    ] = None,
    peer_token: Annotated[
        Path | None,
        typer.Option(
            "--peer-token",
            help="The pod's projected ServiceAccount token for the deltaroll-peer audience: "
            "shown to peers, which serve only pods of their own ModelDeployment.",
        ),
    ] = None,
    peer_host: Annotated[
        str, typer.Option("--peer-host", help="Address the peer server listens on.")
    ] = "0.0.0.0",  # noqa: S104 (peers reach it on the pod network)
    peer_port: Annotated[
        int, typer.Option("--peer-port", help="Port of the peer server (a containerPort).")
    ] = DEFAULT_PEER_PORT,
    peer_seeders: Annotated[
        int,
        typer.Option(
            "--peer-seeders",
            help="Agents that may fetch each object from the store: the first at once, the "
            "others (standbys) only when it is gone or slow.",
        ),
    ] = DEFAULT_SEEDERS,
    peer_serve_rate: Annotated[
        int,
        typer.Option(
            "--peer-serve-rate",
            help="Bytes/s served to all peers together (128 MiB/s by default; 0: no limit).",
        ),
    ] = DEFAULT_PEER_SERVE_RATE,
    peer_serve_max: Annotated[
        int, typer.Option("--peer-serve-max", help="Peers served at once; more wait.")
    ] = 4,
    peer_wait: Annotated[
        float,
        typer.Option(
            "--peer-wait", help="Seconds an object is awaited from peers before the store."
        ),
    ] = 30.0,
    seeder_grace: Annotated[
        float,
        typer.Option(
            "--seeder-grace",
            help="Seconds a pod waits for its node's seeder to fill the node cache before it "
            "asks the peers itself (the seeder may hold the object without filling).",
        ),
    ] = 10.0,
    standby_grace: Annotated[
        float,
        typer.Option(
            "--standby-grace",
            help="Seconds a standby seeder waits for the first seeder's copy of an object "
            "before it fetches the object from the store too.",
        ),
    ] = 5.0,
    peer_timeout: Annotated[
        float, typer.Option("--peer-timeout", help="Seconds of silence before a peer is skipped.")
    ] = 10.0,
    log_format: Annotated[
        str | None,
        typer.Option(
            "--log-format", help="json or console (default: $DELTAROLL_LOG_FORMAT, console)."
        ),
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option("--log-level", help="debug, info, warning (default: $DELTAROLL_LOG_LEVEL)."),
    ] = None,
) -> None:
    """Run the agent until SIGTERM: reconcile the weights, serve /healthz and /metrics."""
    import signal
    import threading

    from pydantic import ValidationError

    from deltaroll.agent.config import AgentConfig
    from deltaroll.agent.errors import AgentConfigError
    from deltaroll.logs import configure_logging

    configure_logging(log_format, log_level)
    if not pod_name or not pod_namespace:
        raise AgentConfigError(
            "the agent needs its pod's name and namespace: set POD_NAME and POD_NAMESPACE from "
            "the downward API (fieldRef metadata.name / metadata.namespace)"
        )
    try:
        config = AgentConfig(
            store=store,
            model=model,
            annotations_file=annotations_file,
            weights_dir=weights_dir,
            engine=engine,
            engine_url=engine_url,
            pod_name=pod_name,
            pod_namespace=pod_namespace,
            cache_dir=cache_dir,
            node_cache_url=node_cache,
            node_cache_token=node_cache_token,
            node_cache_wait_s=node_cache_wait,
            service_account_dir=service_account_dir,
            health_host=health_host,
            health_port=health_port,
            poll_interval_s=poll_interval,
            retry_max_s=retry_max,
            retry_initial_s=min(1.0, retry_max),
            failed_retry_s=failed_retry,
            engine_check_s=15.0,
            engine_timeout_s=engine_timeout,
            scrub_rate=scrub_rate,
            scrub_interval_s=scrub_interval,
            verify_keys=verify_key or [],
            allow_aux_files=allow_aux_file or [],
            allow_auto_map=allow_auto_map,
            peer_selector=peers,
            peer_token=peer_token,
            peer_host=peer_host,
            peer_port=peer_port,
            peer_seeders=peer_seeders,
            peer_serve_rate=peer_serve_rate,
            peer_serve_max=peer_serve_max,
            peer_wait_s=peer_wait,
            seeder_grace_s=seeder_grace,
            standby_grace_s=standby_grace,
            peer_timeout_s=peer_timeout,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        field, message = (str(first["loc"][0]) if first["loc"] else ""), first["msg"]
        if not field:  # a check across fields names the field it blames first
            field, _, message = message.removeprefix("Value error, ").partition(": ")
        flag = _FLAGS.get(field, "--" + field.replace("_", "-"))
        raise AgentConfigError(f"{flag}: {message}") from None

    from deltaroll.agent.runner import run_agent

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run_agent(config, stop)


def node_cache(
    directory: Annotated[
        Path, typer.Option("--dir", help="The node's cache folder (a hostPath of the DaemonSet).")
    ],
    node_name: Annotated[
        str,
        typer.Option(
            "--node-name", envvar="NODE_NAME", help="This node (downward API spec.nodeName)."
        ),
    ],
    host: Annotated[
        str,
        typer.Option("--host", envvar="HOST_IP", help="Address to listen on (status.hostIP)."),
    ],
    port: Annotated[int, typer.Option("--port", help="Port (the DaemonSet's hostPort).")] = (
        DEFAULT_NODE_CACHE_PORT
    ),
    fill_ttl: Annotated[
        float,
        typer.Option(
            "--fill-ttl",
            help="Seconds a fill lease lasts unless its agent renews it (it does while it "
            "fetches): how soon the fill of an agent that died passes to another.",
        ),
    ] = DEFAULT_FILL_TTL_S,
    max_bytes: Annotated[
        int,
        typer.Option(
            "--max-bytes",
            min=1,
            help="Disk budget: least recently used objects go once the cache holds more.",
        ),
    ] = 100 << 30,
    namespace_max_bytes: Annotated[
        int | None,
        typer.Option(
            "--namespace-max-bytes",
            min=1,
            help="What one namespace may keep (its own objects go first beyond it); "
            "default: half of --max-bytes.",
        ),
    ] = None,
    object_max_bytes: Annotated[
        int | None,
        typer.Option(
            "--object-max-bytes",
            min=1,
            help="The largest object kept (larger ones agents fetch themselves); "
            "default: an eighth of --max-bytes.",
        ),
    ] = None,
    service_account_dir: Annotated[
        Path,
        typer.Option(
            "--service-account-dir",
            envvar="DELTAROLL_SERVICE_ACCOUNT_DIR",
            help="The daemon's own token volume (RBAC: create tokenreviews, nothing else).",
        ),
    ] = SERVICE_ACCOUNT_DIR,
    log_format: Annotated[str | None, typer.Option("--log-format")] = None,
    log_level: Annotated[str | None, typer.Option("--log-level")] = None,
) -> None:
    """Run the node cache daemon until SIGTERM: one download per node for the node's agents."""
    import asyncio
    import signal

    from deltaroll.agent.node_cache_budget import Limits
    from deltaroll.agent.node_cache_server import NodeCache, serve
    from deltaroll.agent.pod_tokens import TokenAuthenticator, token_review_call
    from deltaroll.api.node_cache import AUDIENCE
    from deltaroll.logs import configure_logging

    configure_logging(log_format, log_level)
    authenticator = TokenAuthenticator(
        token_review_call(service_account_dir), AUDIENCE, node_name=node_name
    )
    limits = Limits.of(max_bytes, namespace_max_bytes, object_max_bytes)
    cache = NodeCache(directory, authenticator, fill_ttl_s=fill_ttl, limits=limits)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(cache, host, port, stop)

    asyncio.run(main())
