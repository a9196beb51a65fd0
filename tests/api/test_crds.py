"""The committed CRDs are exactly what the models generate, and they are structural CRDs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from api.crd_check import REPO, all_rules, compile_rule, load_crd, openapi_schema
from deltaroll.api.crd import KINDS, crd_files, structural
from deltaroll.api.errors import CrdGenerationError
from fixtures.cli import DELTAROLL

KUBERNETES_VERSION = "1.36.0"


@pytest.mark.parametrize("folder", ["crds", "charts/deltaroll/crds"])
def test_committed_crds_match_the_models(folder: str) -> None:
    generated = crd_files()
    committed = {p.name: p.read_text(encoding="utf-8") for p in (REPO / folder).glob("*.yaml")}
    assert sorted(committed) == sorted(generated), f"{folder}: run `make crds`"
    for name, text in generated.items():
        assert committed[name] == text, f"{folder}/{name} is stale: run `make crds`"


def test_crds_command_writes_the_files(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(DELTAROLL), "crds", "-o", str(tmp_path / "out"), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert sorted(Path(f).name for f in report["files"]) == [
        "modeldeltas.yaml",
        "modeldeployments.yaml",
    ]
    for name in ("modeldeltas.yaml", "modeldeployments.yaml"):
        assert (tmp_path / "out" / name).read_bytes() == (REPO / "crds" / name).read_bytes()


@pytest.mark.parametrize("kind", ["ModelDelta", "ModelDeployment"])
def test_crd_passes_kubernetes_validate(kind: str) -> None:
    kubernetes_validate.validate(load_crd(kind), KUBERNETES_VERSION, strict=True)


def _walk(node: dict[str, Any], path: str = ""):
    yield path, node
    for key, child in node.get("properties", {}).items():
        yield from _walk(child, f"{path}.{key}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from _walk(node[key], f"{path}.{key}")


@pytest.mark.parametrize("kind", ["ModelDelta", "ModelDeployment"])
def test_schema_is_structural(kind: str) -> None:
    for path, node in _walk(openapi_schema(kind)):
        assert "$ref" not in node and "oneOf" not in node and "allOf" not in node, path
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
        else:
            assert "anyOf" not in node, path
            assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}
        assert not ("properties" in node and "additionalProperties" in node), path
        assert "x-kubernetes-preserve-unknown-fields" not in node, path
        if node.get("x-kubernetes-list-type") == "map":
            for key in node["x-kubernetes-list-map-keys"]:
                assert key in node["items"]["required"], path


@pytest.mark.parametrize("kind", ["ModelDelta", "ModelDeployment"])
def test_every_field_is_documented(kind: str) -> None:
    """`kubectl explain` prints these; an empty one is a field nobody can use."""
    undocumented = [
        f"{path}.{key}"
        for path, node in _walk(openapi_schema(kind))
        for key, child in node.get("properties", {}).items()
        if len(child.get("description", "")) < 8
    ]
    assert undocumented == []


@pytest.mark.parametrize("kind", ["ModelDelta", "ModelDeployment"])
def test_every_cel_rule_compiles(kind: str) -> None:
    rules = all_rules(openapi_schema(kind))
    assert rules
    for rule in rules:
        compile_rule(rule)


@pytest.mark.parametrize("resource", KINDS, ids=lambda r: r.kind)
def test_names_columns_and_subresources(resource) -> None:
    crd = load_crd(resource.kind)
    names = crd["spec"]["names"]
    assert names["categories"] == ["deltaroll"]
    assert names["shortNames"][0] in {"mdelta", "mdeploy"}
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    schema = openapi_schema(resource.kind)
    for column in version["additionalPrinterColumns"]:
        node = schema
        for part in column["jsonPath"].strip(".").split("."):
            if part == "metadata":
                break
            node = node["properties"][part]
        else:
            expected = {"string": "string", "integer": "integer", "number": "number"}
            assert node["type"] == expected[column["type"]], column["name"]


def test_a_union_without_structural_form_is_refused() -> None:
    node = {"anyOf": [{"type": "string"}, {"type": "integer"}], "title": "x"}
    with pytest.raises(CrdGenerationError, match="union"):
        structural(node, {}, ".spec.field")


def test_an_unknown_keyword_is_refused() -> None:
    with pytest.raises(CrdGenerationError, match="exclusiveMinimum"):
        structural({"type": "integer", "exclusiveMinimum": 0}, {}, ".spec.count")


def test_generated_yaml_is_plain() -> None:
    """No YAML anchors or aliases: every CRD reads on its own."""
    for text in crd_files().values():
        assert "&id" not in text and "*id" not in text
        assert yaml.safe_load(text.split("---\n", 1)[1])["kind"] == "CustomResourceDefinition"


def test_crds_command_prints_yaml_or_json_without_a_folder() -> None:
    done = subprocess.run([str(DELTAROLL), "crds"], capture_output=True, text=True, check=True)
    assert done.stdout == "".join(crd_files().values())
    done = subprocess.run(
        [str(DELTAROLL), "crds", "--json"], capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout) == {"crds": crd_files()}
