"""What every command shares: one JSON object on stdout with ``--json``, progress bars only on a
terminal, and human-readable lines on stderr so stdout stays machine-readable."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

stderr_console = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def emit(result: dict[str, Any], *, as_json: bool, human: str | None = None) -> None:
    """Print ``result`` as one JSON line (``--json``) or ``human`` text for people."""
    if as_json:
        sys.stdout.write(json.dumps(result, sort_keys=True, default=str) + "\n")
    elif human is not None:
        sys.stdout.write(human.rstrip("\n") + "\n")


@contextmanager
def progress_bar(description: str, total_bytes: int | None) -> Iterator[Callable[[int], None]]:
    """A byte progress bar on stderr, shown only when stderr is a terminal; yields the callback
    that advances it by a number of bytes."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=stderr_console,
        transient=True,
        disable=not stderr_console.is_terminal,
    )
    with progress:
        task = progress.add_task(description, total=total_bytes)
        yield lambda n: progress.advance(task, n)
