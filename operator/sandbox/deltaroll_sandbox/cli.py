"""``deltaroll sandbox`` (and ``deltaroll-sandbox``): a local control plane in the foreground.

Deltaroll's CLI loads :func:`register` through the ``deltaroll.cli`` entry-point group, so
``deltaroll sandbox up|logs`` works wherever this distribution is installed; :func:`main` is the
same commands as a command of their own. Either way, a
:class:`~deltaroll_sandbox.errors.SandboxError` is one ``error: ...`` line on stderr and its exit
code.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer

from deltaroll_sandbox.errors import SandboxError

P = ParamSpec("P")
R = TypeVar("R")

sandbox_app = typer.Typer(
    help="A local Kubernetes API and kubelet for trying Deltaroll without a cluster.",
    no_args_is_help=True,
)

DEFAULT_DIR = Path(".deltaroll-sandbox")


def _one_line_errors(command: Callable[P, R]) -> Callable[P, R]:
    """A :class:`SandboxError` becomes ``error: ...`` on stderr and an exit with its code."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except SandboxError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(exc.exit_code) from None

    return run


@sandbox_app.command("up")
@_one_line_errors
def up(
    directory: Annotated[
        Path, typer.Option("--dir", help="Folder for the kubeconfig, pod folders and logs.")
    ] = DEFAULT_DIR,
    port: Annotated[int, typer.Option("--port", help="Port of the HTTPS API (0: a free one).")] = 0,
    nodes: Annotated[
        int,
        typer.Option(
            "--nodes",
            help="How many Nodes (1: this machine; more: each with its own address and "
            "hostPath folders, pods spread by the scheduler).",
        ),
    ] = 1,
) -> None:
    """Run the sandbox until Ctrl-C or SIGTERM; prints the kubeconfig path once it is ready."""
    import asyncio
    import logging
    import signal

    import structlog

    from deltaroll_sandbox import Sandbox

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
        async with Sandbox(directory, port=port, nodes=nodes) as sandbox:
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
@_one_line_errors
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
    import kubernetes
    import urllib3

    from deltaroll_sandbox.errors import SandboxNotFoundError

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
    """Add ``sandbox up|logs`` to ``app`` (the ``deltaroll.cli`` entry point)."""
    app.add_typer(sandbox_app, name="sandbox")


def main() -> None:
    """The ``deltaroll-sandbox`` command: ``deltaroll-sandbox up|logs``."""
    sandbox_app(prog_name="deltaroll-sandbox")
