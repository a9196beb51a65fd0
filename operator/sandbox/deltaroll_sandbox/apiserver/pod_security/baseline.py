"""The baseline checks of the Pod Security Standards (k8s.io/pod-security-admission/policy,
``check_*.go`` at level baseline): what even a permissive namespace refuses.
"""

from __future__ import annotations

from typing import Any, Final

from deltaroll_sandbox.apiserver.pod_security.fields import (
    CheckFn,
    Obj,
    containers,
    go_quote,
    named_containers,
    offenders,
    plural,
    profile_type,
    quote_all,
    security_context,
)

#: The seccomp and AppArmor profile types baseline allows (never Unconfined).
_PROFILE_TYPES: Final = ("RuntimeDefault", "Localhost")


def app_armor(meta: Obj, spec: Obj) -> tuple[str, str] | None:
    setters, _, value_list = offenders(
        spec, profile_type("appArmorProfile"), lambda t: t not in _PROFILE_TYPES
    )
    annotations = sorted(
        f"{key}={go_quote(value)}"
        for key, value in (meta.get("annotations") or {}).items()
        if key.startswith("container.apparmor.security.beta.kubernetes.io/")
        and not (value in ("", "runtime/default") or str(value).startswith("localhost/"))
    )
    if annotations:
        value_list += annotations
        setters.append(plural("annotation", "annotations", len(annotations)))
    if not setters:
        return None
    return (
        plural("forbidden AppArmor profile", "forbidden AppArmor profiles", len(value_list)),
        f"{' and '.join(setters)} must not set AppArmor profile type to {quote_all(value_list)}",
    )


_DEFAULT_CAPABILITIES: Final = frozenset((
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
))  # fmt: skip


def capabilities_baseline(meta: Obj, spec: Obj) -> tuple[str, str] | None:
    bad, added = [], set()
    for container in containers(spec):
        capabilities = security_context(container).get("capabilities")
        if not isinstance(capabilities, dict):
            continue
        extra = [c for c in capabilities.get("add") or [] if c not in _DEFAULT_CAPABILITIES]
        if extra:
            bad.append(container.get("name", ""))
            added.update(extra)
    if not bad:
        return None
    return (
        "non-default capabilities",
        f"{named_containers(bad)} must not include {quote_all(sorted(added))} "
        "in securityContext.capabilities.add",
    )


def host_namespaces(meta: Obj, spec: Obj) -> tuple[str, str] | None:
    found = [f"{f}=true" for f in ("hostNetwork", "hostPID", "hostIPC") if spec.get(f) is True]
    return ("host namespaces", ", ".join(found)) if found else None


def host_path_volumes(meta: Obj, spec: Obj) -> tuple[str, str] | None:
    bad = [v.get("name", "") for v in spec.get("volumes") or [] if v.get("hostPath") is not None]
    if not bad:
        return None
    return "hostPath volumes", f"{plural('volume', 'volumes', len(bad))} {quote_all(bad)}"


def host_ports(meta: Obj, spec: Obj) -> tuple[str, str] | None:
    bad, ports = [], set[str]()
    for container in containers(spec):
        used = [p["hostPort"] for p in container.get("ports") or [] if p.get("hostPort")]
        if used:
            bad.append(container.get("name", ""))
            ports.update(str(p) for p in used)
    if not bad:
        return None
    return "hostPort", (
        f"{named_containers(bad)} {plural('uses', 'use', len(bad))} "
        f"{plural('hostPort', 'hostPorts', len(ports))} {', '.join(sorted(ports))}"
    )


def _handler_hosts(handler: Any) -> list[str]:
    if not isinstance(handler, dict):
        return []
    return [
        str(action["host"])
        for action in (handler.get("httpGet"), handler.get("tcpSocket"))
        if isinstance(action, dict) and action.get("host")
    ]


def host_probes_and_lifecycle(meta: Obj, spec: Obj) -> tuple[str, str] | None:
    bad, hosts = set(), set()
    for container in containers(spec):
        lifecycle = container.get("lifecycle") or {}
        handlers = [container.get(p) for p in ("livenessProbe", "readinessProbe", "startupProbe")]
        handlers += [lifecycle.get("postStart"), lifecycle.get("preStop")]
        for handler in handlers:
            found = _handler_hosts(handler)
            if found:
                bad.add(container.get("name", ""))
                hosts.update(found)
    if not bad:
        return None
    return "probe or lifecycle host", (
        f"{named_containers(sorted(bad))} {plural('uses', 'use', len(bad))} "
        f"{plural('probe or lifecycle host', 'probe or lifecycle hosts', len(hosts))} "
        f"{quote_all(sorted(hosts))}"
    )


def privileged(meta: Obj, spec: Obj) -> tuple[str, str] | None:
    bad = [
        c.get("name", "") for c in containers(spec) if security_context(c).get("privileged") is True
    ]
    if not bad:
        return None
    return "privileged", f"{named_containers(bad)} must not set securityContext.privileged=true"


def proc_mount(meta: Obj, spec: Obj) -> tuple[str, str] | None:
    bad, kinds = [], set()
    for container in containers(spec):
        mount = security_context(container).get("procMount")
        if mount is not None and mount != "Default":
            bad.append(container.get("name", ""))
            kinds.add(str(mount))
    if not bad:
        return None
    return "procMount", (
        f"{named_containers(bad)} must not set securityContext.procMount to "
        f"{quote_all(sorted(kinds))}"
    )


def se_linux(allowed_types: frozenset[str]) -> CheckFn:
    def check(meta: Obj, spec: Obj) -> tuple[str, str] | None:
        bad_types: set[str] = set()
        user = role = False

        def valid(options: Any) -> bool:
            nonlocal user, role
            if not isinstance(options, dict):
                return True
            ok = True
            if options.get("type", "") not in allowed_types:
                ok = False
                bad_types.add(str(options.get("type")))
            if options.get("user"):
                ok, user = False, True
            if options.get("role"):
                ok, role = False, True
            return ok

        setters = [] if valid(security_context(spec).get("seLinuxOptions")) else ["pod"]
        bad = [
            c.get("name", "")
            for c in containers(spec)
            if not valid(security_context(c).get("seLinuxOptions"))
        ]
        if bad:
            setters.append(named_containers(bad))
        if not setters:
            return None
        data = []
        if bad_types:
            data.append(f"{plural('type', 'types', len(bad_types))} {quote_all(sorted(bad_types))}")
        if user:
            data.append("user may not be set")
        if role:
            data.append("role may not be set")
        return "seLinuxOptions", (
            f"{' and '.join(setters)} set forbidden securityContext.seLinuxOptions: "
            f"{'; '.join(data)}"
        )

    return check


_SECCOMP_POD_ANNOTATION: Final = "seccomp.security.alpha.kubernetes.io/pod"
_SECCOMP_CONTAINER_ANNOTATION: Final = "container.seccomp.security.alpha.kubernetes.io/"


def seccomp_annotations(meta: Obj, spec: Obj) -> tuple[str, str] | None:
    """Before v1.19: the (since removed) seccomp annotations."""
    annotations = meta.get("annotations") or {}
    keys = [_SECCOMP_POD_ANNOTATION]
    keys += [_SECCOMP_CONTAINER_ANNOTATION + c.get("name", "") for c in containers(spec)]
    forbidden = {
        f"{key}={go_quote(annotations[key])}"
        for key in keys
        if key in annotations
        and not (
            annotations[key] in ("runtime/default", "docker/default")
            or str(annotations[key]).startswith("localhost/")
        )
    }
    if not forbidden:
        return None
    return "seccompProfile", (
        f"forbidden {plural('annotation', 'annotations', len(forbidden))} "
        f"{', '.join(sorted(forbidden))}"
    )


def seccomp_profile(required: bool) -> CheckFn:
    """The seccompProfile fields: never Unconfined; with ``required`` (restricted), set on the
    pod or on every container."""

    def check(meta: Obj, spec: Obj) -> tuple[str, str] | None:
        read = profile_type("seccompProfile")
        setters, unset, values = offenders(spec, read, lambda t: t not in _PROFILE_TYPES)
        if setters:
            return "seccompProfile", (
                f"{' and '.join(setters)} must not set securityContext.seccompProfile.type to "
                f"{quote_all(values)}"
            )
        if required and unset and read(security_context(spec)) is None:
            return "seccompProfile", (
                f"pod or {named_containers(unset)} must set securityContext.seccompProfile.type "
                'to "RuntimeDefault" or "Localhost"'
            )
        return None

    return check


SAFE_SYSCTLS_1_0: Final = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_unprivileged_port_start",
    }
)
SAFE_SYSCTLS_1_27: Final = SAFE_SYSCTLS_1_0 | {"net.ipv4.ip_local_reserved_ports"}
SAFE_SYSCTLS_1_29: Final = SAFE_SYSCTLS_1_27 | {
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
SAFE_SYSCTLS_1_32: Final = SAFE_SYSCTLS_1_29 | {"net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"}


def sysctls(allowed: frozenset[str]) -> CheckFn:
    def check(meta: Obj, spec: Obj) -> tuple[str, str] | None:
        found = [
            str(s.get("name"))
            for s in security_context(spec).get("sysctls") or []
            if s.get("name") not in allowed
        ]
        return ("forbidden sysctls", ", ".join(found)) if found else None

    return check


def host_process(meta: Obj, spec: Obj) -> tuple[str, str] | None:
    setters, _, _ = offenders(
        spec, lambda c: (c.get("windowsOptions") or {}).get("hostProcess"), lambda v: v is True
    )
    if not setters:
        return None
    return "hostProcess", (
        f"{' and '.join(setters)} must not set securityContext.windowsOptions.hostProcess=true"
    )
