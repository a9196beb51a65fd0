"""``deltaroll operator run`` refuses flag combinations the chart never passes, and a signing
key it cannot use, in one line, before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from deltaroll.store.signing import generate_key_pair
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
    for flag in ("--liveness", "--all-namespaces", "--namespace", "--standalone", "--peering",
                 "--signing-key"):  # fmt: skip
        assert flag in done.stdout


def test_a_signing_key_that_cannot_be_used_stops_the_operator_before_it_starts(
    tmp_path: Path,
) -> None:
    public = tmp_path / "operator.pub"
    generate_key_pair(tmp_path / "operator.pem", public)
    for path, expected in ((tmp_path / "missing.pem", "cannot read key file"),
                           (public, "is not an unencrypted Ed25519 private key")):  # fmt: skip
        done = run_deltaroll(
            "operator", "run", "-A", "--standalone", "--signing-key", path, timeout=60
        )
        assert done.returncode == 2, done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith("error: ") and expected in line and str(path) in line
