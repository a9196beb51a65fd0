"""ServiceAccount tokens, as kube-apiserver's TokenRequest issues and authenticates them.

``POST /api/v1/namespaces/<ns>/serviceaccounts/<name>/token`` (``authentication.k8s.io/v1``
TokenRequest) and the kubelet's projected ``serviceAccountToken`` volumes get a token here. A
token bound to a pod (``spec.boundObjectRef``) authenticates as its ServiceAccount with the pod
in ``extra`` (``authentication.kubernetes.io/pod-name`` and ``pod-uid``, kube-apiserver's
ServiceAccountTokenPodNodeInfo, with the pod's node as ``node-name``), and only while that pod
(same uid) and the ServiceAccount exist and the token has not expired; its audiences must include
the API server's. ``POST /apis/authentication.k8s.io/v1/tokenreviews`` (TokenReview) lets a
component holding ``create`` on ``tokenreviews`` check a token for its own audiences, as an
authenticating webhook or a node daemon does; a token issued for another audience only is no
key to the API. The tokens are random (the sandbox signs no JWTs): only what a client can observe
matters here.
"""

from __future__ import annotations

import datetime
import secrets
from dataclasses import dataclass
from typing import Any

from deltaroll_sandbox.apiserver.identity import AUTHENTICATED, UserInfo
from deltaroll_sandbox.apiserver.statuses import ApiError, bad_request

API_AUDIENCE = "https://kubernetes.default.svc.cluster.local"
DEFAULT_EXPIRATION_S = 3600
MIN_EXPIRATION_S = 600  # kube-apiserver refuses shorter tokens
MAX_EXPIRATION_S = 48 * 3600
POD_NAME = "authentication.kubernetes.io/pod-name"
POD_UID = "authentication.kubernetes.io/pod-uid"
NODE_NAME = "authentication.kubernetes.io/node-name"


@dataclass(frozen=True)
class BoundPod:
    name: str
    uid: str


@dataclass(frozen=True)
class IssuedToken:
    namespace: str
    service_account: str
    service_account_uid: str
    audiences: tuple[str, ...]
    expires: datetime.datetime
    pod: BoundPod | None


class TokenIssuer:
    """Every token issued since the sandbox started; ``lookup(kind, ns, name)`` reads objects."""

    def __init__(self, lookup: Any) -> None:
        self._lookup = lookup
        self._tokens: dict[str, IssuedToken] = {}

    def issue(
        self,
        namespace: str,
        service_account: str,
        *,
        audiences: list[str] | None = None,
        expiration_s: int | None = None,
        pod: BoundPod | None = None,
    ) -> tuple[str, datetime.datetime]:
        """A new token; raises the API's errors for an unknown ServiceAccount or pod."""
        account = self._lookup("serviceaccounts", namespace, service_account)
        if account is None:
            raise ApiError(
                status=404,
                reason="NotFound",
                message=f'serviceaccounts "{service_account}" not found',
                details={"name": service_account, "kind": "serviceaccounts"},
            )
        seconds = DEFAULT_EXPIRATION_S if expiration_s is None else int(expiration_s)
        if seconds < MIN_EXPIRATION_S:
            raise bad_request(
                f"spec.expirationSeconds: Invalid value: {seconds}: may not specify a duration "
                "less than 10 minutes"
            )
        if pod is not None:
            found = self._lookup("pods", namespace, pod.name)
            if found is None or (pod.uid and found["metadata"]["uid"] != pod.uid):
                raise bad_request(f'the bound object reference pod "{pod.name}" does not exist')
            pod = BoundPod(pod.name, found["metadata"]["uid"])
        token = secrets.token_urlsafe(32)
        expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(
            seconds=min(seconds, MAX_EXPIRATION_S)
        )
        self._tokens[token] = IssuedToken(
            namespace,
            service_account,
            account["metadata"]["uid"],
            tuple(audiences or [API_AUDIENCE]),
            expires,
            pod,
        )
        return token, expires

    def token_request(self, namespace: str, service_account: str, body: Any) -> dict[str, Any]:
        """Answer a TokenRequest as kube-apiserver does (only Pod bound objects here)."""
        spec = (body or {}).get("spec") or {}
        ref = spec.get("boundObjectRef")
        pod = None
        if ref:
            if ref.get("kind") != "Pod":
                raise bad_request("the sandbox binds tokens to Pods only")
            pod = BoundPod(str(ref.get("name", "")), str(ref.get("uid", "")))
        token, expires = self.issue(
            namespace,
            service_account,
            audiences=spec.get("audiences"),
            expiration_s=spec.get("expirationSeconds"),
            pod=pod,
        )
        issued = self._tokens[token]
        return {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "metadata": {"name": service_account, "namespace": namespace},
            "spec": {
                "audiences": list(issued.audiences),
                "expirationSeconds": int((expires - _now()).total_seconds()) + 1,
                "boundObjectRef": ref,
            },
            "status": {"token": token, "expirationTimestamp": expires.strftime(_RFC3339)},
        }

    def review(self, body: Any) -> dict[str, Any]:
        """Answer a TokenReview: who the token is, for the audiences asked (default: the API)."""
        spec = (body or {}).get("spec") or {}
        token = spec.get("token")
        audiences = spec.get("audiences") or [API_AUDIENCE]
        if not isinstance(token, str) or not token:
            raise bad_request("spec.token: Required value")
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise bad_request("spec.audiences must be a list of strings")
        issued = self._tokens.get(token)
        user = self.authenticate(token, tuple(audiences))
        status: dict[str, Any] = {"authenticated": user is not None}
        if user is None:
            status["error"] = "[invalid bearer token, token lookup failed]"
        else:
            assert issued is not None
            status["audiences"] = [a for a in audiences if a in issued.audiences]
            status["user"] = {
                "username": user.username,
                "uid": user.uid,
                "groups": list(user.groups),
                "extra": user.extra,
            }
        return {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "metadata": {"creationTimestamp": None},
            "spec": {"token": token, "audiences": audiences},
            "status": status,
        }

    def authenticate(
        self, token: str, audiences: tuple[str, ...] = (API_AUDIENCE,)
    ) -> UserInfo | None:
        """The user of a valid token for one of ``audiences`` (default: this API server), else
        None (401)."""
        issued = self._tokens.get(token)
        if issued is None or issued.expires <= _now() or not set(audiences) & set(issued.audiences):
            return None
        account = self._lookup("serviceaccounts", issued.namespace, issued.service_account)
        if account is None or account["metadata"]["uid"] != issued.service_account_uid:
            return None
        extra: dict[str, list[str]] = {}
        if issued.pod is not None:
            pod = self._lookup("pods", issued.namespace, issued.pod.name)
            if pod is None or pod["metadata"]["uid"] != issued.pod.uid:
                return None  # the pod it was bound to is gone: so is the token
            extra = {POD_NAME: [issued.pod.name], POD_UID: [issued.pod.uid]}
            if node := pod["spec"].get("nodeName"):
                extra[NODE_NAME] = [node]
        return UserInfo(
            f"system:serviceaccount:{issued.namespace}:{issued.service_account}",
            (
                "system:serviceaccounts",
                f"system:serviceaccounts:{issued.namespace}",
                AUTHENTICATED,
            ),
            issued.service_account_uid,
            extra,
        )


_RFC3339 = "%Y-%m-%dT%H:%M:%SZ"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
