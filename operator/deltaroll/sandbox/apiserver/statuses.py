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


def not_found(kind_plural: str, name: str, group: str = "") -> ApiError:
    qualified = f"{kind_plural}.{group}" if group else kind_plural
    return ApiError(
        status=404,
        reason="NotFound",
        message=f'{qualified} "{name}" not found',
        details={"name": name, "group": group, "kind": kind_plural},
    )


def already_exists(kind_plural: str, name: str, group: str = "") -> ApiError:
    qualified = f"{kind_plural}.{group}" if group else kind_plural
    return ApiError(
        status=409,
        reason="AlreadyExists",
        message=f'{qualified} "{name}" already exists',
        details={"name": name, "group": group, "kind": kind_plural},
    )


def conflict(kind_plural: str, name: str, group: str = "") -> ApiError:
    qualified = f"{kind_plural}.{group}" if group else kind_plural
    return ApiError(
        status=409,
        reason="Conflict",
        message=(
            f'Operation cannot be fulfilled on {qualified} "{name}": the object has been '
            "modified; please apply your changes to the latest version and try again"
        ),
        details={"name": name, "group": group, "kind": kind_plural},
    )


def invalid(kind: str, name: str, causes: list[tuple[str, str]], group: str = "") -> ApiError:
    """422 with one cause per (field path, message), as ``kubectl`` prints them."""
    qualified = f"{kind}.{group}" if group else kind
    text = "; ".join(f"{field}: {message}" if field else message for field, message in causes)
    return ApiError(
        status=422,
        reason="Invalid",
        message=f'{qualified} "{name}" is invalid: {text}',
        details={
            "name": name,
            "group": group,
            "kind": kind,
            "causes": [
                {"reason": "FieldValueInvalid", "message": message, "field": field}
                for field, message in causes
            ],
        },
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
