"""Helpers of the sandbox's conformance suite: small manifests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MANIFESTS = Path(__file__).parent / "manifests"
WIDGETS = ("sandbox.deltaroll.dev", "v1", "widgets")


def widget(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "sandbox.deltaroll.dev/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": spec,
    }


def pod_manifest(name: str, code: str, **spec: Any) -> dict[str, Any]:
    """A pod whose one container runs ``python -c code``."""
    container = {"name": "main", "image": "ignored", "command": ["python", "-c", code]}
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, **spec.pop("metadata", {})},
        "spec": {"restartPolicy": "Never", "containers": [container], **spec},
    }
