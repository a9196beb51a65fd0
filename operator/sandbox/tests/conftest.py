"""Fixtures for the sandbox's conformance suite: a running sandbox, clients, a test CRD."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest
import requests
import yaml
from sandbox_helpers import MANIFESTS

from deltaroll_sandbox import kubeconfig
from deltaroll_sandbox.pytest_fixtures import sandbox  # noqa: F401 - the fixture itself
from deltaroll_sandbox.testing import RunningSandbox


@pytest.fixture
def api(sandbox: RunningSandbox) -> Iterator[kubernetes.client.ApiClient]:  # noqa: F811
    client = sandbox.api_client()
    yield client
    client.close()


@pytest.fixture
def core(api: kubernetes.client.ApiClient) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api)


@pytest.fixture
def custom(api: kubernetes.client.ApiClient) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(api)


@pytest.fixture
def batch(api: kubernetes.client.ApiClient) -> kubernetes.client.BatchV1Api:
    return kubernetes.client.BatchV1Api(api)


@pytest.fixture
def http(sandbox: RunningSandbox) -> Iterator[Callable[..., requests.Response]]:  # noqa: F811
    """Raw HTTPS requests to the sandbox, verified against its CA: ``http("GET", "/api")``, as
    the admin unless ``token=`` says whom (``token=None``: anonymous)."""
    session = requests.Session()
    ca = str(sandbox.directory / "pki" / "ca.crt")

    def call(
        method: str, path: str, token: str | None = kubeconfig.TOKEN, **kwargs: Any
    ) -> requests.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        if token is not None:
            headers.setdefault("Authorization", f"Bearer {token}")
        # verify per request: a session's verify loses to $REQUESTS_CA_BUNDLE.
        return session.request(
            method, sandbox.api_url + path, timeout=30, verify=ca, headers=headers, **kwargs
        )

    yield call
    session.close()


@pytest.fixture
def widgets_crd(api: kubernetes.client.ApiClient) -> dict[str, Any]:
    """The test CRD, created and established."""
    crd = yaml.safe_load((MANIFESTS / "widgets-crd.yaml").read_text())
    ext = kubernetes.client.ApiextensionsV1Api(api)
    ext.create_custom_resource_definition(crd)
    return crd
