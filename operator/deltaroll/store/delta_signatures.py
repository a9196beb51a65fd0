"""Signatures carried by a local delta directory, for ``deltaroll apply --verify-key``.

A delta directory (``deltaroll diff -o``) has no store to keep a signature in, so it carries
its own: ``<delta>/signatures/<key id>.json``, the store's :class:`~.manifests.SignatureRecord`
over a statement of the version the delta produces (its target), bound to no store and no model.
:func:`signed_delta` checks one before an apply touches a weight: a key the verifier accepts
signed it, and its version and 256-bit digest are those of the side the apply would produce, so
a record copied from another delta or a manifest edited after signing is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

from deltaroll.checkpoint.digests import check_version_ids, side_digest
from deltaroll.checkpoint.manifest import DeltaManifest
from deltaroll.checkpoint.staging import write_file_atomically
from deltaroll.checkpoint.transform import Side
from deltaroll.store.errors import InvalidManifestError, SignatureError
from deltaroll.store.manifests import SignatureRecord, VersionStatement, dump, load
from deltaroll.store.signatures import SignedTarget, open_statement, seal
from deltaroll.store.signing import PublicKey, SigningKey

SIGNATURES_DIR: Final = "signatures"
_MAX_RECORD_BYTES: Final = 64 << 10


def sign_delta(delta_dir: Path, manifest: DeltaManifest, key: SigningKey) -> VersionStatement:
    """Sign the target of the delta at ``delta_dir`` (its ``manifest``, read and checked)."""
    check_version_ids(manifest)
    statement = VersionStatement(
        version=manifest.target_version,
        digest=side_digest(manifest.tensors, "target", manifest.target_layout),
        origin="cli",
    )
    folder = Path(delta_dir) / SIGNATURES_DIR
    folder.mkdir(exist_ok=True)
    write_file_atomically(folder / f"{key.public.key_id}.json", dump(seal(statement, key)))
    return statement


def signed_delta(
    delta_dir: Path, manifest: DeltaManifest, trusted: Sequence[PublicKey], side: Side
) -> SignedTarget:
    """The signature by one of ``trusted`` that covers what applying ``delta_dir`` produces
    (``side`` of its ``manifest``); :class:`SignatureError` otherwise."""
    produced = manifest.target_version if side == "target" else manifest.base_version
    check_version_ids(manifest)
    digest = side_digest(manifest.tensors, side, manifest.layout(side))
    accepted = ", ".join(key.key_id[:16] for key in trusted)
    found: list[str] = []
    bad = 0
    for key in {key.key_id: key for key in trusted}.values():
        path = Path(delta_dir) / SIGNATURES_DIR / f"{key.key_id}.json"
        if not path.exists():
            continue
        statement = _statement(path, key)
        if statement is None:
            bad += 1
        elif (statement.version, statement.digest) == (produced, digest):
            return SignedTarget(statement, key.key_id)
        else:
            found.append(statement.version)
    if found:
        raise SignatureError(
            f"{delta_dir}: its signature vouches for another version ({found[0]}) than the "
            f"{produced or 'nothing'} this apply would produce: the signature was copied from "
            "another delta or the delta was changed; nothing was applied"
        )
    if bad:
        raise SignatureError(
            f"{delta_dir}: its signature does not verify with the accepted key(s) ({accepted}); "
            "the signature was altered: nothing was applied"
        )
    raise SignatureError(
        f"{delta_dir} carries no signature by an accepted key ({accepted}): "
        "nothing was applied; sign it with `deltaroll sign DELTA --key PRIVATE.pem`, or "
        "accept its publisher's key"
    )


def _statement(path: Path, key: PublicKey) -> VersionStatement | None:
    """The statement ``key`` signed in the record at ``path``, if it verifies."""
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_RECORD_BYTES + 1)
        record = load(SignatureRecord, data, uri=str(path.parent), key=path.name)
    except (OSError, InvalidManifestError):
        return None
    return open_statement(record, key, outdated_ok=True)
