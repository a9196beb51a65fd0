"""Who sent a request: kube-apiserver's ``user.Info`` and the authentication of bearer tokens.

Three kinds of caller, as on a cluster: the sandbox's admin (the kubeconfig's token, in
``system:masters``: every request allowed, as for a cluster admin), a ServiceAccount holding a
token the sandbox issued (:mod:`deltaroll_sandbox.apiserver.tokens`), and ``system:anonymous``
(no token), which RBAC allows nothing. A token the sandbox does not know is 401 Unauthorized.
The request's user is kept in a context variable for admission (policies read
``request.userInfo``), as ``dry_run`` is for the store.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any

MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"


@dataclass(frozen=True)
class UserInfo:
    """``authentication.k8s.io/v1`` UserInfo: what RBAC and admission policies see."""

    username: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: dict[str, list[str]] = field(default_factory=dict)

    @property
    def is_admin(self) -> bool:
        return MASTERS in self.groups

    def as_cel(self) -> dict[str, Any]:
        return {
            "username": self.username,
            "uid": self.uid,
            "groups": list(self.groups),
            "extra": {key: list(values) for key, values in self.extra.items()},
        }


ADMIN = UserInfo("deltaroll-sandbox-admin", (MASTERS, AUTHENTICATED))
ANONYMOUS = UserInfo("system:anonymous", ("system:unauthenticated",))
CONTROL_PLANE = UserInfo("system:kube-controller-manager", (MASTERS, AUTHENTICATED))
"""The sandbox's own kubelet and controllers, which write to the store directly."""

current_user: contextvars.ContextVar[UserInfo] = contextvars.ContextVar(
    "current_user", default=CONTROL_PLANE
)
