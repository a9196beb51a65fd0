"""Human names of versions (``step-120``) and resolving what a user typed to a version id.

Names live in ``<model>/names/<name>.json``. Setting a name that already points elsewhere is
refused unless forced, because a name is what a deployment or a colleague refers to: silently
moving it would change what they get. A name is set under a publish lease, so a gc never
deletes the version between the check that it exists and the name's write. Names may not look
like version ids (32 hex characters), so a reference always means one thing. Resolution order:
a name, an exact version id, then a unique version-id prefix of at least 6 characters (as
``git`` does)."""

from __future__ import annotations

import re

from deltaroll.store.catalog import Catalog
from deltaroll.store.errors import InvalidNameError, NameConflictError, VersionNotFoundError
from deltaroll.store.leases import publishing
from deltaroll.store.manifests import NameRecord, now
from deltaroll.store.names import validate_name

VERSION_LIKE = re.compile(r"[0-9a-f]{32}")
_MIN_PREFIX = 6


def set_name(catalog: Catalog, model: str, name: str, version: str, *, force: bool = False) -> bool:
    """Point ``name`` at ``version``; True if it changed. Refuses to move a name unless forced."""
    validate_name(name, what="name")
    if VERSION_LIKE.fullmatch(name):
        raise InvalidNameError(
            f"name {name!r} looks like a version id; choose a name like step-120"
        )
    with publishing(catalog, model):  # no gc deletes the version between check and write
        if catalog.find_version(model, version) is None:
            raise VersionNotFoundError(
                f"{catalog.backend.uri}: cannot name {version}: it is not a version of {model!r}"
            )
        record = NameRecord(model=model, name=name, version=version, updated_at=now())
        if catalog.write_name(record, create_only=True):
            return True
        current = catalog.read_name(model, name)
        if current is not None and current.version == version:
            return False
        if not force:
            pointed = current.version if current is not None else "another version"
            raise _conflict(catalog, model, name, pointed)
        catalog.write_name(record, create_only=False)
        return True


def check_name_free(catalog: Catalog, model: str, name: str, version: str) -> None:
    """Raise :class:`NameConflictError` if ``name`` points at a version other than ``version``."""
    current = catalog.read_name(model, name)
    if current is not None and current.version != version:
        raise _conflict(catalog, model, name, current.version)


def _conflict(catalog: Catalog, model: str, name: str, pointed: str) -> NameConflictError:
    return NameConflictError(
        f"{catalog.backend.uri}: name {name!r} of {model!r} already points at {pointed}; "
        "choose another name, or pass --force-name to move it"
    )


def resolve(catalog: Catalog, model: str, ref: str) -> str:
    """The version id ``ref`` means: a name, a version id, or a unique version-id prefix."""
    validate_name(ref, what="version or name")
    record = None if VERSION_LIKE.fullmatch(ref) else catalog.read_name(model, ref)
    if record is not None:
        if catalog.find_version(model, record.version) is None:
            raise VersionNotFoundError(
                f"{catalog.backend.uri}: name {ref!r} points at {record.version}, which is not "
                f"published for {model!r} (garbage-collected?); point the name at another version"
            )
        return record.version
    if catalog.find_version(model, ref) is not None:
        return ref
    versions = catalog.version_ids(model)
    if len(ref) >= _MIN_PREFIX:
        matches = [v for v in versions if v.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise VersionNotFoundError(
                f"{catalog.backend.uri}: {ref!r} is ambiguous for {model!r} ({len(matches)} "
                "versions start with it); type more characters"
            )
    hint = "it has no versions yet" if not versions else "see `deltaroll log STORE MODEL`"
    raise VersionNotFoundError(
        f"{catalog.backend.uri}: {model!r} has no version or name {ref!r}; {hint}"
    )
