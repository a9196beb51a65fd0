"""Entry point of the ``deltaroll`` command: one Typer app, one module per group of commands.

User errors (:class:`~deltaroll.errors.DeltarollError`) become a single ``error: ...`` line on
stderr and a non-zero exit; nothing else is printed for them.
"""

from __future__ import annotations

import importlib

import typer

from deltaroll.cli.errors import run_cli

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
    """Run the CLI."""
    run_cli(build_app(), argv)


if __name__ == "__main__":
    main()
