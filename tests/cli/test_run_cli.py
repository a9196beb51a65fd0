"""How both command-line tools (``deltaroll`` and ``kubectl-deltaroll``) end: user errors as one
``error: ...`` line and an exit code, Ctrl-C as 130, a command's own exit code kept."""

from __future__ import annotations

import pytest
import typer

from deltaroll.cli.errors import run_cli
from deltaroll.errors import DeltarollError


class _Refused(DeltarollError):
    exit_code = 3


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @app.command()
    def act(what: str) -> int:
        if what == "refuse":
            raise _Refused("the store refused: bucket is read-only")
        if what == "interrupt":
            raise typer.Abort()
        return 4 if what == "four" else 0

    return app


@pytest.mark.parametrize(
    ("argv", "code", "stderr"),
    [
        (["refuse"], 3, "error: the store refused: bucket is read-only\n"),
        (["interrupt"], 130, "error: aborted\n"),
        (["four"], 4, ""),
        (["a", "b"], 2, "error: Got unexpected extra argument(s) (b)\n"),
    ],
)
def test_each_ending_is_one_line_and_an_exit_code(
    argv: list[str], code: int, stderr: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as ended:
        run_cli(_app(), argv)
    assert ended.value.code == code
    assert capsys.readouterr().err == stderr


def test_success_exits_normally() -> None:
    run_cli(_app(), ["fine"])
