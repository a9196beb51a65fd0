"""``deltaroll push | pull | log | gc | squash``: the model store from the command line.

STORE is a store URI: file:///path, s3://bucket/prefix (configured by the AWS_* environment) or
hf://buckets/<namespace>/<bucket>/prefix (HF_TOKEN). Credentials come only from the environment
and never appear in output.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from deltaroll.cli.aux_options import AllowAutoMapOpt, AllowAuxOpt, aux_policy
from deltaroll.cli.output import JsonOpt, emit, progress_bar

if TYPE_CHECKING:
    from deltaroll.store import Store
    from deltaroll.store.manifests import VersionStatement
    from deltaroll.store.signing import SigningKey

StoreArg = Annotated[
    str,
    typer.Argument(
        help="Store URI: file:///path, s3://bucket/prefix, hf://buckets/ns/name/prefix."
    ),
]
ModelArg = Annotated[str, typer.Argument(help="Model name in the store, e.g. llama-8b.")]
SignKeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--sign-key", help="Sign the published version with this Ed25519 private key (PEM)."
    ),
]
VerifyKeyOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--verify-key",
        help="Accept only versions signed by this Ed25519 public key (PEM, or a directory of "
        "*.pem); repeat it to accept several (key rotation).",
    ),
]


def register(app: typer.Typer) -> None:
    """Add the store commands."""
    for name, command in (
        ("push", push),
        ("pull", pull),
        ("log", log),
        ("gc", gc),
        ("squash", squash),
        ("sign", sign),
        ("upgrade-store", upgrade_store),
    ):
        app.command(name)(command)


def _open(uri: str) -> Store:
    """The store at ``uri``. Logs go to stderr at warning level unless DELTAROLL_LOG_LEVEL says
    otherwise, so people see results and retries, not per-object chatter."""
    from deltaroll.logs import configure_logging
    from deltaroll.store import Store

    configure_logging(level=os.environ.get("DELTAROLL_LOG_LEVEL", "warning"))
    return Store(uri)


def push(
    store: StoreArg,
    model: ModelArg,
    checkpoint: Annotated[Path, typer.Argument(help="The checkpoint to publish (file or folder).")],
    base: Annotated[
        Path | None,
        typer.Option("--base", help="The published checkpoint this one was trained from."),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="A human name, e.g. step-120.")] = None,
    anchor: Annotated[
        bool, typer.Option("--anchor", help="Also store a full snapshot (an anchor).")
    ] = False,
    force_name: Annotated[
        bool, typer.Option("--force-name", help="Move --name if it points at another version.")
    ] = False,
    sign_key: SignKeyOpt = None,
    allow_aux_file: AllowAuxOpt = None,
    allow_auto_map: AllowAutoMapOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Publish CHECKPOINT as a new version of MODEL: a delta from --base, and/or an anchor."""
    from deltaroll.store.signing import load_signing_key

    signer = load_signing_key(sign_key) if sign_key is not None else None  # before any upload
    opened = _open(store)
    with progress_bar("uploading", None) as advance:
        result = opened.push(
            model,
            checkpoint,
            base=base,
            anchor=anchor,
            name=name,
            force_name=force_name,
            progress=advance,
            aux_policy=aux_policy(allow_aux_file, allow_auto_map),
        )
    if signer is not None:
        opened.sign(model, result.version, signer, names=[name] if name else [], origin="cli")
    state = "published" if result.published else "already published"
    emit(
        {**asdict(result), "signed_by": signer.public.key_id if signer else None},
        as_json=as_json,
        human=f"{state} {result.version} (parent {result.parent or '-'}), "
        f"uploaded {result.uploaded_bytes} bytes",
    )


def pull(
    store: StoreArg,
    model: ModelArg,
    version: Annotated[str, typer.Argument(help="Version id, unique id prefix, or name.")],
    out_dir: Annotated[
        Path, typer.Option("-o", "--out-dir", help="Where to write the checkpoint.")
    ],
    base: Annotated[
        Path | None,
        typer.Option("--base", help="A local checkpoint of any version, to pull deltas from."),
    ] = None,
    keep_cache: Annotated[
        bool, typer.Option("--keep-cache", help="Keep downloaded objects in the local cache.")
    ] = False,
    verify_key: VerifyKeyOpt = None,
    allow_aux_file: AllowAuxOpt = None,
    allow_auto_map: AllowAutoMapOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Write VERSION of MODEL to OUT_DIR, downloading only the deltas on the cheapest path."""
    from deltaroll.store.name_sequences import NameSequences, default_sequences_path
    from deltaroll.store.signing import load_public_keys

    trusted = load_public_keys(verify_key or [])
    sequences = NameSequences(default_sequences_path()) if trusted else None
    with progress_bar("downloading", None) as advance:
        result = _open(store).pull(
            model,
            version,
            out_dir,
            base=base,
            keep_cache=keep_cache,
            progress=advance,
            verify_keys=trusted,
            name_sequences=sequences,
            aux_policy=aux_policy(allow_aux_file, allow_auto_map),
        )
    report: dict[str, Any] = {**asdict(result), "out_dir": str(result.out_dir)}
    emit(
        report,
        as_json=as_json,
        human=f"{result.version} -> {result.out_dir} via {' -> '.join(result.path) or '-'}, "
        f"downloaded {result.downloaded_bytes} bytes",
    )


def log(store: StoreArg, model: ModelArg, as_json: JsonOpt = False) -> None:
    """List the versions of MODEL, parents before children."""
    entries = _open(store).log(model)
    lines = [
        f"{e.version}  parent={e.parent or '-':<32}  delta={e.delta_bytes:>12}  "
        f"{'anchor=' + str(e.anchor_bytes) if e.anchored else '':<20} {' '.join(e.names)}"
        for e in entries
    ]
    emit(
        {"model": model, "versions": [asdict(e) for e in entries]},
        as_json=as_json,
        human="\n".join(lines) if lines else f"{model}: no versions",
    )


def gc(
    store: StoreArg,
    model: ModelArg,
    keep: Annotated[
        list[str], typer.Option("--keep", help="A version or name to keep (repeatable).")
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only report.")] = False,
    grace_seconds: Annotated[
        int,
        typer.Option(
            "--grace-seconds",
            min=0,
            help="Never delete objects younger than this, nor staged shards of a sharded "
            "computation written within it (protects pushes and Jobs in progress).",
        ),
    ] = 3600,
    as_json: JsonOpt = False,
) -> None:
    """Delete what the kept versions (and what they depend on) do not need."""
    result = _open(store).gc(model, keep, dry_run=dry_run, grace=timedelta(seconds=grace_seconds))
    verb = "would delete" if dry_run else "deleted"
    emit(
        asdict(result),
        as_json=as_json,
        human=f"kept {len(result.kept_versions)} versions; {verb} "
        f"{len(result.deleted_versions)} versions, {len(result.deleted_anchors)} anchors, "
        f"{result.deleted_staging_parts} staged parts, "
        f"{result.deleted_objects} objects ({result.freed_bytes} bytes)",
    )


def squash(
    store: StoreArg,
    model: ModelArg,
    from_version: Annotated[str, typer.Argument(metavar="FROM", help="The older version.")],
    to_version: Annotated[str, typer.Argument(metavar="TO", help="The newer version.")],
    as_json: JsonOpt = False,
) -> None:
    """Give TO one direct delta from FROM instead of the chain between them."""
    with progress_bar("squashing", None) as advance:
        result = _open(store).squash(model, from_version, to_version, progress=advance)
    emit(
        asdict(result),
        as_json=as_json,
        human=f"{result.version} now follows {result.parent} directly: "
        f"{result.delta_bytes} bytes instead of {result.previous_chain_bytes}",
    )


def sign(
    target: Annotated[
        str, typer.Argument(metavar="STORE|DELTA", help="A store URI, or a local delta directory.")
    ],
    model: Annotated[str | None, typer.Argument(help="Model name (with a STORE).")] = None,
    version: Annotated[
        str | None, typer.Argument(help="Version id, unique id prefix, or name (with a STORE).")
    ] = None,
    key: Annotated[
        Path | None, typer.Option("--key", help="The publisher's Ed25519 private key (PEM).")
    ] = None,
    name: Annotated[
        list[str] | None,
        typer.Option("--name", help="A name the signature vouches for (repeatable)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Sign a published VERSION of MODEL in STORE (its content is read back from the store and
    checked), or the version a local DELTA directory produces (for `apply --verify-key`)."""
    from deltaroll.store.errors import StoreError
    from deltaroll.store.signing import load_signing_key

    if key is None:
        raise StoreError("pass the private key to sign with: --key PRIVATE.pem")
    signer = load_signing_key(key)
    if model is None:
        statement = _sign_delta_dir(Path(target), signer, names=name or [])
    elif version is None:
        raise StoreError("sign STORE MODEL VERSION: name the version to sign")
    else:
        statement = _open(target).sign(model, version, signer, names=name or [], origin="cli")
    emit(
        {**statement.model_dump(by_alias=True), "key_id": signer.public.key_id},
        as_json=as_json,
        human=f"signed {statement.version} of {statement.model or target} with key "
        f"{signer.public.key_id[:16]}",
    )


def upgrade_store(store: StoreArg, model: ModelArg, as_json: JsonOpt = False) -> None:
    """Convert MODEL's versions written by an older Deltaroll (delta format v1) to today's
    format: each version is rebuilt, checked and pushed again, names follow. Safe to run again
    after a crash; v1 records are kept under MODEL/legacy-v1/."""
    from deltaroll.store.upgrade import upgrade_model

    result = upgrade_model(_open(store), model)
    lines = [f"{old} -> {new}" for old, new in result.versions.items()]
    lines += [f"name {name} -> {new}" for name, new in result.names.items()]
    emit(
        {"model": model, "versions": result.versions, "names": result.names},
        as_json=as_json,
        human="\n".join(lines) if lines else f"{model}: no v1 versions to convert",
    )


def _sign_delta_dir(delta: Path, signer: SigningKey, *, names: list[str]) -> VersionStatement:
    from deltaroll.checkpoint import read_delta_manifest
    from deltaroll.store.delta_signatures import sign_delta
    from deltaroll.store.errors import StoreError

    if names:
        raise StoreError("--name signs a name in a store; a delta directory has none")
    return sign_delta(delta, read_delta_manifest(delta), signer)
