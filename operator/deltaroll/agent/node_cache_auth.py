"""Who is asking the node cache: a pod, named by its pod-bound ServiceAccount token.

The daemon sends each bearer token to the API server in a TokenReview for the node cache's own
audience (so the token an agent hands the daemon opens nothing else, and a token meant for the
API is refused here) and takes the namespace, the pod and its node from the answer, never from
the request. A pod on another node is refused: the cache is for the node's own pods. Answers are
remembered for a short while, by the token's sha256, so a pull of many objects costs one review.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import structlog

from deltaroll.api.agent_access import NODE_NAME_EXTRA, POD_NAME_EXTRA, POD_UID_EXTRA
from deltaroll.api.node_cache import AUDIENCE

log = structlog.get_logger(__name__)

SERVICE_ACCOUNT_PREFIX: Final = "system:serviceaccount:"
REMEMBER_S: Final = 30.0
MAX_REMEMBERED: Final = 4096

#: Sends one TokenReview (the kubernetes client's object) and returns the API's answer.
ReviewCall = Callable[[Any], Any]


@dataclass(frozen=True)
class Requester:
    """A pod the API server vouched for."""

    namespace: str
    pod_name: str
    pod_uid: str


class Refused(Exception):
    """The token names no pod this node's cache serves; the message says why (no secrets)."""


class TokenAuthenticator:
    """Turns bearer tokens into :class:`Requester` with TokenReview, for one node."""

    def __init__(self, review: ReviewCall, node_name: str) -> None:
        self._review = review
        self.node_name = node_name
        self._known: dict[str, tuple[float, Requester | str]] = {}

    async def requester(self, token: str) -> Requester:
        """The pod ``token`` belongs to; :class:`Refused` if none this cache serves."""
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        known = self._known.get(key)
        if known is None or known[0] < now:
            outcome = await asyncio.to_thread(self._check, token)
            if len(self._known) >= MAX_REMEMBERED:
                self._known = {k: v for k, v in self._known.items() if v[0] >= now}
            self._known[key] = known = (now + REMEMBER_S, outcome)
        if isinstance(known[1], str):
            raise Refused(known[1])
        return known[1]

    def _check(self, token: str) -> Requester | str:
        import kubernetes

        body = kubernetes.client.V1TokenReview(
            spec=kubernetes.client.V1TokenReviewSpec(token=token, audiences=[AUDIENCE])
        )
        try:
            status = self._review(body).status
        except kubernetes.client.ApiException as exc:
            log.warning("node_cache.token_review_failed", status=exc.status, reason=exc.reason)
            raise Refused("the token could not be reviewed; try again") from exc
        if not status or not status.authenticated or AUDIENCE not in (status.audiences or []):
            return f"the token is not valid for the {AUDIENCE} audience"
        user = status.user
        extra = (user.extra or {}) if user else {}
        username = (user.username or "") if user else ""
        if not username.startswith(SERVICE_ACCOUNT_PREFIX) or not extra.get(POD_UID_EXTRA):
            return "the token is not a pod-bound ServiceAccount token"
        node = (extra.get(NODE_NAME_EXTRA) or [""])[0]
        if node != self.node_name:
            return f"the token's pod runs on node {node or '(unknown)'}, not {self.node_name}"
        namespace = username[len(SERVICE_ACCOUNT_PREFIX) :].split(":", 1)[0]
        return Requester(namespace, (extra.get(POD_NAME_EXTRA) or [""])[0], extra[POD_UID_EXTRA][0])


def token_review_call(service_account_dir: Any) -> ReviewCall:
    """``create_token_review`` with the daemon's own ServiceAccount (RBAC: create tokenreviews)."""
    import kubernetes

    from deltaroll.agent.report import core_v1_api

    api = kubernetes.client.AuthenticationV1Api(core_v1_api(service_account_dir).api_client)
    return api.create_token_review
