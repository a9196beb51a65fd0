"""Signed versions: what a publisher key signs, where the signature lives, how it is checked.

A signature covers a :class:`~deltaroll.store.manifests.VersionStatement`: the store it was
made in, the model, the version id, the whole 256-bit version digest, the names the publisher
gave it (each with a sequence number) and, when the operator signed for a ModelDelta, its
namespace. It is bound to content, not to a delta, so an anchor, a chain or a squashed delta
that produces the same tensors and files needs no signature of its own, and a delta whose
target is anything else is refused: its manifest's target digest is not the signed one, and
every apply checks the bytes it writes against that manifest. It is stored as
``<model>/signatures/<version>/<key id>.json``, one small record per key, so adding a key
(rotation) never rewrites another key's signature.

Checking happens twice, both before a weights volume is touched: :func:`signed_statement` when
a version is chosen (the signature, its key, the store, the model, the version, the namespace
the verifier serves and, for a name, that the statement names it at a sequence no lower than
one accepted before), and :meth:`SignedTarget.check_manifest` once the manifest that produces
the version is fetched (its target digest must be the signed digest).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypedDict

import structlog
from pydantic import ValidationError

from deltaroll.checkpoint.digests import check_version_ids, side_digest
from deltaroll.checkpoint.manifest import DeltaManifest, parse_delta_manifest
from deltaroll.checkpoint.transform import Side
from deltaroll.store import keys
from deltaroll.store.catalog import Catalog
from deltaroll.store.errors import InvalidManifestError, ObjectNotFoundError, SignatureError
from deltaroll.store.manifests import (
    DeltaRecord,
    ObjectRef,
    SignatureRecord,
    VersionStatement,
    dump,
    load,
)
from deltaroll.store.name_sequences import NameSequences
from deltaroll.store.signing import PublicKey, SigningKey

log = structlog.get_logger(__name__)

#: Domain separation: these bytes sign nothing but a Deltaroll version statement.
_DOMAIN = b"deltaroll.signed-version/v1\0"
#: A statement an older Deltaroll signed: it binds no store and its names no sequence.
_OUTDATED_SCHEMA = b'"deltaroll.signed-version/v1"'


@dataclass(frozen=True)
class SignedTarget:
    """A version whose statement a trusted key signed."""

    statement: VersionStatement
    key_id: str

    def check_manifest(self, manifest: DeltaManifest, side: Side = "target") -> None:
        """Refuse a manifest whose ``side`` is not the signed content."""
        if not self.covers(manifest, side):
            raise SignatureError(
                f"the delta that would produce {self.statement.version} of "
                f"{self.statement.model!r} makes other tensors or files than its signature "
                "covers; the store was altered: nothing was applied, publish the version again"
            )

    def covers(self, manifest: DeltaManifest, side: Side = "target") -> bool:
        """Whether ``side`` of ``manifest`` is exactly the signed content (its ids checked)."""
        check_version_ids(manifest)
        layout = manifest.layout(side)
        return side_digest(manifest.tensors, side, layout) == self.statement.digest


def sign_version(
    catalog: Catalog,
    model: str,
    version: str,
    key: SigningKey,
    *,
    names: Iterable[str] = (),
    origin: str | None = None,
) -> VersionStatement:
    """Sign ``version`` (its content read back from the store's manifest, checked) with
    ``key``; names the key already signed for this version are kept, ``names`` get a new
    sequence number."""
    digest = version_digest_in_store(catalog, model, version)
    return sign_digest(catalog, model, version, digest, key, names=names, origin=origin)


def sign_digest(
    catalog: Catalog,
    model: str,
    version: str,
    digest: str,
    key: SigningKey,
    *,
    names: Iterable[str] = (),
    origin: str | None = None,
    namespace: str | None = None,
) -> VersionStatement:
    """Sign ``digest`` as the content of ``version`` in this store (and, for the operator,
    ``namespace``), which the caller read from a checked manifest (:func:`checked_manifest`)."""
    public = key.public
    uri = catalog.backend.uri
    existing = _read_record(catalog, model, version, public.key_id)
    kept: dict[str, int] = {}
    if existing is not None:
        earlier = open_statement(existing, public, outdated_ok=True)
        if earlier is not None and (
            earlier.store,
            earlier.namespace,
            earlier.model,
            earlier.version,
            earlier.digest,
        ) == (uri, namespace, model, version, digest):
            kept = dict(earlier.names)
    fresh = {name: _next_sequence(catalog, model, name, public) for name in names}
    statement = VersionStatement(
        store=uri,
        namespace=namespace,
        model=model,
        version=version,
        digest=digest,
        names={**kept, **fresh},
        origin=origin,
    )
    catalog.write_bytes(
        keys.signature_key(model, version, public.key_id),
        dump(seal(statement, key)),
        create_only=False,
    )
    log.info("store.signed", model=model, version=version, key_id=public.key_id)
    return statement


def seal(statement: VersionStatement, key: SigningKey) -> SignatureRecord:
    """The record of ``statement`` signed by ``key``: the exact bytes signed, and the signature."""
    payload = dump(statement)
    return SignatureRecord(
        key_id=key.public.key_id,
        statement=base64.b64encode(payload).decode(),
        signature=base64.b64encode(key.sign(_DOMAIN + payload)).decode(),
    )


def _next_sequence(catalog: Catalog, model: str, name: str, key: PublicKey) -> int:
    """A sequence number for ``name`` above any this key gave it where it points now, and at
    least the time in microseconds (so a re-signed older version still moves forward)."""
    floor = time.time_ns() // 1000
    current = catalog.read_name(model, name)
    record = _read_record(catalog, model, current.version, key.key_id) if current else None
    earlier = open_statement(record, key, outdated_ok=True) if record is not None else None
    if earlier is not None:
        floor = max(floor, earlier.names.get(name, 0) + 1)
    return floor


class Expected(TypedDict, total=False):
    """What a verifier expects of a statement beyond its key, model and version."""

    name: str | None  # the version was chosen by this name
    namespace: str | None  # the Kubernetes namespace the verifier serves
    sequences: NameSequences | None  # the name sequences this verifier accepted before


def signed_statement(
    catalog: Catalog,
    model: str,
    version: str,
    trusted: Sequence[PublicKey],
    *,
    name: str | None = None,
    namespace: str | None = None,
    sequences: NameSequences | None = None,
) -> SignedTarget:
    """The statement of ``version`` signed by one of ``trusted`` for this store (and, when the
    verifier serves ``namespace``, for it or for any namespace); when the version was chosen by
    ``name``, naming it at a sequence ``sequences`` accepts. :class:`SignatureError`
    otherwise."""
    uri = catalog.backend.uri
    bad = 0
    outdated: SignatureError | None = None
    refused: SignatureError | None = None  # a genuine statement, but not for this use
    for key in {key.key_id: key for key in trusted}.values():
        record = _read_record(catalog, model, version, key.key_id)
        if record is None:
            continue
        try:
            statement = open_statement(record, key)
        except SignatureError as exc:  # another accepted key may have signed it anew
            outdated = exc
            continue
        if statement is None or (statement.model, statement.version) != (model, version):
            bad += 1
            continue
        try:
            _check_binding(statement, uri, namespace)
            if name is not None:
                _check_name(statement, uri, name)
                if sequences is not None:
                    sequences.accept(uri, model, name, statement.names[name], version)
        except SignatureError as exc:  # another accepted key may have signed it for here
            refused = refused or exc
            continue
        return SignedTarget(statement, key.key_id)
    accepted = ", ".join(key.key_id[:16] for key in trusted)
    if refused is not None:
        raise refused
    if outdated is not None:
        raise SignatureError(f"{uri}: {version} of {model!r}: {outdated}")
    if bad:
        raise SignatureError(
            f"{uri}: the signature of {version} of {model!r} does not verify "
            f"with the accepted key(s) ({accepted}); the signature or the version was altered: "
            "nothing was applied"
        )
    raise SignatureError(
        f"{uri}: {version} of {model!r} is not signed by an accepted key "
        f"({accepted}): nothing was applied; sign it "
        "with `deltaroll sign` or `deltaroll push --sign-key`, or accept its publisher's key"
    )


def _check_binding(statement: VersionStatement, uri: str, namespace: str | None) -> None:
    """Refuse a statement made for another store, or for another namespace than the one the
    verifier serves (a tenant's ModelDelta cannot vouch for another team's model)."""
    where = f"{uri}: {statement.version} of {statement.model!r}"
    if statement.store != uri:
        made = statement.store or "a local delta directory"
        raise SignatureError(
            f"{where} was signed for {made}, not for this store: it was copied here by someone "
            "without the publisher key; nothing was applied, sign it in this store "
            "(`deltaroll sign`)"
        )
    if namespace is not None and statement.namespace not in (None, namespace):
        raise SignatureError(
            f"{where} was signed for namespace {statement.namespace!r}, not {namespace!r} where "
            "it is deployed: nothing was applied; publish it from a ModelDelta in this namespace "
            "or sign it with a key of your own"
        )


def _check_name(statement: VersionStatement, uri: str, name: str) -> None:
    if name not in statement.names:
        raise SignatureError(
            f"{uri}: name {name!r} points at {statement.version} of {statement.model!r}, but "
            f"the signature of {statement.version} does not name it (it names "
            f"{', '.join(statement.names) or 'nothing'}): the name was moved by someone "
            "without the publisher key; deploy the version id or sign the name"
        )


def version_digest_in_store(catalog: Catalog, model: str, version: str) -> str:
    """The whole version digest of ``version``, from the manifest of the delta (or anchor)
    that produces it, that manifest checked against its record and its own entries."""
    _, manifest = checked_manifest(catalog, model, version)
    return side_digest(manifest.tensors, "target", manifest.target_layout)


def checked_manifest(
    catalog: Catalog, model: str, version: str
) -> tuple[DeltaRecord, DeltaManifest]:
    """The record and the parsed manifest of the delta (or anchor) that produces ``version``:
    the manifest's bytes are the ones its record names, it leads to ``version``, and its version
    ids are the digests of its own entries."""
    record = catalog.read_version(model, version)
    delta: DeltaRecord = (
        record.delta if record.delta is not None else catalog.read_anchor(model, version).delta
    )
    where = f"the manifest of {delta.base_version or 'nothing'} -> {version}"
    data = catalog.read_bytes(keys.object_key(model, delta.manifest.digest))
    if hashlib.sha256(data).hexdigest() != delta.manifest.digest:
        raise InvalidManifestError(
            f"{catalog.backend.uri}: {where} does not match its record's digest; the store was "
            "altered: push the version again"
        )
    manifest = parse_delta_manifest(data, where)
    if manifest.target_version != version:
        raise InvalidManifestError(
            f"{catalog.backend.uri}: {where} leads to {manifest.target_version}; the store was "
            "altered: push the version again"
        )
    listed = [ObjectRef(digest=o.digest, size=o.size) for o in manifest.objects]
    if (manifest.base_version, listed) != (delta.base_version, delta.payload):
        raise InvalidManifestError(
            f"{catalog.backend.uri}: {where} starts from another version or lists other objects "
            "than its record; the store was altered: push the version again"
        )
    check_version_ids(manifest)
    return delta, manifest


def _read_record(catalog: Catalog, model: str, version: str, key_id: str) -> SignatureRecord | None:
    key = keys.signature_key(model, version, key_id)
    try:
        data = catalog.read_bytes(key)
    except ObjectNotFoundError:
        return None
    try:
        return load(SignatureRecord, data, uri=catalog.backend.uri, key=key)
    except InvalidManifestError:
        return SignatureRecord(key_id=key_id, statement="", signature="")  # verifies as bad


def open_statement(
    record: SignatureRecord, key: PublicKey, *, outdated_ok: bool = False
) -> VersionStatement | None:
    """The statement of a record if ``key`` signed exactly its bytes, else None (a statement
    an older Deltaroll signed is an error saying so, or None with ``outdated_ok``)."""
    try:
        payload = base64.b64decode(record.statement, validate=True)
        signature = base64.b64decode(record.signature, validate=True)
    except (ValueError, binascii.Error):
        return None
    if record.key_id != key.key_id or not key.verify(signature, _DOMAIN + payload):
        return None
    try:
        return VersionStatement.model_validate_json(payload)
    except ValidationError:
        if _OUTDATED_SCHEMA in payload and not outdated_ok:
            raise SignatureError(
                f"a signature by key {key.key_id[:16]} was made by an older Deltaroll (it binds "
                "no store and no name sequence): sign the version again with `deltaroll sign`"
            ) from None
        return None
