"""Who is asking: a pod, named by its pod-bound ServiceAccount token, checked by the API server.

The node cache daemon and every agent's peer server authenticate their callers the same way:
each bearer token goes to the API server in a TokenReview for the server's own audience (so a
token handed to one of them opens nothing else, and a token meant for the API is refused), and
the namespace, pod and node come from the answer, never from the request. With ``node_name``
a pod on another node is refused (the node cache is for its node's own pods). Answers are
remembered for a short while, by the token's sha256, so a pull of many objects costs one review,
and the requests that arrive while a token is being reviewed wait for that one review (a pull
asks with several threads at once) instead of each sending their own.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Final

import structlog

from deltaroll.api.agent_access import NODE_NAME_EXTRA, POD_NAME_EXTRA, POD_UID_EXTRA

log = structlog.get_logger(__name__)

SERVICE_ACCOUNT_PREFIX: Final = "system:serviceaccount:"
#: How long an answer is remembered, a refusal always at most this long.
REMEMBER_S: Final = 30.0
#: kube-apiserver's and the kubelet's own cache of webhook token reviews keeps an answer this
#: long by default (``--authentication-token-webhook-cache-ttl``, 2 minutes): fit for a server
#: that also checks, on every request, that the vouched-for pod (by UID) still exists. Never
#: past the token's own ``exp``.
REMEMBER_WITH_LIVE_CHECK_S: Final = 120.0
#: One review's longest wait for the API server; the requests waiting on it wait as long.
REVIEW_TIMEOUT_S: Final = 10.0
MAX_REMEMBERED: Final = 4096
_NAMESPACE: Final = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")

#: Sends one TokenReview (the kubernetes client's object) and returns the API's answer.
ReviewCall = Callable[[Any], Any]


@dataclass(frozen=True)
class Requester:
    """A pod the API server vouched for."""

    namespace: str
    pod_name: str
    pod_uid: str


class Refused(Exception):
    """The token names no pod this server serves; the message says why (no secrets)."""


class TokenAuthenticator:
    """Turns bearer tokens for ``audience`` into :class:`Requester` with TokenReview; an
    answer is remembered for ``remember_s``."""

    def __init__(
        self,
        review: ReviewCall,
        audience: str,
        node_name: str | None = None,
        *,
        remember_s: float = REMEMBER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._review = review
        self.audience = audience
        self.node_name = node_name
        self._remember_s, self._clock = remember_s, clock
        self._known: dict[str, tuple[float, Requester | str]] = {}
        self._under_review: dict[str, Future[Requester | str]] = {}
        self._lock = threading.Lock()

    async def requester(self, token: str) -> Requester:
        """:meth:`check` from an event loop (a review is a blocking call to the API)."""
        known = self._remembered(hashlib.sha256(token.encode()).hexdigest())
        if known is not None:
            return _outcome(known)
        return await asyncio.to_thread(self.check, token)

    def check(self, token: str) -> Requester:
        """The pod ``token`` belongs to; :class:`Refused` if none this server serves."""
        key = hashlib.sha256(token.encode()).hexdigest()
        with self._lock:
            known = self._remembered_locked(key)
            if known is not None:
                return _outcome(known)
            review = self._under_review.get(key)
            reviewing = review is None
            if review is None:
                review = self._under_review[key] = Future()
        if not reviewing:  # another request's review of the same token
            try:
                return _outcome(review.result(timeout=REVIEW_TIMEOUT_S))
            except TimeoutError as exc:
                raise Refused("the token's review did not finish in time; try again") from exc
        try:
            known = self._review_token(token)
        except BaseException as exc:
            with self._lock:
                del self._under_review[key]
            review.set_exception(exc)
            raise
        remember_s = self._remember_s if isinstance(known, Requester) else REMEMBER_S
        remember_s = min(remember_s, _seconds_left(token))
        with self._lock:  # remembered as it stops being under review: no second review
            del self._under_review[key]
            now = self._clock()
            if len(self._known) >= MAX_REMEMBERED:
                self._known = {k: v for k, v in self._known.items() if v[0] >= now}
                for oldest in list(self._known)[: len(self._known) - MAX_REMEMBERED + 1]:
                    del self._known[oldest]
            self._known[key] = (now + remember_s, known)
        review.set_result(known)
        return _outcome(known)

    def _remembered(self, key: str) -> Requester | str | None:
        with self._lock:
            return self._remembered_locked(key)

    def _remembered_locked(self, key: str) -> Requester | str | None:
        known = self._known.get(key)
        return None if known is None or known[0] < self._clock() else known[1]

    def _review_token(self, token: str) -> Requester | str:
        import kubernetes
        from urllib3.exceptions import HTTPError

        body = kubernetes.client.V1TokenReview(
            spec=kubernetes.client.V1TokenReviewSpec(token=token, audiences=[self.audience])
        )
        try:
            status = self._review(body).status
        except kubernetes.client.ApiException as exc:
            log.warning(
                "pod_tokens.review_failed",
                status=exc.status,
                reason=exc.reason,
                hint="the ServiceAccount needs create on tokenreviews (authentication.k8s.io)",
            )
            raise Refused("the token could not be reviewed; try again") from exc
        except (HTTPError, OSError) as exc:
            log.warning("pod_tokens.review_failed", error=type(exc).__name__)
            raise Refused("the token could not be reviewed; try again") from exc
        if not status or not status.authenticated or self.audience not in (status.audiences or []):
            return f"the token is not valid for the {self.audience} audience"
        user = status.user
        extra = (user.extra or {}) if user else {}
        username = (user.username or "") if user else ""
        if not username.startswith(SERVICE_ACCOUNT_PREFIX) or not extra.get(POD_UID_EXTRA):
            return "the token is not a pod-bound ServiceAccount token"
        node = (extra.get(NODE_NAME_EXTRA) or [""])[0]
        if self.node_name is not None and node != self.node_name:
            return f"the token's pod runs on node {node or '(unknown)'}, not {self.node_name}"
        namespace = username[len(SERVICE_ACCOUNT_PREFIX) :].split(":", 1)[0]
        if not _NAMESPACE.fullmatch(namespace):  # it names folders of the node cache
            return "the token's namespace is not a valid namespace name"
        return Requester(namespace, (extra.get(POD_NAME_EXTRA) or [""])[0], extra[POD_UID_EXTRA][0])


def _seconds_left(token: str) -> float:
    """Until the token's ``exp`` claim (read, not verified: the API server vouched for the
    token; this only keeps the answer from outliving it); infinite without one."""
    parts = token.split(".")
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        expires = claims["exp"]
    except (IndexError, ValueError, TypeError, KeyError):  # not a JWT, or no expiry in it
        return math.inf
    if not isinstance(expires, int | float) or isinstance(expires, bool):
        return math.inf
    return max(0.0, expires - time.time())


def _outcome(known: Requester | str) -> Requester:
    if isinstance(known, str):
        raise Refused(known)
    return known


def bearer_token(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None for anything else."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def token_review_call(service_account_dir: Any) -> ReviewCall:
    """``create_token_review`` with this process's own ServiceAccount (RBAC: create
    tokenreviews)."""
    import kubernetes

    from deltaroll.agent.report import core_v1_api

    api = kubernetes.client.AuthenticationV1Api(core_v1_api(service_account_dir).api_client)
    return functools.partial(api.create_token_review, _request_timeout=REVIEW_TIMEOUT_S)
