"""The version the pod should serve, read from its downwardAPI annotations file.

The kubelet writes ``metadata.annotations`` as one ``key="value"`` line per annotation, the value
quoted by Go's ``strconv.Quote``, and replaces the file atomically when annotations change. Reading
it needs no API rights, and polling a small file is cheap and works on every filesystem (inotify
does not see the kubelet's symlink swap reliably).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from deltaroll.agent.errors import AgentError
from deltaroll.api.annotations import POD_SEED_AMONG, POD_VERIFY_KEYS, POD_VERSION
from deltaroll.api.peers import parse_seed_among

_GO_ESCAPE = re.compile(r'\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[abfnrtv\\"\'])')
_SIMPLE_ESCAPES = {
    "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
    "\\": "\\", '"': '"', "'": "'",
}  # fmt: skip


def unquote_go(quoted: str) -> str:
    """Undo Go's ``strconv.Quote`` (``\\xHH`` escapes are raw bytes, decoded as UTF-8)."""
    if len(quoted) < 2 or quoted[0] != '"' or quoted[-1] != '"':
        raise ValueError(f"not a quoted string: {quoted[:40]!r}")
    raw = bytearray()
    body = quoted[1:-1]
    position = 0
    for match in _GO_ESCAPE.finditer(body):
        raw += body[position : match.start()].encode()
        code = match.group(1)
        if code[0] == "x":
            raw.append(int(code[1:], 16))
        elif code[0] in "uU":
            raw += chr(int(code[1:], 16)).encode()
        else:
            raw += _SIMPLE_ESCAPES[code].encode()
        position = match.end()
    raw += body[position:].encode()
    return raw.decode("utf-8", errors="replace")


def parse_downward_file(text: str) -> dict[str, str]:
    """Every ``key="value"`` line of a downwardAPI labels/annotations file."""
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, quoted = line.partition("=")
        try:
            if not sep:
                raise ValueError("no '='")
            values[key] = unquote_go(quoted)
        except ValueError as exc:
            raise AgentError(
                f'line {number} of the annotations file is not key="value" ({exc}); mount the '
                "pod's metadata.annotations through a downwardAPI volume"
            ) from exc
    return values


@dataclass(frozen=True)
class Wanted:
    """What the operator told the pod, from one read of the file: the version to serve (None:
    none yet) and the pods to rank its objects' seeders among (written with it)."""

    version: str | None
    seed_among: tuple[str, ...] = ()


def read_wanted(annotations_file: Path) -> Wanted:
    """The ``deltaroll.dev/version`` and ``deltaroll.dev/seed-among`` annotations."""
    annotations = _annotations(annotations_file)
    version = annotations.get(POD_VERSION, "").strip() or None
    return Wanted(version, parse_seed_among(annotations.get(POD_SEED_AMONG, "")))


def read_wanted_version(annotations_file: Path) -> str | None:
    """The ``deltaroll.dev/version`` annotation, or None when the pod has none (yet)."""
    return read_wanted(annotations_file).version


def read_pod_keys(annotations_file: Path) -> list[str]:
    """The public keys the operator wrote on the pod (``deltaroll.dev/verify-keys``, comma
    separated ``ed25519:<base64>``), unparsed."""
    value = _annotations(annotations_file).get(POD_VERIFY_KEYS, "")
    return [key for key in (part.strip() for part in value.split(",")) if key]


def _annotations(annotations_file: Path) -> dict[str, str]:
    try:
        text = annotations_file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise AgentError(
            f"{annotations_file} does not exist: mount a downwardAPI volume with "
            "fieldPath metadata.annotations there and pass its file as --annotations-file"
        ) from exc
    return parse_downward_file(text)
