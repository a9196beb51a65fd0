"""Commands from other distributions: ``deltaroll`` adds every ``register(app)`` of the
``deltaroll.cli`` entry-point group, so ``deltaroll sandbox`` exists where the sandbox is installed
(as in development) while the product itself never imports it."""

from __future__ import annotations

from importlib.metadata import entry_points

from deltaroll.cli.main import PLUGIN_GROUP
from fixtures.cli import run_deltaroll


def test_the_sandbox_registers_its_commands_through_the_entry_point_group() -> None:
    names = {e.name: e.value for e in entry_points(group=PLUGIN_GROUP)}
    assert names.get("sandbox") == "deltaroll_sandbox.cli:register"
    done = run_deltaroll("sandbox", "--help")
    assert done.returncode == 0, done.stderr
    assert "up" in done.stdout and "logs" in done.stdout


def test_a_plugin_error_is_one_line_through_deltaroll_too(tmp_path) -> None:
    done = run_deltaroll("sandbox", "logs", "x", "--kubeconfig", tmp_path / "none")
    assert done.returncode == 1
    assert done.stderr.startswith("error: no kubeconfig at ") and done.stderr.count("\n") == 1
