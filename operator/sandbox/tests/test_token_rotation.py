"""The sandbox's kubelet replaces a pod's projected ServiceAccount token as a cluster's kubelet
does (at 80 % of its lifetime), so a container that keeps its first token fails here too."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from deltaroll_sandbox.apiserver.tokens import TokenIssuer
from deltaroll_sandbox.kubelet import volumes

LIFETIME = datetime.timedelta(seconds=3600)


def _pod() -> dict[str, Any]:
    token = {"path": "token", "expirationSeconds": int(LIFETIME.total_seconds())}
    return {
        "metadata": {"name": "agent-pod", "namespace": "ns", "uid": "pod-uid"},
        "spec": {
            "serviceAccountName": "agent",
            "volumes": [
                {"name": "token", "projected": {"sources": [{"serviceAccountToken": token}]}}
            ],
        },
    }


def _authenticated(issuer: TokenIssuer, token: str) -> bool:
    return bool(issuer.review({"spec": {"token": token}})["status"]["authenticated"])


def test_a_projected_token_is_replaced_once_it_is_80_percent_through_its_life(
    tmp_path: Path,
) -> None:
    pod = _pod()
    objects = {
        ("serviceaccounts", "ns", "agent"): {"metadata": {"name": "agent", "uid": "sa-uid"}},
        ("pods", "ns", "agent-pod"): pod,
    }
    issuer = TokenIssuer(lambda kind, namespace, name: objects.get((kind, namespace, name)))
    prepared = volumes.prepare(pod, tmp_path / "pod", None, tmp_path, objects.get, issuer)  # type: ignore[arg-type]
    file = prepared.folders["token"] / "token"
    first = file.read_text()
    [token] = prepared.tokens
    life = token.expires - token.issued
    assert abs(life - LIFETIME) < datetime.timedelta(seconds=1)

    assert volumes.rotate_tokens(prepared, pod, issuer, token.issued + life * 0.79) == 0
    assert file.read_text() == first
    assert volumes.rotate_tokens(prepared, pod, issuer, token.issued + life * 0.8) == 1
    second = file.read_text()
    assert second != first and _authenticated(issuer, second)
    assert _authenticated(issuer, first)  # still valid until it expires, as on a cluster
    [renewed] = prepared.tokens
    assert renewed.issued >= token.issued and not renewed.due(renewed.issued)
