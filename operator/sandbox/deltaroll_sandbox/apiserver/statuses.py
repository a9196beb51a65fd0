"""Kubernetes API errors, rendered as ``Status`` objects with the codes a real server uses.

They derive from kmock's :class:`kmock.KubernetesError`, so kmock renders them; the helpers
below spell the messages the way kube-apiserver does, because clients (kubectl, Kopf, the
official client) show them to people.
"""

from __future__ import annotations

from typing import Any

import attrs
from kmock import KubernetesError


@attrs.frozen
class ApiError(KubernetesError):
    """An API error with a Kubernetes ``reason`` (``NotFound``, ``Conflict``, ``Invalid``...)."""

    def as_status(self) -> dict[str, Any]:
        """The ``Status`` object, as a real server sends it (also inside watch ``ERROR`` events)."""
        return {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details or {},
            "code": self.status,
        }


def _about(
    status: int, reason: str, message: str, kind: str, name: str, group: str, **details: Any
) -> ApiError:
    return ApiError(
        status=status,
        reason=reason,
        message=message,
        details={"name": name, "group": group, "kind": kind, **details},
    )


def _named(kind: str, name: str, group: str) -> str:
    """How kube-apiserver names an object in messages: ``widgets.example.com "w1"``."""
    return f'{kind}.{group} "{name}"' if group else f'{kind} "{name}"'


def not_found(kind_plural: str, name: str, group: str = "") -> ApiError:
    message = f"{_named(kind_plural, name, group)} not found"
    return _about(404, "NotFound", message, kind_plural, name, group)


def already_exists(kind_plural: str, name: str, group: str = "") -> ApiError:
    message = f"{_named(kind_plural, name, group)} already exists"
    return _about(409, "AlreadyExists", message, kind_plural, name, group)


def conflict(kind_plural: str, name: str, group: str = "") -> ApiError:
    message = (
        f"Operation cannot be fulfilled on {_named(kind_plural, name, group)}: the object has "
        "been modified; please apply your changes to the latest version and try again"
    )
    return _about(409, "Conflict", message, kind_plural, name, group)


def forbidden(kind_plural: str, name: str, reason: str, group: str = "") -> ApiError:
    """403, as an admission plugin refuses a request: ``pods "p" is forbidden: <reason>``."""
    message = f"{_named(kind_plural, name, group)} is forbidden: {reason}"
    return _about(403, "Forbidden", message, kind_plural, name, group)


def invalid(kind: str, name: str, causes: list[tuple[str, str]], group: str = "") -> ApiError:
    """422 with one cause per (field path, message), as ``kubectl`` prints them."""
    text = "; ".join(f"{field}: {message}" if field else message for field, message in causes)
    return _about(
        422,
        "Invalid",
        f"{_named(kind, name, group)} is invalid: {text}",
        kind,
        name,
        group,
        causes=[
            {"reason": "FieldValueInvalid", "message": message, "field": field}
            for field, message in causes
        ],
    )


def bad_request(message: str) -> ApiError:
    return ApiError(status=400, reason="BadRequest", message=message, details={})


def gone(message: str) -> ApiError:
    return ApiError(status=410, reason="Expired", message=message, details={})


def method_not_allowed(message: str) -> ApiError:
    return ApiError(status=405, reason="MethodNotAllowed", message=message, details={})


def unsupported_media_type(message: str) -> ApiError:
    return ApiError(status=415, reason="UnsupportedMediaType", message=message, details={})


def unprocessable(message: str) -> ApiError:
    """422 for a patch that cannot apply (e.g. a failed JSON-patch ``test`` op)."""
    return ApiError(status=422, reason="Invalid", message=message, details={})
