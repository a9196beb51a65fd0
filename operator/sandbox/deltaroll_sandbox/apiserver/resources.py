"""Which resources the server serves: the builtins kmock bundles, plus those CRDs register.

The registry keeps kmock's ``resources`` array (which kmock's discovery endpoints read) and our
richer :class:`ResourceType` in step, so ``/api/v1``, ``/apis/<group>/<version>`` and the
handlers always agree on what exists.
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import kmock

# kmock bundles these, but nothing here serves them (and metrics.k8s.io "pods" would shadow
# the core pods in kubectl's resolution).
_NOT_EMULATED = {"metrics.k8s.io"}
_ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    """One served resource in one version. Objects are stored per (group, plural)."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    subresources: frozenset[str] = frozenset()
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    schema: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    printer_columns: tuple[dict[str, Any], ...] = field(default=(), compare=False, hash=False)
    custom: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def storage_key(self) -> tuple[str, str]:
        """Objects are shared by all versions of a resource, as in etcd (no conversion)."""
        return (self.group, self.plural)

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources


@functools.cache
def _bundled_resources() -> bytes:
    """kmock's bundled discovery of the builtin kinds (its ``load_bundled()`` uses an
    importlib API that warns on Python 3.11+; read the same file without the warning)."""
    packaged = importlib.resources.files("kmock._internal").joinpath("resources.json.gz")
    return gzip.decompress(packaged.read_bytes())


class ResourceRegistry:
    """The resources the server knows, mirrored into kmock's discovery array."""

    def __init__(self, discovery: kmock.ResourcesArray) -> None:
        self._discovery = discovery
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        discovery.load_data(_bundled_resources())
        for res in list(discovery):
            info = discovery[res]
            if not isinstance(res, kmock.resource) or not (
                res.plural and res.version is not None and res.group is not None
            ):
                continue
            if res.group in _NOT_EMULATED or ("list" not in info.verbs and "get" not in info.verbs):
                continue  # bindings, tokenreviews...: not objects we store
            self._types[(res.group, res.version, res.plural)] = ResourceType(
                group=res.group,
                version=res.version,
                plural=res.plural,
                kind=info.kind or res.plural.capitalize(),
                namespaced=bool(info.namespaced),
                singular=info.singular or "",
                subresources=frozenset(info.subresources),
                short_names=tuple(sorted(info.shortnames)),
                categories=tuple(sorted(info.categories)),
            )

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def versions_of(self, group: str, plural: str) -> list[ResourceType]:
        return [t for t in self._types.values() if (t.group, t.plural) == (group, plural)]

    def register(self, rtype: ResourceType) -> None:
        self._types[(rtype.group, rtype.version, rtype.plural)] = rtype
        self._discovery[kmock.resource(rtype.group, rtype.version, rtype.plural)] = (
            kmock.ResourceInfo(
                namespaced=rtype.namespaced,
                kind=rtype.kind,
                singular=rtype.singular,
                verbs=set(_ALL_VERBS),
                shortnames=set(rtype.short_names),
                categories=set(rtype.categories),
                subresources=set(rtype.subresources),
            )
        )

    def unregister(self, group: str, plural: str) -> None:
        for key in [k for k in self._types if (k[0], k[2]) == (group, plural)]:
            del self._types[key]
            del self._discovery[kmock.resource(*key)]

    def __iter__(self) -> Iterator[ResourceType]:
        return iter(list(self._types.values()))
