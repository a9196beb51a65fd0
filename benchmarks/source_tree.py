"""Another commit's ``operator`` tree, for a benchmark that measures it beside this one in the
same run (its baseline): ``git archive`` of this repository, unpacked, put on PYTHONPATH."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def operator_tree(ref: str, into: Path) -> Path:
    """The ``operator`` directory of ``ref``, extracted under ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", ref, "operator"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "operator"
