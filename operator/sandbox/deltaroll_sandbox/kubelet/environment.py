"""A container's environment and command line, resolved as the kubelet does.

Order as on a cluster: ``envFrom`` first, then ``env`` (later entries win), ``$(VAR)``
references expanded against what is defined before (``$$`` escapes), ``valueFrom`` resolved
from ConfigMaps, Secrets and the pod itself. Then the sandbox's own mapping (package docstring):
mountPaths rewritten to local folders, container ports to host ports.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deltaroll_sandbox.errors import SandboxError
from deltaroll_sandbox.kubelet.volumes import field_text, rewrite_paths

Lookup = Callable[[str, str, str], dict[str, Any] | None]
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class ContainerConfigError(SandboxError):
    """The container cannot be configured yet (a missing Secret or ConfigMap key)."""


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: unknown references stay as written, ``$$`` is ``$``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR_REF.sub(replace, text)


def port_env_name(name: str) -> str:
    return "DELTAROLL_SANDBOX_PORT_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def _key_of(kind: str, ref: dict[str, Any], namespace: str, lookup: Lookup) -> str | None:
    obj = lookup(kind, namespace, ref.get("name", ""))
    if obj is None:
        if ref.get("optional"):
            return None
        raise ContainerConfigError(f'{kind} "{ref.get("name")}" not found')
    data = obj.get("data") or {}
    if ref["key"] not in data:
        if ref.get("optional"):
            return None
        raise ContainerConfigError(
            f"couldn't find key {ref['key']} in {kind} {namespace}/{ref.get('name')}"
        )
    value = data[ref["key"]]
    return base64.b64decode(value).decode() if kind == "secret" else str(value)


def _resource_value(container: dict[str, Any], ref: dict[str, Any]) -> str:
    section, _, name = ref["resource"].partition(".")
    value = (container.get("resources") or {}).get(section, {}).get(name)
    if value is None:
        return str(os.cpu_count() or 1) if name == "cpu" else "0"
    return str(value)


def base_environment(sandbox_dir: Path, api_url: str) -> dict[str, str]:
    """What every container starts from: a PATH with the sandbox's venv first, the API's address
    (no credentials: a pod that needs the API mounts a ServiceAccount token volume)."""
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join([venv_bin, os.environ.get("PATH", "/usr/bin:/bin")])
    host, _, port = api_url.removeprefix("https://").rpartition(":")
    env = {
        "PATH": path,
        "HOME": os.environ.get("HOME", str(sandbox_dir)),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": port,
        "DELTAROLL_SANDBOX": "1",
    }
    if os.environ.get("PYTHONPATH"):  # the sandbox's Python environment is the pods' too
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def container_environment(
    pod: dict[str, Any],
    container: dict[str, Any],
    base: dict[str, str],
    mounts: dict[str, Path],
    ports: dict[str, int],
    pod_dir: Path,
    lookup: Lookup,
) -> dict[str, str]:
    namespace = pod["metadata"]["namespace"]
    env = dict(base)
    env["HOSTNAME"] = pod["metadata"]["name"]
    env["DELTAROLL_SANDBOX_POD_DIR"] = str(pod_dir)
    env["DELTAROLL_SANDBOX_MOUNTS"] = json.dumps({k: str(v) for k, v in mounts.items()})
    for name, host_port in ports.items():
        env[port_env_name(name)] = str(host_port)
    defined: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, key in (("configMap", "configMapRef"), ("secret", "secretRef")):
            if key not in source:
                continue
            obj = lookup(kind, namespace, source[key].get("name", ""))
            if obj is None:
                if source[key].get("optional"):
                    continue
                raise ContainerConfigError(f'{kind} "{source[key].get("name")}" not found')
            for data_key, value in (obj.get("data") or {}).items():
                text = base64.b64decode(value).decode() if kind == "secret" else str(value)
                defined[prefix + data_key] = text
    for item in container.get("env") or []:
        name = item["name"]
        if "valueFrom" not in item:
            defined[name] = expand(str(item.get("value", "")), defined)
            continue
        source = item["valueFrom"]
        resolved: str | None
        if "fieldRef" in source:
            resolved = field_text(pod, source["fieldRef"]["fieldPath"])
        elif "secretKeyRef" in source:
            resolved = _key_of("secret", source["secretKeyRef"], namespace, lookup)
        elif "configMapKeyRef" in source:
            resolved = _key_of("configMap", source["configMapKeyRef"], namespace, lookup)
        elif "resourceFieldRef" in source:
            resolved = _resource_value(container, source["resourceFieldRef"])
        else:
            raise ContainerConfigError(f"env {name}: unsupported valueFrom {sorted(source)}")
        if resolved is not None:
            defined[name] = resolved
    for name, value in defined.items():
        env[name] = map_ports(rewrite_paths(value, mounts), ports)
    return env


def map_ports(text: str, ports: dict[str, int]) -> str:
    """Any container port of the pod (containers share one network, as in a pod) → its host
    port, where it stands alone, after ``=``, or as ``host:PORT`` (``http://localhost:8000/v1``)."""
    numbers = [key for key in ports if key.isdigit()]
    if not numbers:
        return text
    alternatives = "|".join(sorted(numbers, key=len, reverse=True))
    pattern = re.compile(rf"(^|=|(?<=[\w\]]):)({alternatives})(?=$|/)")
    return pattern.sub(lambda m: f"{m.group(1)}{ports[m.group(2)]}", text)


def command_line(
    container: dict[str, Any], env: dict[str, str], mounts: dict[str, Path], ports: dict[str, int]
) -> list[str]:
    """``command`` + ``args`` with ``$(VAR)`` expanded, paths and ports mapped, argv[0] resolved."""
    command = list(container.get("command") or [])
    if not command:
        raise ContainerConfigError(
            "the sandbox runs no images: give the container a `command` (e.g. python or deltaroll)"
        )
    return _resolved([*command, *(container.get("args") or [])], env, mounts, ports)


def mapped_probe(
    probe: dict[str, Any], env: dict[str, str], mounts: dict[str, Path], ports: dict[str, int]
) -> dict[str, Any]:
    """A probe whose ``exec`` command is mapped like the container's own command line."""
    if "exec" not in probe:
        return probe
    try:
        command = _resolved(list(probe["exec"].get("command") or []), env, mounts, ports)
    except (FileNotFoundError, IndexError):
        return probe  # it will fail when run, and count as a failed probe
    return {**probe, "exec": {"command": command}}


def _resolved(
    parts: list[Any], env: dict[str, str], mounts: dict[str, Path], ports: dict[str, int]
) -> list[str]:
    argv = [map_ports(rewrite_paths(expand(str(part), env), mounts), ports) for part in parts]
    if "/" not in argv[0]:
        resolved = shutil.which(argv[0], path=env.get("PATH"))
        if resolved is None:
            raise FileNotFoundError(f'exec: "{argv[0]}": executable file not found in $PATH')
        argv[0] = resolved
    return argv
