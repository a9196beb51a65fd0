"""pytest fixtures for tests that need a control plane.

In a ``conftest.py``: ``from deltaroll_sandbox.pytest_fixtures import sandbox  # noqa: F401``
(``pytest_plugins = ["deltaroll_sandbox.pytest_fixtures"]`` works only in a top-level conftest).

``sandbox`` gives each test its own :class:`~deltaroll_sandbox.testing.RunningSandbox` in the
test's ``tmp_path`` (about a second to start); ``KUBECONFIG`` points at it for the test, and so
does the official client's default (which it reads from the environment once, at import), so
``kubernetes.config.load_kube_config()`` and Kopf's default login find the sandbox.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from deltaroll_sandbox.testing import RunningSandbox, running_sandbox


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningSandbox]:
    import kubernetes.config.kube_config

    with running_sandbox(tmp_path / "sandbox") as running:
        monkeypatch.setenv("KUBECONFIG", str(running.kubeconfig_path))
        monkeypatch.setattr(
            kubernetes.config.kube_config,
            "KUBE_CONFIG_DEFAULT_LOCATION",
            str(running.kubeconfig_path),
        )
        yield running
