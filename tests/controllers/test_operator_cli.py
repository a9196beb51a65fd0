"""``deltaroll operator run`` refuses flag combinations the chart never passes, in one line."""

from __future__ import annotations

import subprocess

import pytest

from controllers.modeldelta_world import DELTAROLL


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "either --all-namespaces or one or more --namespace"),
        (["--all-namespaces", "--namespace=ml"], "either --all-namespaces or one or more"),
        (["-A", "--standalone", "--peering=deltaroll"], "either --standalone or --peering"),
    ],
)
def test_bad_flags_are_one_error_line(args: list[str], expected: str) -> None:
    done = subprocess.run(
        [str(DELTAROLL), "operator", "run", *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and expected in line


def test_the_chart_flags_are_accepted() -> None:
    done = subprocess.run(
        [str(DELTAROLL), "operator", "run", "--help"], capture_output=True, text=True, timeout=60
    )
    for flag in ("--liveness", "--all-namespaces", "--namespace", "--standalone", "--peering"):
        assert flag in done.stdout
