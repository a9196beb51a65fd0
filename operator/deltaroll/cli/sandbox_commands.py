"""``deltaroll sandbox``: a local control plane (Kubernetes API + kubelet) in the foreground."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

sandbox_app = typer.Typer(
    help="A local Kubernetes API and kubelet for trying Deltaroll without a cluster.",
    no_args_is_help=True,
)

DEFAULT_DIR = Path(".deltaroll-sandbox")


@sandbox_app.command("up")
def up(
    directory: Annotated[
        Path, typer.Option("--dir", help="Folder for the kubeconfig, pod folders and logs.")
    ] = DEFAULT_DIR,
    port: Annotated[int, typer.Option("--port", help="Port of the HTTPS API (0: a free one).")] = 0,
) -> None:
    """Run the sandbox until Ctrl-C or SIGTERM; prints the kubeconfig path once it is ready."""
    import asyncio
    import logging
    import signal
    import sys

    import structlog

    from deltaroll.sandbox import Sandbox

    # stdout carries the kubeconfig path only; log lines go to stderr.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with Sandbox(directory, port=port) as sandbox:
            sys.stdout.write(f"{sandbox.kubeconfig_path}\n")
            sys.stdout.flush()
            sys.stderr.write(
                f"sandbox API at {sandbox.api_url}; use it with:\n"
                f"  export KUBECONFIG={sandbox.kubeconfig_path}\n"
                "stop with Ctrl-C\n"
            )
            await stop.wait()

    asyncio.run(run())


@sandbox_app.command("logs")
def logs(
    pod: Annotated[str, typer.Argument(help="The pod's name.")],
    namespace: Annotated[str, typer.Option("--namespace", "-n")] = "default",
    container: Annotated[
        str | None, typer.Option("--container", "-c", help="Needed when the pod has several.")
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the container stops.")
    ] = False,
    previous: Annotated[
        bool, typer.Option("--previous", "-p", help="The previous run's log, after a restart.")
    ] = False,
    kubeconfig: Annotated[
        Path | None,
        typer.Option("--kubeconfig", help="Default: $KUBECONFIG, else the default --dir's."),
    ] = None,
) -> None:
    """Print a pod's container log (what ``kubectl logs`` shows), read through the API."""
    import sys

    import kubernetes
    import urllib3

    from deltaroll.sandbox.errors import SandboxError, SandboxNotFoundError

    config_path = kubeconfig or Path(os.environ.get("KUBECONFIG") or DEFAULT_DIR / "kubeconfig")
    if not config_path.exists():
        raise SandboxNotFoundError(
            f"no kubeconfig at {config_path}: start a sandbox with `deltaroll sandbox up` "
            "or pass --kubeconfig"
        )
    client = kubernetes.config.new_client_from_config(config_file=str(config_path))
    try:
        api = kubernetes.client.CoreV1Api(client)
        response: Any = api.read_namespaced_pod_log(
            pod,
            namespace,
            container=container,
            follow=follow,
            previous=previous,
            _preload_content=False,
        )
        for chunk in response.stream(4096):
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
    except kubernetes.client.ApiException as exc:
        import json

        try:
            message = json.loads(exc.body or "")["message"]
        except (ValueError, KeyError, TypeError):
            message = exc.reason
        raise SandboxError(f"cannot read the log of pod {namespace}/{pod}: {message}") from exc
    except kubernetes.config.ConfigException as exc:
        raise SandboxNotFoundError(f"the kubeconfig {config_path} is not usable: {exc}") from exc
    except (OSError, urllib3.exceptions.HTTPError) as exc:  # connection refused and friends
        raise SandboxNotFoundError(
            f"no API answers at {client.configuration.host} (from {config_path}); "
            "is `deltaroll sandbox up` running?"
        ) from exc
    finally:
        client.close()


def register(app: typer.Typer) -> None:
    app.add_typer(sandbox_app, name="sandbox")
