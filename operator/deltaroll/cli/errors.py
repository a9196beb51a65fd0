"""Named errors of the command-line tools."""

from __future__ import annotations

import sys

import typer
from typer.exceptions import Abort, TyperException

from deltaroll.errors import DeltarollError


def run_cli(app: typer.Typer, argv: list[str] | None) -> None:
    """Run ``app``; user errors become one ``error: ...`` line on stderr and a non-zero exit
    (nothing else is printed for them), Ctrl-C exits 130."""
    try:
        exit_code = app(args=argv, standalone_mode=False)
    except DeltarollError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except TyperException as exc:
        print(f"error: {exc.format_message()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except Abort:
        print("error: aborted", file=sys.stderr)
        sys.exit(130)
    if isinstance(exit_code, int) and exit_code:
        sys.exit(exit_code)


class ClusterRequestError(DeltarollError):
    """The cluster could not be reached, or refused the request; the message says which."""


class ModelDeploymentNotFoundError(DeltarollError):
    """No ModelDeployment of that name in that namespace; ``kubectl get modeldeployments``."""
