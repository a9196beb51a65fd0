"""Pod Security admission: the checks word for word as k8s.io/pod-security-admission words them
(cases ported from its ``check_*_test.go``), and the plugin through the API: labelled namespaces
refuse pods (and the Job controller's pods) that break their level; others are unaffected."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes.client import ApiException

from deltaroll_sandbox.apiserver.pod_security.standards import LevelVersion, describe, evaluate
from deltaroll_sandbox.polling import wait_for

RESTRICTED = LevelVersion("restricted")
BASELINE = LevelVersion("baseline")
BARE_VIOLATIONS = (
    'allowPrivilegeEscalation != false (container "a" must set '
    "securityContext.allowPrivilegeEscalation=false), "
    'unrestricted capabilities (container "a" must set securityContext.capabilities.drop=["ALL"]), '
    'runAsNonRoot != true (pod or container "a" must set securityContext.runAsNonRoot=true), '
    'seccompProfile (pod or container "a" must set securityContext.seccompProfile.type to '
    '"RuntimeDefault" or "Localhost")'
)
LOCKED_DOWN = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}
POD_LOCKED_DOWN = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def restricted_spec(**extra: Any) -> dict[str, Any]:
    return {
        "securityContext": copy.deepcopy(POD_LOCKED_DOWN),
        "containers": [{"name": "a", "securityContext": copy.deepcopy(LOCKED_DOWN)}],
        **extra,
    }


def findings(spec: dict[str, Any], policy: LevelVersion = RESTRICTED, **meta: Any) -> str:
    return describe(evaluate(policy, meta, spec))


def test_a_bare_pod_breaks_restricted_in_kube_apiservers_words_and_order() -> None:
    assert findings({"containers": [{"name": "a"}]}) == BARE_VIOLATIONS
    assert findings({"containers": [{"name": "a"}]}, BASELINE) == ""
    assert findings({"containers": [{"name": "a"}]}, LevelVersion("privileged")) == ""


def test_pod_level_settings_cover_every_container_unless_one_overrides_them() -> None:
    assert findings(restricted_spec()) == ""
    spec = restricted_spec()
    spec["initContainers"] = [{"name": "init", "securityContext": copy.deepcopy(LOCKED_DOWN)}]
    spec["ephemeralContainers"] = [{"name": "debug"}]
    spec["containers"][0]["securityContext"] |= {
        "runAsNonRoot": False,
        "seccompProfile": {"type": "Unconfined"},
    }
    assert findings(spec) == (
        'allowPrivilegeEscalation != false (container "debug" must set '
        "securityContext.allowPrivilegeEscalation=false), "
        'unrestricted capabilities (container "debug" must set '
        'securityContext.capabilities.drop=["ALL"]), '
        'runAsNonRoot != true (container "a" must not set securityContext.runAsNonRoot=false), '
        'seccompProfile (container "a" must not set securityContext.seccompProfile.type to '
        '"Unconfined")'
    )


def test_restricted_capabilities_and_volumes_replace_their_baseline_checks() -> None:
    spec = restricted_spec(
        containers=[
            {"name": "a", "securityContext": {"capabilities": {"add": ["FOO", "BAR"]}}},
            {"name": "b", "securityContext": {"capabilities": {"add": ["BAR", "BAZ"]}}},
            {
                "name": "c",
                "securityContext": {
                    "capabilities": {"add": ["NET_BIND_SERVICE", "CHOWN"], "drop": ["ALL", "FOO"]}
                },
            },
        ],
        volumes=[
            {"name": "ok", "emptyDir": {}},
            {"name": "defaulted"},  # no source: the API defaults it to an emptyDir
            {"name": "b1", "hostPath": {"path": "/"}},
            {"name": "b2", "nfs": {"server": "x", "path": "/"}},
            {"name": "c1", "somethingNew": {}},
        ],
    )
    for container in spec["containers"]:
        container["securityContext"]["allowPrivilegeEscalation"] = False
    assert findings(spec) == (
        'unrestricted capabilities (containers "a", "b" must set '
        'securityContext.capabilities.drop=["ALL"]; containers "a", "b", "c" must not include '
        '"BAR", "BAZ", "CHOWN", "FOO" in securityContext.capabilities.add), '
        'restricted volume types (volumes "b1", "b2", "c1" use restricted volume types '
        '"hostPath", "nfs", "unknown")'
    )
    assert findings(spec, BASELINE) == (
        'non-default capabilities (containers "a", "b" must not include "BAR", "BAZ", "FOO" in '
        'securityContext.capabilities.add), hostPath volumes (volume "b1")'
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"hostNetwork": True, "hostPID": True, "hostIPC": False},
            "host namespaces (hostNetwork=true, hostPID=true)",
        ),
        (
            {
                "containers": [
                    {"name": "a", "ports": [{"containerPort": 1, "hostPort": 0}]},
                    {"name": "b", "ports": [{"hostPort": 10}, {"hostPort": 20}]},
                    {"name": "c", "ports": [{"hostPort": 10}, {"hostPort": 30}]},
                ]
            },
            'hostPort (containers "b", "c" use hostPorts 10, 20, 30)',
        ),
        (
            {"containers": [{"name": "a", "securityContext": {"privileged": True}}]},
            'privileged (container "a" must not set securityContext.privileged=true)',
        ),
        (
            {"containers": [{"name": "a", "securityContext": {"procMount": "Unmasked"}}]},
            'procMount (container "a" must not set securityContext.procMount to "Unmasked")',
        ),
        (
            {
                "containers": [
                    {"name": "a", "livenessProbe": {"httpGet": {"host": "10.0.0.1", "port": 80}}}
                ]
            },
            'probe or lifecycle host (container "a" uses probe or lifecycle host "10.0.0.1")',
        ),
        (
            {"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}},
            "forbidden sysctls (kernel.msgmax)",
        ),
        (
            {"securityContext": {"seLinuxOptions": {"type": "spc_t", "user": "root"}}},
            'seLinuxOptions (pod set forbidden securityContext.seLinuxOptions: type "spc_t"; '
            "user may not be set)",
        ),
        (
            {"securityContext": {"appArmorProfile": {"type": "Unconfined"}}},
            'forbidden AppArmor profile (pod must not set AppArmor profile type to "Unconfined")',
        ),
        (
            {"securityContext": {"windowsOptions": {"hostProcess": True}}},
            "hostProcess (pod must not set securityContext.windowsOptions.hostProcess=true)",
        ),
    ],
)
def test_baseline_checks_hold_at_both_levels(change: dict[str, Any], expected: str) -> None:
    """Each change (pod securityContext merged, containers replaced) is the pod's one problem."""
    spec = restricted_spec()
    for key, value in change.items():
        spec[key] = spec[key] | value if key == "securityContext" else value
    for container in spec["containers"]:
        container["securityContext"] = LOCKED_DOWN | container.get("securityContext", {})
    assert findings(spec) == expected
    assert findings(spec, BASELINE) == expected


def test_versions_pick_the_checks_of_their_time() -> None:
    root = restricted_spec()
    root["securityContext"]["runAsUser"] = 0
    assert findings(root) == "runAsUser=0 (pod must not set runAsUser=0)"
    assert findings(root, LevelVersion("restricted", 22)) == ""  # runAsUser came with v1.23
    user_namespace = restricted_spec(hostUsers=False)
    user_namespace["securityContext"]["runAsNonRoot"] = False
    assert findings(user_namespace) == ""  # relaxed for user-namespaced pods since v1.35
    assert findings(user_namespace, LevelVersion("restricted", 34)).startswith("runAsNonRoot")
    # Before v1.19 seccomp was an annotation, judged by the baseline check (so listed first);
    # a future version is judged as the newest known.
    annotated = {"containers": [{"name": "a"}]}
    assert findings(
        annotated,
        LevelVersion("restricted", 18),
        annotations={"seccomp.security.alpha.kubernetes.io/pod": "unconfined"},
    ) == (
        "seccompProfile (forbidden annotation "
        'seccomp.security.alpha.kubernetes.io/pod="unconfined"), '
        'allowPrivilegeEscalation != false (container "a" must set '
        "securityContext.allowPrivilegeEscalation=false), "
        'runAsNonRoot != true (pod or container "a" must set securityContext.runAsNonRoot=true)'
    )
    assert findings(annotated, LevelVersion("restricted", 99)) == BARE_VIOLATIONS


def test_windows_pods_are_exempt_from_linux_only_fields() -> None:
    windows = {"os": {"name": "windows"}, "securityContext": {"runAsNonRoot": True}}
    assert findings({**windows, "containers": [{"name": "a"}]}) == ""


# ---------------------------------------------------------------- through the API


def _namespace(core: Any, name: str, **labels: str) -> None:
    core.create_namespace({"metadata": {"name": name, "labels": labels}})


def _pod(name: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    body = spec or {"containers": [{"name": "a", "image": "busybox"}]}
    body["containers"][0].setdefault("image", "busybox")
    return {"metadata": {"name": name}, "spec": {**body, "nodeName": "elsewhere"}}


def _refusal(call: Callable[[], Any]) -> tuple[int, str]:
    """The status code and message of the API's refusal of ``call``."""
    with pytest.raises(ApiException) as refused:
        call()
    return refused.value.status, json.loads(refused.value.body)["message"]


def test_a_restricted_namespace_refuses_pods_that_break_it(core: Any) -> None:
    _namespace(core, "locked", **{"pod-security.kubernetes.io/enforce": "restricted"})
    status, message = _refusal(lambda: core.create_namespaced_pod("locked", _pod("bare")))
    assert (status, message) == (
        403,
        f'pods "bare" is forbidden: violates PodSecurity "restricted:latest": {BARE_VIOLATIONS}',
    )
    assert core.list_namespaced_pod("locked").items == []
    core.create_namespaced_pod("locked", _pod("good", restricted_spec()))
    core.create_namespaced_pod("default", _pod("bare"))  # no label: privileged, as before


def test_the_message_names_the_level_and_version_the_namespace_asks_for(core: Any) -> None:
    labels = {
        "pod-security.kubernetes.io/enforce": "baseline",
        "pod-security.kubernetes.io/enforce-version": "v1.30",
    }
    _namespace(core, "base", **labels)
    core.create_namespaced_pod("base", _pod("bare"))  # baseline asks nothing of a plain pod
    host_pid = _pod("host", {"containers": [{"name": "a"}], "hostPID": True})
    assert _refusal(lambda: core.create_namespaced_pod("base", host_pid)) == (
        403,
        'pods "host" is forbidden: violates PodSecurity "baseline:v1.30": '
        "host namespaces (hostPID=true)",
    )


def test_bad_labels_are_refused_and_only_significant_pod_updates_are_judged(core: Any) -> None:
    typo = {"pod-security.kubernetes.io/enforce": "strict"}
    assert _refusal(lambda: _namespace(core, "typo", **typo)) == (
        422,
        'Namespace "typo" is invalid: metadata.labels[pod-security.kubernetes.io/enforce]: '
        'Invalid value: "strict": must be one of privileged, baseline, restricted',
    )
    _namespace(core, "later")
    core.create_namespaced_pod("later", _pod("old"))
    core.patch_namespace(
        "later", {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    # An existing pod keeps working: a label change is not judged, a new image is.
    core.patch_namespaced_pod("old", "later", {"metadata": {"labels": {"x": "y"}}})
    new_image = {"spec": {"containers": [{"name": "a", "image": "busybox:2"}]}}
    status, message = _refusal(lambda: core.patch_namespaced_pod("old", "later", new_image))
    assert status == 403 and message.startswith('pods "old" is forbidden: violates PodSecurity')


def test_the_job_controller_records_a_refused_pod_and_tries_again(core: Any, batch: Any) -> None:
    _namespace(core, "jobs", **{"pod-security.kubernetes.io/enforce": "restricted"})
    template = {
        "restartPolicy": "Never",
        "containers": [{"name": "a", "image": "x", "command": ["python", "-c", "print('ran')"]}],
    }
    batch.create_namespaced_job(
        "jobs", {"metadata": {"name": "plain"}, "spec": {"template": {"spec": template}}}
    )

    def failed_create() -> Any:
        listed = core.list_namespaced_event("jobs", field_selector="involvedObject.name=plain")
        return next((e for e in listed.items if e.reason == "FailedCreate"), None)

    event = wait_for(failed_create)
    assert event.type == "Warning" and event.involved_object.kind == "Job"
    assert event.message.startswith('Error creating: pods "plain-')
    assert event.message.endswith(
        f'is forbidden: violates PodSecurity "restricted:latest": {BARE_VIOLATIONS}'
    )
    assert core.list_namespaced_pod("jobs").items == []
    core.patch_namespace(
        "jobs", {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}}
    )
    done = wait_for(lambda: batch.read_namespaced_job("plain", "jobs").status.succeeded, timeout=30)
    assert done == 1
