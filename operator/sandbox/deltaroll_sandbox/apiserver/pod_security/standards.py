"""The Pod Security Standards (baseline and restricted), as k8s.io/pod-security-admission's
``policy`` package checks them: the same checks, each with the versions it changed in, the same
order (baseline checks, then restricted ones, each sorted by id), restricted checks replacing the
baseline checks they override, and the same reasons and details, word for word, because people
read them in ``kubectl`` errors and Job events. Pure: a pod's metadata and spec in, failures out.

The sandbox emulates Kubernetes 1.36, so ``latest`` (and any newer version) means v1.36.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from deltaroll_sandbox.apiserver.discovery import EMULATED_MINOR
from deltaroll_sandbox.apiserver.pod_security.baseline import (
    SAFE_SYSCTLS_1_0,
    SAFE_SYSCTLS_1_27,
    SAFE_SYSCTLS_1_29,
    SAFE_SYSCTLS_1_32,
    app_armor,
    capabilities_baseline,
    host_namespaces,
    host_path_volumes,
    host_ports,
    host_probes_and_lifecycle,
    host_process,
    privileged,
    proc_mount,
    se_linux,
    seccomp_annotations,
    seccomp_profile,
    sysctls,
)
from deltaroll_sandbox.apiserver.pod_security.fields import (
    CheckFn,
    Obj,
    unless,
    user_namespaced,
    windows,
)
from deltaroll_sandbox.apiserver.pod_security.restricted import (
    capabilities_restricted,
    privilege_escalation,
    restricted_volumes,
    run_as_non_root,
    run_as_user,
)

PRIVILEGED, BASELINE, RESTRICTED = "privileged", "baseline", "restricted"
LEVELS: Final = (PRIVILEGED, BASELINE, RESTRICTED)


@dataclass(frozen=True)
class LevelVersion:
    """A level at a version of the standards (``minor`` None: latest)."""

    level: str
    minor: int | None = None

    def __str__(self) -> str:
        return f"{self.level}:{'latest' if self.minor is None else f'v1.{self.minor}'}"


@dataclass(frozen=True)
class Failure:
    reason: str
    detail: str


def describe(failures: list[Failure]) -> str:
    """``reason (detail), reason (detail)``: the aggregate kube-apiserver prints."""
    return ", ".join(f"{f.reason} ({f.detail})" if f.detail else f.reason for f in failures)


@dataclass(frozen=True)
class Versioned:
    """A check's behaviour from ``since`` (a 1.x minor) on, until the next one takes over."""

    since: int
    check: CheckFn
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Check:
    id: str
    level: str
    versions: tuple[Versioned, ...]

    def at(self, minor: int) -> Versioned | None:
        return next((v for v in reversed(self.versions) if v.since <= minor), None)


SELINUX_TYPES_1_0: Final = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})

CHECKS: Final = (
    Check("appArmorProfile", BASELINE, (Versioned(0, app_armor),)),
    Check("capabilities_baseline", BASELINE, (Versioned(0, capabilities_baseline),)),
    Check("hostNamespaces", BASELINE, (Versioned(0, host_namespaces),)),
    Check("hostPathVolumes", BASELINE, (Versioned(0, host_path_volumes),)),
    Check("hostPorts", BASELINE, (Versioned(0, host_ports),)),
    Check("hostProbesAndHostLifecycle", BASELINE, (Versioned(34, host_probes_and_lifecycle),)),
    Check("privileged", BASELINE, (Versioned(0, privileged),)),
    Check(
        "procMount",
        BASELINE,
        (Versioned(0, proc_mount), Versioned(35, unless(user_namespaced, proc_mount))),
    ),
    Check(
        "seLinuxOptions",
        BASELINE,
        (
            Versioned(0, se_linux(SELINUX_TYPES_1_0)),
            Versioned(31, se_linux(SELINUX_TYPES_1_0 | {"container_engine_t"})),
        ),
    ),
    Check(
        "seccompProfile_baseline",
        BASELINE,
        (Versioned(0, seccomp_annotations), Versioned(19, seccomp_profile(required=False))),
    ),
    Check(
        "sysctls",
        BASELINE,
        (
            Versioned(0, sysctls(SAFE_SYSCTLS_1_0)),
            Versioned(27, sysctls(SAFE_SYSCTLS_1_27)),
            Versioned(29, sysctls(SAFE_SYSCTLS_1_29)),
            Versioned(32, sysctls(SAFE_SYSCTLS_1_32)),
        ),
    ),
    Check("windowsHostProcess", BASELINE, (Versioned(0, host_process),)),
    Check(
        "allowPrivilegeEscalation",
        RESTRICTED,
        (
            Versioned(8, privilege_escalation),
            Versioned(25, unless(windows, privilege_escalation)),
        ),
    ),
    Check(
        "capabilities_restricted",
        RESTRICTED,
        (
            Versioned(22, capabilities_restricted, ("capabilities_baseline",)),
            Versioned(
                25,
                unless(windows, capabilities_restricted),
                ("capabilities_baseline",),
            ),
        ),
    ),
    Check("procMount_restricted", RESTRICTED, (Versioned(35, proc_mount, ("procMount",)),)),
    Check(
        "restrictedVolumes",
        RESTRICTED,
        (Versioned(0, restricted_volumes, ("hostPathVolumes",)),),
    ),
    Check(
        "runAsNonRoot",
        RESTRICTED,
        (
            Versioned(0, run_as_non_root),
            Versioned(35, unless(user_namespaced, run_as_non_root)),
        ),
    ),
    Check(
        "runAsUser",
        RESTRICTED,
        (Versioned(23, run_as_user), Versioned(35, unless(user_namespaced, run_as_user))),
    ),
    Check(
        "seccompProfile_restricted",
        RESTRICTED,
        (
            Versioned(19, seccomp_profile(required=True), ("seccompProfile_baseline",)),
            Versioned(
                25,
                unless(windows, seccomp_profile(required=True)),
                ("seccompProfile_baseline",),
            ),
        ),
    ),
)
# kube-apiserver's order: baseline ids sorted, then restricted ids sorted.
_ORDERED: Final = sorted(CHECKS, key=lambda c: (c.level != BASELINE, c.id))


def evaluate(policy: LevelVersion, metadata: Obj, spec: Obj) -> list[Failure]:
    """What ``policy`` finds wrong with a pod (or a pod template): empty when it passes."""
    if policy.level == PRIVILEGED:
        return []
    minor = EMULATED_MINOR if policy.minor is None else min(policy.minor, EMULATED_MINOR)
    chosen = [
        (check, versioned)
        for check in _ORDERED
        if check.level == BASELINE or policy.level == RESTRICTED
        if (versioned := check.at(minor)) is not None
    ]
    overridden = {o for _, versioned in chosen for o in versioned.overrides}
    failures = []
    for check, versioned in chosen:
        if check.id in overridden:
            continue
        found = versioned.check(metadata or {}, spec or {})
        if found is not None:
            failures.append(Failure(*found))
    return failures
