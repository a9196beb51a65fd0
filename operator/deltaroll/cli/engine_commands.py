"""``deltaroll engine serve | proxy | reload | status``: run the reference engine, front vLLM
or SGLang, drive any engine.

``serve`` runs the reference inference server the sandbox and tests use (SGLang and vLLM are run
with their own commands). ``proxy`` serves an inference pod's port in front of a vLLM or SGLang
bound to loopback, passing inference routes only. ``reload`` and ``status`` speak to a running
engine of any kind exactly as the pod agent does, which makes them the tool to check an engine's
wiring by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deltaroll.cli.output import JsonOpt, emit

KindOpt = Annotated[str, typer.Option("--kind", help="Engine kind: reference, sglang or vllm.")]
EndpointOpt = Annotated[
    str, typer.Option("--endpoint", help="Engine base URL, e.g. http://127.0.0.1:8000.")
]


def register(app: typer.Typer) -> None:
    """Add the ``engine`` command group."""
    engine = typer.Typer(help="Run the reference inference engine; reload or probe any engine.")
    engine.command("serve")(serve)
    engine.command("proxy")(proxy)
    engine.command("reload")(reload)
    engine.command("status")(status)
    app.add_typer(engine, name="engine")


def serve(
    model_path: Annotated[
        Path, typer.Option("--model-path", help="Checkpoint directory (config.json, safetensors).")
    ],
    kind: KindOpt = "reference",
    host: Annotated[
        str, typer.Option("--host", help="Address of the inference port (0.0.0.0 in a pod).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Inference port (the Service's).")] = 8000,
    admin_port: Annotated[
        int,
        typer.Option(
            "--admin-port", help="Reload and checksum routes, on 127.0.0.1 only (the agent's)."
        ),
    ] = 8001,
    device: Annotated[str, typer.Option("--device", help="torch device: cpu, cuda:0.")] = "cpu",
) -> None:
    """Serve a checkpoint with the reference engine until terminated."""
    if kind != "reference":
        from deltaroll.engines.errors import EngineConfigError

        raise EngineConfigError(
            f"--kind {kind}: only the reference engine is served by deltaroll; run {kind} with "
            "its own command and point the agent at it with --kind/--endpoint"
        )
    from deltaroll.engines.reference.loading import checkpoint_files

    checkpoint_files(model_path.resolve())  # a clear error before torch is imported
    from deltaroll.engines.reference.server import serve as serve_reference

    serve_reference(model_path, host=host, port=port, admin_port=admin_port, device=device)


def proxy(
    allow: Annotated[
        str, typer.Option("--allow", help="Engine kind whose inference routes pass: vllm, sglang.")
    ],
    listen: Annotated[
        str, typer.Option("--listen", help="HOST:PORT of the pod's inference port.")
    ] = "0.0.0.0:8000",
    upstream: Annotated[
        str, typer.Option("--upstream", help="The engine on the pod's loopback.")
    ] = "http://127.0.0.1:8001",
    allow_route: Annotated[
        list[str] | None,
        typer.Option("--allow-route", help="Another route to pass, e.g. 'GET /metrics'."),
    ] = None,
    max_request_bytes: Annotated[
        int, typer.Option("--max-request-bytes", min=1, help="Largest request body passed.")
    ] = 64 << 20,
    max_engine_connections: Annotated[
        int,
        typer.Option(
            "--max-engine-connections",
            min=1,
            help="Requests with the engine at once; more wait a while, then get 503.",
        ),
    ] = 1024,
) -> None:
    """Serve the inference routes of an engine on loopback; every other route answers 404."""
    from deltaroll.engines.errors import EngineConfigError
    from deltaroll.engines.inference_routes import allowed_routes
    from deltaroll.engines.transport import is_loopback, normalize_endpoint

    routes = allowed_routes(allow, allow_route or ())
    engine = normalize_endpoint(upstream)
    if not is_loopback(engine):
        raise EngineConfigError(
            f"--upstream {upstream}: not a loopback address; bind the engine to 127.0.0.1 "
            "(vLLM and SGLang: --host 127.0.0.1) so only its pod reaches its admin routes"
        )
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise EngineConfigError(f"--listen {listen!r}: give HOST:PORT, e.g. 0.0.0.0:8000")
    from deltaroll.engines.proxy import serve as serve_proxy

    serve_proxy(
        engine,
        routes,
        host=host.strip("[]"),
        port=int(port),
        max_request_bytes=max_request_bytes,
        max_engine_connections=max_engine_connections,
    )


def reload(
    kind: KindOpt,
    endpoint: EndpointOpt,
    model_path: Annotated[
        Path, typer.Option("--model-path", help="Checkpoint directory the engine should load.")
    ],
    version: Annotated[
        str | None, typer.Option("--version", help="Version id of those weights, if known.")
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait.")] = 900.0,
    as_json: JsonOpt = False,
) -> None:
    """Ask a running engine to load new weights, as the pod agent does."""
    from deltaroll.engines import engine_client

    client = engine_client(kind, endpoint, timeout=timeout)
    client.reload(model_path, version=version)
    loaded = client.loaded_version()
    emit(
        {
            "kind": kind,
            "endpoint": client.endpoint,
            "model_path": str(model_path.resolve()),
            "loaded_version": loaded,
        },
        as_json=as_json,
        human=f"{kind} at {client.endpoint} reloaded from {model_path} "
        f"(serving {loaded or 'an unreported version'})",
    )


def status(kind: KindOpt, endpoint: EndpointOpt, as_json: JsonOpt = False) -> None:
    """Report whether an engine is healthy and which version it serves (exit 1 if unhealthy)."""
    from deltaroll.engines import engine_client

    client = engine_client(kind, endpoint)
    healthy = client.health()
    loaded = client.loaded_version() if healthy else None
    emit(
        {"kind": kind, "endpoint": client.endpoint, "healthy": healthy, "loaded_version": loaded},
        as_json=as_json,
        human=f"{kind} at {client.endpoint}: "
        + (f"healthy, serving {loaded or 'an unreported version'}" if healthy else "unhealthy"),
    )
    if not healthy:
        raise typer.Exit(1)
