"""ValidatingAdmissionPolicies (admissionregistration.k8s.io/v1), evaluated as kube-apiserver does.

For each ValidatingAdmissionPolicyBinding whose policy exists: the request must match the
policy's ``matchConstraints`` and the binding's ``matchResources`` (resource rules, namespace
and object selectors), then every ``matchConditions`` expression must be true; then the
``variables`` are evaluated in order and each ``validations`` rule must be true. The first
refusal is the request's error, worded as upstream's validating dispatcher words it:
``pods "p" is forbidden: ValidatingAdmissionPolicy 'x' with binding 'y' denied request: <message>``
with the validation's ``reason`` (Invalid, 422, when unset). A CEL error counts as a refusal under
``failurePolicy: Fail`` (the default) and is ignored under ``Ignore``. ``Deny`` is the only
validation action enforced (``Warn`` and ``Audit`` are accepted and do nothing here); ``params``
are not supported. The CEL is cel-cpp's, with the Kubernetes library functions of
:mod:`deltaroll_sandbox.apiserver.cel`.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from typing import Any

from deltaroll_sandbox.apiserver import cel
from deltaroll_sandbox.apiserver.identity import current_user
from deltaroll_sandbox.apiserver.resources import ResourceType
from deltaroll_sandbox.apiserver.selectors import match_labels
from deltaroll_sandbox.apiserver.statuses import ApiError

GROUP = "admissionregistration.k8s.io"
_CODES = {"Unauthorized": 401, "Forbidden": 403, "Invalid": 422, "RequestEntityTooLarge": 413}


@dataclass(frozen=True)
class Request:
    """One write, as admission sees it."""

    rtype: ResourceType
    operation: str  # CREATE, UPDATE, DELETE
    subresource: str
    namespace: str
    name: str
    obj: dict[str, Any] | None
    old: dict[str, Any] | None

    def as_cel(self) -> dict[str, Any]:
        rtype = self.rtype
        kind = {"group": rtype.group, "version": rtype.version, "kind": rtype.kind}
        resource = {"group": rtype.group, "version": rtype.version, "resource": rtype.plural}
        return {
            "uid": str(uuid.uuid4()),
            "kind": kind,
            "resource": resource,
            "subResource": self.subresource,
            "requestKind": kind,
            "requestResource": resource,
            "requestSubResource": self.subresource,
            "name": self.name,
            "namespace": self.namespace,
            "operation": self.operation,
            "userInfo": current_user.get().as_cel(),
            "dryRun": False,
            "options": None,
        }


class PolicyAdmission:
    """Called by the store for every create, update (status too) and delete."""

    def validate(self, store: Any, request: Request) -> None:
        policies = store.registry.lookup(GROUP, "v1", "validatingadmissionpolicies")
        bindings = store.registry.lookup(GROUP, "v1", "validatingadmissionpolicybindings")
        if policies is None or bindings is None or request.rtype.group == GROUP:
            return
        for binding in store.list_objects(bindings, None):
            spec = binding.get("spec") or {}
            policy = store.find(policies, "", spec.get("policyName", ""))
            if policy is None or "Deny" not in (spec.get("validationActions") or []):
                continue
            policy_spec = policy.get("spec") or {}
            if not (
                _in_scope(store, request, policy_spec.get("matchConstraints"), required=True)
                and _in_scope(store, request, spec.get("matchResources"), required=False)
            ):
                continue
            refused = refusal(policy_spec, request)
            if refused is not None:
                message, reason = refused
                raise _denied(request, policy["metadata"]["name"], binding, message, reason)


def refusal(spec: dict[str, Any], request: Request) -> tuple[str, str] | None:
    """(message, reason) of the first refusal, None when the policy admits the request."""
    fail = spec.get("failurePolicy", "Fail") == "Fail"
    context = {"object": request.obj, "oldObject": request.old, "request": request.as_cel()}
    try:
        cel.check_values(context)
    except cel.CelError as exc:
        return (f"failed to evaluate the policy: {exc}", "Invalid") if fail else None
    errors: list[Exception] = []  # upstream: any false condition skips the policy, even when
    for condition in spec.get("matchConditions") or []:  # another one failed to evaluate
        try:
            if not cel.evaluate(condition["expression"], context):
                return None
        except Exception as exc:
            errors.append(exc)
    if errors:
        return (f"failed to evaluate match conditions: {errors[0]}", "Invalid") if fail else None
    variables: dict[str, Any] = {}
    broken: dict[str, Exception] = {}  # upstream evaluates variables lazily: an error is the
    for variable in spec.get("variables") or []:  # error of each expression that reads it
        try:
            found = cel.run(variable["expression"], {**context, "variables": variables})
        except Exception as exc:
            broken[variable["name"]] = exc
            continue
        variables[variable["name"]] = found
    scope = {**context, "variables": variables}
    for rule in spec.get("validations") or []:
        expression = rule["expression"]
        try:
            for name, error in broken.items():
                if f"variables.{name}" in expression:
                    raise error
            admitted = cel.evaluate(expression, scope)
        except Exception as exc:
            if fail:
                return f"expression '{expression}' resulted in error: {exc}", "Invalid"
            continue
        if not admitted:
            return _message(rule, scope), rule.get("reason") or "Invalid"
    return None


def _message(rule: dict[str, Any], scope: dict[str, Any]) -> str:
    if rule.get("messageExpression"):
        with contextlib.suppress(Exception):  # upstream falls back to the static message
            text = cel.run(rule["messageExpression"], scope)
            if isinstance(text, str) and text.strip():  # a string or nothing, as upstream
                return text
    return rule.get("message") or f"failed expression: {rule['expression']}"


def _in_scope(
    store: Any, request: Request, match: dict[str, Any] | None, *, required: bool
) -> bool:
    """``matchConstraints`` (policy: resource rules required) or ``matchResources`` (binding:
    everything the policy matches unless it says more)."""
    if not match:
        return not required
    rules = match.get("resourceRules")
    if (rules is not None or required) and not any(
        _rule_matches(rule, request) for rule in rules or []
    ):
        return False
    if any(_rule_matches(rule, request) for rule in match.get("excludeResourceRules") or []):
        return False
    objects = match.get("objectSelector")
    if objects and not (
        _selects(objects, _labels(request.obj)) or _selects(objects, _labels(request.old))
    ):
        return False
    if request.rtype.namespaced and match.get("namespaceSelector"):
        namespaces = store.registry.lookup("", "v1", "namespaces")
        namespace = store.find(namespaces, "", request.namespace) or {}
        if not _selects(match["namespaceSelector"], _labels(namespace)):
            return False
    return True


def _rule_matches(rule: dict[str, Any], request: Request) -> bool:
    rtype = request.rtype

    def has(values: list[str] | None, wanted: str) -> bool:
        return bool(values) and ("*" in values or wanted in values)  # type: ignore[operator]

    resource = f"{rtype.plural}/{request.subresource}" if request.subresource else rtype.plural
    resources = rule.get("resources") or []
    resource_ok = has(resources, resource) or (
        request.subresource
        and (f"{rtype.plural}/*" in resources or f"*/{request.subresource}" in resources)
    )
    scope = rule.get("scope", "*")
    scope_ok = scope == "*" or (scope == "Namespaced") == rtype.namespaced
    return bool(
        has(rule.get("apiGroups"), rtype.group)
        and has(rule.get("apiVersions"), rtype.version)
        and has(rule.get("operations"), request.operation)
        and resource_ok
        and scope_ok
    )


def _selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    return not selector or match_labels(selector, labels)


def _labels(obj: dict[str, Any] | None) -> dict[str, str]:
    return ((obj or {}).get("metadata") or {}).get("labels") or {}


def _denied(
    request: Request, policy: str, binding: dict[str, Any], message: str, reason: str
) -> ApiError:
    rtype = request.rtype
    text = (
        f"ValidatingAdmissionPolicy '{policy}' with binding '{binding['metadata']['name']}' "
        f"denied request: {message}"
    )
    about = f"{rtype.plural}.{rtype.group}" if rtype.group else rtype.plural
    return ApiError(
        status=_CODES.get(reason, 422),
        reason=reason,
        message=f'{about} "{request.name}" is forbidden: {text}',
        details={
            "name": request.name,
            "group": rtype.group,
            "kind": rtype.plural,
            "causes": [{"message": text}],
        },
    )
