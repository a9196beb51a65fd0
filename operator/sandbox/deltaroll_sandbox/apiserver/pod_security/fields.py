"""Reading a pod as the Go checks read a typed PodSpec (an absent securityContext reads as an
empty one; init, regular and ephemeral containers are all visited), and wording the findings as
kube-apiserver does (``container "a"``, ``containers "a", "b"``, Go's ``%q``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

Obj = dict[str, Any]
#: (metadata, spec) -> (reason, detail) when the pod breaks the check, None when it passes.
CheckFn = Callable[[Obj, Obj], tuple[str, str] | None]


def security_context(item: Any) -> Obj:
    context = item.get("securityContext") if isinstance(item, dict) else None
    return context if isinstance(context, dict) else {}


def containers(spec: Obj) -> Iterator[Obj]:
    """Init containers, containers, ephemeral containers: every check visits all three."""
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(field) or []:
            if isinstance(container, dict):
                yield container


def quote_all(items: list[str]) -> str:
    return '"' + '", "'.join(items) + '"' if items else ""


def plural(one: str, many: str, count: int) -> str:
    return one if count == 1 else many


def named_containers(names: list[str]) -> str:
    return f"{plural('container', 'containers', len(names))} {quote_all(names)}"


class Offenders(NamedTuple):
    setters: list[str]  # as the message names them: "pod", then 'containers "a", "b"'
    unset: list[str]  # containers that leave the field unset
    values: list[str]  # the bad values, sorted


def offenders(spec: Obj, read: Callable[[Obj], Any], bad: Callable[[Any], bool]) -> Offenders:
    """Who sets a securityContext field (``read`` from one) to a ``bad`` value, and who not."""
    value = read(security_context(spec))
    setters = ["pod"] if value is not None and bad(value) else []
    values = {str(value)} if setters else set()
    wrong, unset = [], []
    for container in containers(spec):
        value = read(security_context(container))
        if value is None:
            unset.append(container.get("name", ""))
        elif bad(value):
            wrong.append(container.get("name", ""))
            values.add(str(value))
    if wrong:
        setters.append(named_containers(wrong))
    return Offenders(setters, unset, sorted(values))


def profile_type(field: str) -> Callable[[Obj], Any]:
    """Reads ``<field>.type`` (seccompProfile, appArmorProfile); None when the field is unset."""

    def read(context: Obj) -> Any:
        profile = context.get(field)
        return profile.get("type", "") if isinstance(profile, dict) else None

    return read


def go_quote(value: Any) -> str:
    return json.dumps(str(value), ensure_ascii=False)


def windows(spec: Obj) -> bool:
    """Windows pods cannot set these Linux fields (API validation refuses them): exempt."""
    return (spec.get("os") or {}).get("name") == "windows"


def user_namespaced(spec: Obj) -> bool:
    return spec.get("hostUsers") is False


def unless(skip: Callable[[Obj], bool], check: CheckFn) -> CheckFn:
    """``check``, passing every pod for which ``skip(spec)`` holds (a later version's relief)."""
    return lambda meta, spec: None if skip(spec) else check(meta, spec)
