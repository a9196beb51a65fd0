"""Both READMEs say which versions of the integrations are supported, and the Python ranges they
state are the ones pyproject.toml installs, so the two cannot drift apart."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parents[2]
READMES = [REPO / "README.md", REPO / "charts" / "deltaroll" / "README.md"]
COMPONENTS = ["Kopf", "huggingface_hub", "vLLM", "SGLang", "Flux", "Argo CD"]


def _rows(readme: Path) -> dict[str, str]:
    section = readme.read_text().split("## Supported versions", 1)[1].split("\n## ", 1)[0]
    rows = (line.split("|") for line in section.splitlines() if line.startswith("| "))
    return {cells[1].strip(): "|".join(cells[2:]) for cells in rows}


@pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(REPO)))
def test_each_integration_has_its_supported_versions(readme: Path) -> None:
    rows = _rows(readme)
    assert [name for name in COMPONENTS if name in rows] == COMPONENTS
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {Requirement(line).name: Requirement(line).specifier for line in dependencies}
    for name in ("kopf", "huggingface_hub"):
        stated = re.search(r"`([<>=!~][^`]*)`", rows[{"kopf": "Kopf"}.get(name, name)])
        assert stated and SpecifierSet(stated.group(1)) == pins[name], name
    assert "0.27.0 or later" in rows["vLLM"]
