"""The admin's options for files beside the weights, shared by push, pull, apply and the agent
(see :mod:`deltaroll.checkpoint.aux_policy`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from deltaroll.checkpoint.aux_policy import AuxPolicy

AllowAuxOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-aux-file",
        help="A glob of files beside the weights to allow beyond the data files (config, "
        "tokenizer); repeatable. An admin's decision: an engine may execute them.",
    ),
]
AllowAutoMapOpt = Annotated[
    bool,
    typer.Option(
        "--allow-auto-map",
        help="Allow an auto_map in config files (code an engine with --trust-remote-code runs).",
    ),
]


def aux_policy(allow: list[str] | None, auto_map: bool) -> AuxPolicy:
    from deltaroll.checkpoint.aux_policy import AuxPolicy

    return AuxPolicy(tuple(allow or ()), auto_map)
