"""Vouching for a version someone else computed: what a signer checks from the store's records
alone before it signs, without downloading the model.

The operator signs what a tenant's ModelDelta Job published. It cannot recompute the diff (that
takes both checkpoints and, for a large model, a GPU), so it checks what costs O(manifest):

- the manifest object is the one the version's record names (SHA-256), leads from the record's
  parent to this version, lists the record's objects, and its version ids are the digests of
  its own entries (the checks every signature makes, :func:`.signatures.checked_manifest`);
- the version starts from the parent the ModelDelta asked for, and its name points at it;
- every object of the delta is in the store, so what is signed can be pulled;
- every file beside the weights has a name the default policy allows (no code).

Not checked: that the objects decode to tensors with the manifest's BLAKE3 digests (every
pod's apply checks the bytes it writes, and refuses a delta that lies), nor that the weights are
any good. A signature made here says "a ModelDelta this operator watches published exactly this
content", not more.
"""

from __future__ import annotations

from deltaroll.checkpoint.aux_policy import DEFAULT_AUX_POLICY
from deltaroll.checkpoint.digests import side_digest
from deltaroll.store import keys
from deltaroll.store.catalog import Catalog
from deltaroll.store.errors import InconsistentVersionError
from deltaroll.store.manifests import VersionStatement
from deltaroll.store.signatures import checked_manifest, sign_digest
from deltaroll.store.signing import SigningKey


def vouch_and_sign(
    catalog: Catalog,
    model: str,
    version: str,
    key: SigningKey,
    *,
    parent: str | None,
    name: str,
    origin: str,
    namespace: str | None = None,
) -> VersionStatement:
    """Sign ``version`` (naming ``name``, for this store and ``namespace``) once it is
    consistent with its records and with ``parent``; :class:`InconsistentVersionError`
    (nothing signed) otherwise."""
    delta, manifest = checked_manifest(catalog, model, version)
    uri = catalog.backend.uri
    where = f"{uri}: {version} of {model!r}"
    recorded = catalog.read_version(model, version).parent
    if recorded != parent or delta.base_version not in (None, parent):
        raise InconsistentVersionError(
            f"{where} was published from {recorded or 'nothing'}, not from the parent "
            f"{parent or 'nothing'} that was asked for: not signed"
        )
    named = catalog.read_name(model, name)
    if named is None or named.version != version:
        points = named.version if named is not None else "nothing"
        raise InconsistentVersionError(
            f"{where}: the name {name!r} points at {points}, not at this version: not signed"
        )
    wanted = {keys.object_key(model, ref.digest) for ref in [delta.manifest, *delta.payload]}
    missing = sorted(wanted - catalog.backend.existing(sorted(wanted)))
    if missing:
        raise InconsistentVersionError(
            f"{where} lists {len(missing)} object(s) the store does not hold (first: "
            f"{missing[0]}): not signed; publish it again"
        )
    layout = manifest.layout("target")
    code = [
        a.name
        for a in (layout.aux_files if layout else [])
        if not DEFAULT_AUX_POLICY.allows(a.name)
    ]
    if code:
        raise InconsistentVersionError(
            f"{where} ships files that are not data files ({', '.join(sorted(code))}): not "
            "signed; sign it by hand (`deltaroll sign`) if an admin allows them"
        )
    digest = side_digest(manifest.tensors, "target", layout)
    return sign_digest(
        catalog, model, version, digest, key, names=[name], origin=origin, namespace=namespace
    )
