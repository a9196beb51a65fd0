"""``deltaroll operator run`` refuses flag combinations the chart never passes, in one line."""

from __future__ import annotations

import pytest

from fixtures.cli import run_deltaroll


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "either --all-namespaces or one or more --namespace"),
        (["--all-namespaces", "--namespace=ml"], "either --all-namespaces or one or more"),
        (["-A", "--standalone", "--peering=deltaroll"], "either --standalone or --peering"),
    ],
)
def test_bad_flags_are_one_error_line(args: list[str], expected: str) -> None:
    done = run_deltaroll("operator", "run", *args, timeout=60)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and expected in line


def test_the_chart_flags_are_accepted() -> None:
    done = run_deltaroll("operator", "run", "--help", timeout=60)
    for flag in ("--liveness", "--all-namespaces", "--namespace", "--standalone", "--peering"):
        assert flag in done.stdout
