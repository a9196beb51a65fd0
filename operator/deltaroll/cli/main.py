"""Entry point of the ``deltaroll`` command: one Typer app, one module per group of commands.

User errors (:class:`~deltaroll.errors.DeltarollError`) become a single ``error: ...`` line on
stderr and a non-zero exit; nothing else is printed for them.
"""

from __future__ import annotations

import importlib
import sys

import typer
from typer.exceptions import Abort, TyperException

from deltaroll.errors import DeltarollError

# Command modules, each with a `register(app)` that adds its commands. Add new modules here.
COMMAND_MODULES: tuple[str, ...] = (
    "crds_command",
    "store_commands",
    "engine_commands",
    "codec_commands",
    "sandbox_commands",
    "worker_commands",
    "operator_commands",
    "agent_commands",
)


def build_app() -> typer.Typer:
    """A new app with every command module's commands (new each call, so running it twice in
    one process, as the codec demo does, never registers a command twice)."""
    app = typer.Typer(
        name="deltaroll",
        help="Ship new model weights to inference fleets as sparse, lossless deltas.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def _root() -> None:
        """Ship new model weights to inference fleets as sparse, lossless deltas."""
        # An explicit callback keeps `deltaroll <command>` a group even if one command is
        # registered.

    for module_name in COMMAND_MODULES:
        importlib.import_module(f"deltaroll.cli.{module_name}").register(app)
    return app


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; map named errors to one line and an exit code."""
    try:
        exit_code = build_app()(args=argv, standalone_mode=False)
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


if __name__ == "__main__":
    main()
