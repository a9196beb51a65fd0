"""Just enough of Kubernetes' protobuf encoding to read what ``kubectl create namespace``,
``kubectl create configmap``, ``kubectl create secret`` and typed clients' deletes (Helm's
``uninstall``) send: client-go's typed clients speak protobuf to builtin kinds and do not fall
back to JSON. Other kinds get a 415 that says to use
``kubectl apply -f``; responses are always JSON, which every client accepts.

Wire format: the magic ``k8s\\x00``, then a ``runtime.Unknown`` {typeMeta=1 {apiVersion=1,
kind=2}, raw=2}; ``raw`` is the kind's message, field numbers from k8s.io/api's generated.proto.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

from deltaroll_sandbox.apiserver.statuses import bad_request, unsupported_media_type

MAGIC = b"k8s\x00"
Fields = list[tuple[int, int | bytes]]


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise bad_request("truncated protobuf body")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, value
        elif wire == 2:
            length, pos = _varint(data, pos)
            yield number, data[pos : pos + length]
            pos += length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            yield number, data[pos : pos + size]
            pos += size
        else:
            raise bad_request(f"unsupported protobuf wire type {wire}")


def _text(value: int | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _map_entry(value: int | bytes) -> tuple[str, bytes]:
    entry = dict(_fields(value if isinstance(value, bytes) else b""))
    raw = entry.get(2, b"")
    return _text(entry.get(1, b"")), raw if isinstance(raw, bytes) else str(raw).encode()


def _object_meta(data: bytes) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    names = {1: "name", 2: "generateName", 3: "namespace"}
    for number, value in _fields(data):
        if number in names and value:  # proto2 sends unset strings as ""
            meta[names[number]] = _text(value)
        elif number in (11, 12):
            key, raw = _map_entry(value)
            meta.setdefault("labels" if number == 11 else "annotations", {})[key] = raw.decode()
        elif number == 14:
            meta.setdefault("finalizers", []).append(_text(value))
    return meta


def _namespace(fields: Fields) -> dict[str, Any]:
    return {}


def _config_map(fields: Fields) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for number, value in fields:
        if number in (2, 3):
            key, raw = _map_entry(value)
            if number == 2:
                body.setdefault("data", {})[key] = raw.decode()
            else:
                body.setdefault("binaryData", {})[key] = base64.b64encode(raw).decode()
        elif number == 4:
            body["immutable"] = bool(value)
    return body


def _secret(fields: Fields) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for number, value in fields:
        if number in (2, 4):
            key, raw = _map_entry(value)
            if number == 2:
                body.setdefault("data", {})[key] = base64.b64encode(raw).decode()
            else:
                body.setdefault("stringData", {})[key] = raw.decode()
        elif number == 3 and value:
            body["type"] = _text(value)
        elif number == 5:
            body["immutable"] = bool(value)
    return body


def _delete_options(fields: Fields) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for number, value in fields:
        if number == 1 and isinstance(value, int):
            body["gracePeriodSeconds"] = value
        elif number == 2 and isinstance(value, bytes):
            names = {1: "uid", 2: "resourceVersion"}
            body["preconditions"] = {names[n]: _text(v) for n, v in _fields(value) if n in names}
        elif number == 3:
            body["orphanDependents"] = bool(value)
        elif number == 4 and value:
            body["propagationPolicy"] = _text(value)
        elif number == 5:
            body.setdefault("dryRun", []).append(_text(value))
    return body


_KINDS: dict[str, Callable[[Fields], dict[str, Any]]] = {
    "Namespace": _namespace,
    "ConfigMap": _config_map,
    "Secret": _secret,
    "DeleteOptions": _delete_options,
}


def decode(body: bytes) -> dict[str, Any]:
    """A JSON-shaped object from a protobuf request body, for the kinds above."""
    if not body.startswith(MAGIC):
        raise bad_request("a protobuf body must start with the k8s magic number")
    envelope = dict(_fields(body[len(MAGIC) :]))
    type_bytes = envelope.get(1, b"")
    type_meta = dict(_fields(type_bytes if isinstance(type_bytes, bytes) else b""))
    api_version, kind = _text(type_meta.get(1, b"")), _text(type_meta.get(2, b""))
    if kind not in _KINDS:
        raise unsupported_media_type(
            f"the sandbox reads protobuf only for {', '.join(_KINDS)}; for a {kind or 'body'} "
            "use JSON or YAML (e.g. `kubectl apply -f`)"
        )
    raw = envelope.get(2, b"")
    fields = list(_fields(raw if isinstance(raw, bytes) else b""))
    obj: dict[str, Any] = {"apiVersion": api_version, "kind": kind}
    for number, value in fields:
        if number == 1 and isinstance(value, bytes):
            obj["metadata"] = _object_meta(value)
    obj.update(_KINDS[kind](fields))
    return obj
