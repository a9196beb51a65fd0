"""The agent reads its projected ServiceAccount token again as the kubelet rotates it: its API
client (the Kubernetes client's in-cluster loader) re-reads the file once the token it holds is
a minute old, so a pod outliving its first token keeps reporting."""

from __future__ import annotations

import datetime
import types
from pathlib import Path

import pytest

from deltaroll.agent.report import core_v1_api


def test_the_agents_api_client_uses_the_token_file_as_it_is_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubernetes.config import incluster_config

    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    (tmp_path / "token").write_text("first-token")
    (tmp_path / "ca.crt").write_text("not read before a request is sent")
    configuration = core_v1_api(tmp_path).api_client.configuration
    assert configuration.get_api_key_with_prefix("BearerToken") == "bearer first-token"

    (tmp_path / "token").write_text("rotated-token")  # the kubelet's new token
    later = datetime.datetime.now() + datetime.timedelta(minutes=2)
    clock = type("Clock", (datetime.datetime,), {"now": classmethod(lambda cls, tz=None: later)})
    monkeypatch.setattr(
        incluster_config,
        "datetime",
        types.SimpleNamespace(datetime=clock, timedelta=datetime.timedelta),
    )
    assert configuration.get_api_key_with_prefix("BearerToken") == "bearer rotated-token"
