"""The operator image installs ``deltaroll`` without extras: no torch, no transformers, no numba,
no safetensors. Its code must run without them: in a fresh interpreter where importing any of
them fails, every controllers module imports, the handlers register, and ``deltaroll operator
run --help`` (the image's command) works."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

ABSENT_FROM_THE_OPERATOR_IMAGE = ("torch", "transformers", "numba", "safetensors")

SCRIPT = textwrap.dedent(
    """
    import importlib, pkgutil, sys

    BLOCKED = {blocked!r}

    class Absent:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{{name}} is not in the operator image")
            return None

    sys.meta_path.insert(0, Absent())

    {probe}

    import deltaroll.controllers
    for info in pkgutil.walk_packages(deltaroll.controllers.__path__, "deltaroll.controllers."):
        importlib.import_module(info.name)
    deltaroll.controllers.register_handlers()

    from deltaroll.cli.main import main
    try:
        main(["operator", "run", "--help"])
    except SystemExit as exit:
        assert not exit.code, exit.code
    loaded = sorted(n for n in sys.modules if n.split(".")[0] in BLOCKED)
    assert not loaded, loaded
    print("operator-image-ok")
    """
)


def run(probe: str = "") -> subprocess.CompletedProcess[str]:
    code = SCRIPT.format(blocked=ABSENT_FROM_THE_OPERATOR_IMAGE, probe=probe)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_operator_runs_without_torch_transformers_numba() -> None:
    done = run()
    assert done.returncode == 0, done.stderr[-4000:]
    assert "operator-image-ok" in done.stdout
    assert "kopf" in done.stdout.lower() or "--all-namespaces" in done.stdout


@pytest.mark.parametrize("module", ABSENT_FROM_THE_OPERATOR_IMAGE)
def test_the_block_really_blocks(module: str) -> None:
    done = run(probe=f"import {module}")
    assert done.returncode != 0
    assert "is not in the operator image" in done.stderr
