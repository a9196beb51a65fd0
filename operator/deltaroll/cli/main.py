"""Entry point of the ``deltaroll`` command: one Typer app, one module per group of commands,
plus the commands other installed distributions register under :data:`PLUGIN_GROUP`.

User errors (:class:`~deltaroll.errors.DeltarollError`) become a single ``error: ...`` line on
stderr and a non-zero exit; nothing else is printed for them.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import typer

from deltaroll.cli import (
    agent_commands,
    codec_commands,
    crds_command,
    engine_commands,
    key_commands,
    operator_commands,
    store_commands,
    worker_commands,
)
from deltaroll.cli.errors import run_cli

#: Command modules of this package, each with a ``register(app)`` that adds its commands.
COMMAND_MODULES = (
    crds_command,
    store_commands,
    key_commands,
    engine_commands,
    codec_commands,
    worker_commands,
    operator_commands,
    agent_commands,
)

#: Other distributions add commands through this entry-point group: each entry point names a
#: ``register(app)`` (``deltaroll-sandbox`` adds ``deltaroll sandbox``).
PLUGIN_GROUP = "deltaroll.cli"


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

    for module in COMMAND_MODULES:
        module.register(app)
    for plugin in entry_points(group=PLUGIN_GROUP):
        plugin.load()(app)
    return app


def main(argv: list[str] | None = None) -> None:
    """Run the CLI."""
    run_cli(build_app(), argv)


if __name__ == "__main__":
    main()
