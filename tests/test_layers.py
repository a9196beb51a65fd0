"""The layers of ``deltaroll`` hold: every import of every module under operator/deltaroll (lazy
ones inside functions included) points down the order that ``deltaroll/__init__.py`` documents,
no two parts import each other, the controllers read the agent and the worker only through
``api``, and no product module imports the sandbox, the demo or pytest.

Read with :mod:`ast`, not by importing, so a lazy import counts like any other."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "operator" / "deltaroll"

#: Lowest first; a module may import its own part and any part before it. The top-level modules
#: (``errors``, ``logs``, ``redact``, ``collector``) are beneath every part. Must match
#: deltaroll/__init__.py.
LAYERS = (
    "api",
    "codec",
    "checkpoint",
    "store",
    "worker",
    "engines",
    "agent",
    "controllers",
    "cli",
)
NEVER_IN_THE_PRODUCT = ("deltaroll_sandbox", "deltaroll_demo", "pytest", "_pytest")
CONTROLLERS_NEVER_IMPORT = ("agent", "worker")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module that ``source`` imports anywhere (relative imports resolved)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names.add(prefix)
            # `from deltaroll import controllers` imports the part itself.
            names.update(f"{prefix}.{alias.name}" for alias in node.names if prefix == "deltaroll")
    return names


def part_of(name: str) -> str | None:
    """The part (``store``, ``api``...) a ``deltaroll.*`` module belongs to; None for others."""
    pieces = name.split(".")
    if pieces[0] != "deltaroll" or len(pieces) < 2 or pieces[1] not in LAYERS:
        return None
    return pieces[1]


def violations(module: str, source: str, is_package: bool = False) -> list[str]:
    """What ``module`` (with ``source``) imports against the rules, one line each."""
    found = []
    here = part_of(module)
    for name in sorted(imported_names(source, module, is_package)):
        if name.split(".")[0] in NEVER_IN_THE_PRODUCT:
            found.append(f"{module} imports {name}, which the product must never import")
            continue
        there = part_of(name)
        if here is None or there is None or there == here:
            continue
        if LAYERS.index(there) > LAYERS.index(here):
            found.append(f"{module} imports {name}: {there} is above {here}")
        if here == "controllers" and there in CONTROLLERS_NEVER_IMPORT:
            found.append(f"{module} imports {name}: controllers read {there} only through api")
    return found


def product_modules() -> dict[str, tuple[str, bool]]:
    return {
        module_name(path): (path.read_text(), path.name == "__init__.py")
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def part_graph(modules: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for module, (source, is_package) in modules.items():
        here = part_of(module)
        for name in imported_names(source, module, is_package):
            there = part_of(name)
            if here and there and there != here:
                graph[here].add(there)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle of parts, found from each start (a cycle may show once per member)."""
    found = []

    def walk(path: list[str]) -> None:
        for nxt in sorted(graph.get(path[-1], ())):
            if nxt == path[0]:
                found.append([*path, nxt])
            elif nxt not in path:
                walk([*path, nxt])

    for start in sorted(graph):
        walk([start])
    return found


def test_the_layers_are_the_ones_the_package_documents() -> None:
    documented = (PACKAGE / "__init__.py").read_text()
    positions = [documented.index(f"``{part}``") for part in LAYERS]
    assert positions == sorted(positions), "deltaroll/__init__.py lists the parts in another order"
    parts = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert parts == set(LAYERS), "a part is missing from LAYERS, or LAYERS names a gone part"


def test_no_import_runs_upward_or_leaves_the_product() -> None:
    modules = product_modules()
    assert len(modules) > 100, "the walk found too few modules to mean anything"
    found = [
        line for module, (src, pkg) in modules.items() for line in violations(module, src, pkg)
    ]
    assert found == []


def test_no_cycle_between_parts() -> None:
    assert cycles(part_graph(product_modules())) == []


@pytest.mark.parametrize(
    ("module", "source", "complaint"),
    [
        ("deltaroll.store.client", "from deltaroll.worker import compute", "worker is above store"),
        ("deltaroll.api.common", "import deltaroll.codec.delta", "codec is above api"),
        (
            "deltaroll.codec.delta",
            "def f():\n    from deltaroll.controllers import kube\n",
            "controllers is above codec",
        ),
        ("deltaroll.controllers.kube", "from deltaroll.agent import runner", "through api"),
        ("deltaroll.cli.main", "from deltaroll_sandbox import Sandbox", "must never import"),
        ("deltaroll.store.gc", "def f():\n    import pytest\n", "must never import"),
        ("deltaroll.worker.compute", "from ..cli import main", "cli is above worker"),
    ],
)
def test_the_checker_catches_what_it_must(module: str, source: str, complaint: str) -> None:
    assert any(complaint in line for line in violations(module, source))


def test_the_checker_allows_downward_imports() -> None:
    source = "from deltaroll.store import Store\nfrom deltaroll.api.facts import VersionFacts\n"
    assert violations("deltaroll.worker.compute", source) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"store": {"worker"}, "worker": {"store"}, "api": set()}) != []
    assert cycles({"worker": {"store"}, "store": {"api"}}) == []
