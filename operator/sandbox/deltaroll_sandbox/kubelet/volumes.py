"""Pod volumes as local folders, and the mountPath → folder map the kubelet rewrites paths with.

See the package docstring for the mapping. DownwardAPI and projected volumes are rendered
into files that are replaced atomically (write a temp file, rename), so a reader never sees a
half-written annotations file, as with the real kubelet's ``..data`` swap.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deltaroll_sandbox.apiserver.statuses import ApiError
from deltaroll_sandbox.apiserver.tokens import BoundPod, TokenIssuer
from deltaroll_sandbox.errors import SandboxError
from deltaroll_sandbox.kubelet.node import SandboxNode

_SAFE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class VolumeError(SandboxError):
    """A volume cannot be set up (the pod stays in ContainerCreating with this message)."""


def _safe_relative(path: str, what: str) -> Path:
    relative = Path(path)
    if relative.is_absolute() or ".." in relative.parts:
        raise VolumeError(f"{what} {path!r} must be a relative path without '..'")
    return relative


def go_quote(value: str) -> str:
    """Quote like Go's ``strconv.Quote``, which the kubelet uses in downwardAPI files."""
    return json.dumps(value, ensure_ascii=False)


def _format_map(values: dict[str, str]) -> str:
    return "\n".join(f"{key}={go_quote(values[key])}" for key in sorted(values))


def field_text(pod: dict[str, Any], field_path: str) -> str:
    """The value of a downward-API ``fieldRef`` (also used for env ``valueFrom.fieldRef``)."""
    meta = pod.get("metadata", {})
    if field_path == "metadata.annotations":
        return _format_map(meta.get("annotations") or {})
    if field_path == "metadata.labels":
        return _format_map(meta.get("labels") or {})
    if match := re.fullmatch(r"metadata\.(annotations|labels)\['(.+)'\]", field_path):
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    host_ip = (pod.get("status") or {}).get("hostIP") or "127.0.0.1"
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": pod.get("spec", {}).get("nodeName"),
        "spec.serviceAccountName": pod.get("spec", {}).get("serviceAccountName"),
        "status.podIP": "127.0.0.1",
        "status.podIPs": "127.0.0.1",
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if field_path not in simple:
        raise VolumeError(f"unsupported fieldPath {field_path!r}")
    return str(simple[field_path] or "")


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass(frozen=True)
class ProjectedToken:
    """A pod's ServiceAccount token file, which the kubelet replaces before it expires."""

    folder: Path  # the projected volume's
    source: dict[str, Any]  # its serviceAccountToken source (path, audience, expirationSeconds)
    issued: datetime.datetime
    expires: datetime.datetime

    def due(self, now: datetime.datetime) -> bool:
        """As the kubelet's token manager: older than 80 % of its lifetime or than 24 h."""
        age = now - self.issued
        return age >= (self.expires - self.issued) * 0.8 or age >= datetime.timedelta(hours=24)


@dataclass(frozen=True)
class PodVolumes:
    """The local folder of every volume of one pod."""

    folders: dict[str, Path]
    downward: dict[str, list[dict[str, Any]]]  # volume name -> downwardAPI items (incl. projected)
    tokens: list[ProjectedToken] = field(default_factory=list)


def prepare(
    pod: dict[str, Any],
    pod_dir: Path,
    node: SandboxNode,
    sandbox_dir: Path,
    lookup: Any,
    tokens: TokenIssuer,
) -> PodVolumes:
    """Create the folders and files of every volume; a hostPath is a folder of ``node``;
    ``lookup(kind, ns, name)`` reads objects, ``tokens`` issues the pod-bound ServiceAccount
    tokens of projected volumes."""
    namespace = pod["metadata"]["namespace"]
    folders: dict[str, Path] = {}
    downward: dict[str, list[dict[str, Any]]] = {}
    projected_tokens: list[ProjectedToken] = []
    for volume in pod["spec"].get("volumes") or []:
        name = volume["name"]
        own = pod_dir / "volumes" / name
        if "hostPath" in volume:
            folder = node.host_path(volume["hostPath"]["path"])
            kind = volume["hostPath"].get("type", "")
            if kind in ("DirectoryOrCreate", "") and not folder.exists():
                folder.mkdir(parents=True, exist_ok=True)
            elif kind == "Directory" and not folder.is_dir():
                raise VolumeError(f"hostPath {folder} is not a directory")
        elif "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            if not _SAFE_NAME.match(claim):
                raise VolumeError(f"claimName {claim!r} is not a valid object name")
            folder = sandbox_dir / "pvcs" / namespace / claim
            folder.mkdir(parents=True, exist_ok=True)
        elif "downwardAPI" in volume:
            folder = own
            downward[name] = list(volume["downwardAPI"].get("items") or [])
        elif "projected" in volume:
            folder = own
            items: list[dict[str, Any]] = []
            for source in volume["projected"].get("sources") or []:
                if "downwardAPI" in source:
                    items += source["downwardAPI"].get("items") or []
                for kind in ("configMap", "secret"):
                    if kind in source:
                        _write_keys(folder, source[kind], kind, namespace, lookup)
                if "serviceAccountToken" in source:
                    token_source = source["serviceAccountToken"]
                    projected_tokens.append(_write_token(folder, token_source, pod, tokens))
            downward[name] = items
        elif "configMap" in volume or "secret" in volume:
            folder = own
            kind = "configMap" if "configMap" in volume else "secret"
            _write_keys(folder, volume[kind], kind, namespace, lookup)
        else:  # emptyDir and anything we have no better idea for
            folder = own
        folder.mkdir(parents=True, exist_ok=True)
        folders[name] = folder
    volumes = PodVolumes(folders, downward, projected_tokens)
    refresh_downward(volumes, pod)
    return volumes


def _write_keys(
    folder: Path, source: dict[str, Any], kind: str, namespace: str, lookup: Any
) -> None:
    name = source.get("name") or source.get("secretName") or ""
    obj = lookup(kind, namespace, name)
    if obj is None:
        if source.get("optional"):
            return
        raise VolumeError(f'{kind} "{name}" not found')
    if kind == "secret":
        data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    else:
        data = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
    items = source.get("items") or [{"key": k, "path": k} for k in data]
    for item in items:
        if item["key"] in data:
            _write_atomic(folder / _safe_relative(item["path"], "item path"), data[item["key"]])


def _write_token(
    folder: Path, source: dict[str, Any], pod: dict[str, Any], tokens: TokenIssuer
) -> ProjectedToken:
    """A token of the pod's ServiceAccount, bound to the pod, as the kubelet requests it."""
    meta = pod["metadata"]
    account = pod["spec"].get("serviceAccountName") or "default"
    audience = source.get("audience")
    issued = datetime.datetime.now(datetime.UTC)
    try:
        token, expires = tokens.issue(
            meta["namespace"],
            account,
            audiences=[audience] if audience else None,
            expiration_s=source.get("expirationSeconds"),
            pod=BoundPod(meta["name"], meta["uid"]),
        )
    except ApiError as exc:
        raise VolumeError(f"failed to fetch token: {exc.message}") from exc
    _write_atomic(
        folder / _safe_relative(source["path"], "serviceAccountToken path"), token.encode()
    )
    return ProjectedToken(folder, source, issued, expires)


def rotate_tokens(
    volumes: PodVolumes, pod: dict[str, Any], tokens: TokenIssuer, now: datetime.datetime
) -> int:
    """Replace every token file that is :meth:`ProjectedToken.due` with a new token (the old
    one stays valid until it expires, as on a cluster); how many were replaced."""
    replaced = 0
    for number, token in enumerate(volumes.tokens):
        if token.due(now):
            volumes.tokens[number] = _write_token(token.folder, token.source, pod, tokens)
            replaced += 1
    return replaced


def refresh_downward(volumes: PodVolumes, pod: dict[str, Any]) -> None:
    """(Re)write downwardAPI files from the pod's current metadata; unchanged files stay."""
    for name, items in volumes.downward.items():
        for item in items:
            if "fieldRef" not in item:
                continue
            target = volumes.folders[name] / _safe_relative(item["path"], "downwardAPI path")
            data = field_text(pod, item["fieldRef"]["fieldPath"]).encode()
            if not target.exists() or target.read_bytes() != data:
                _write_atomic(target, data)


def mount_map(container: dict[str, Any], volumes: PodVolumes) -> dict[str, Path]:
    """``mountPath`` → local folder (or file, with ``subPath``) for one container."""
    result: dict[str, Path] = {}
    for mount in container.get("volumeMounts") or []:
        if mount["name"] not in volumes.folders:
            raise VolumeError(f"volumeMount {mount['name']!r} names no volume of the pod")
        local = volumes.folders[mount["name"]]
        if mount.get("subPath"):
            local = local / _safe_relative(mount["subPath"], "subPath")
        result[mount["mountPath"].rstrip("/") or "/"] = local
    return result


def rewrite_paths(text: str, mounts: dict[str, Path]) -> str:
    """Replace mountPaths used as path prefixes (``/etc/podinfo/annotations``, ``--x=/data``)."""
    if not mounts:
        return text
    # One pass over all mountPaths (longest first): a replaced folder is never rewritten again.
    alternatives = "|".join(re.escape(p) for p in sorted(mounts, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w./-])({alternatives})(?=/|$|[\s:;,=\"'])")
    return pattern.sub(lambda match: str(mounts[match.group(1)]), text)
