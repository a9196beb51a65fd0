"""``pull``: bring a checkpoint to a wanted version by the cheapest path through the graph.

Every object on the path is fetched (concurrently, verified, into the object cache) before
anything is applied, so a corrupt or missing object stops the pull with nothing written. The
first step writes a new checkpoint into a working directory next to ``out_dir`` (the puller's
base is never modified); later steps patch that copy in place (journaled by the checkpoint
layer); the finished directory is renamed to ``out_dir``. An interrupted pull leaves the verified
objects in the cache, so running it again downloads only what is still missing."""

from __future__ import annotations

import hashlib
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from deltaroll.checkpoint import apply_delta, checkpoint_version
from deltaroll.checkpoint.aux_policy import DEFAULT_AUX_POLICY, AuxPolicy
from deltaroll.checkpoint.manifest import MANIFEST_NAME, DeltaManifest, parse_delta_manifest
from deltaroll.checkpoint.objects import OBJECTS_DIR
from deltaroll.store.aliases import VERSION_LIKE, resolve
from deltaroll.store.backends import ProgressCallback
from deltaroll.store.cache import ObjectCache
from deltaroll.store.catalog import Catalog
from deltaroll.store.errors import (
    InvalidManifestError,
    NoPathError,
    StoreError,
    VersionNotFoundError,
)
from deltaroll.store.graph import Plan, Step, VersionGraph
from deltaroll.store.manifests import DeltaRecord, ObjectRef, VersionManifest
from deltaroll.store.name_sequences import NameSequences
from deltaroll.store.scope_prune import prune_unused_scopes
from deltaroll.store.signatures import SignedTarget, signed_statement
from deltaroll.store.signing import PublicKey
from deltaroll.store.transfer import download_objects

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class PullResult:
    version: str
    path: list[str]  # versions traversed, from the local start (if any) to the wanted version
    downloaded_bytes: int
    steps: list[str]  # "anchor" / "forward" / "reverse", one per applied delta
    out_dir: Path


def load_graph(catalog: Catalog, model: str) -> VersionGraph:
    return VersionGraph(catalog.all_versions(model), catalog.all_anchors(model))


def plan_pull(
    catalog: Catalog, model: str, version: str, have: Sequence[str], cache: ObjectCache
) -> Plan:
    """The cheapest plan to ``version`` from ``have``; objects already cached cost nothing.

    A puller that holds the version's parent or child (a fleet moving one version on, or
    rolling one back) takes the delta between them without reading the model's graph: a
    version then costs each pod its own record and its neighbour's, not a listing of every
    version and anchor (which grows with the history). Only an anchor could be cheaper than
    that one delta, and only when the delta is dense; a delta whose uncached bytes exceed half
    its checkpoint is planned on the whole graph."""

    def cost(delta: DeltaRecord) -> int:
        return sum(ref.size for ref in delta.objects if not cache.has(ref.digest))

    record = published_version(catalog, model, version)
    if version in have:
        return Plan(version, version, (), 0)
    step = adjacent_step(catalog, model, record, have)
    if step is not None and 2 * (direct := cost(step.delta)) <= step.delta.full_bytes:
        return Plan(step.source, version, (step,), direct)
    plan = load_graph(catalog, model).plan(version, have, cost=cost)
    if plan is None:
        raise NoPathError(
            f"{catalog.backend.uri}: no chain of deltas or anchors leads to {version} of "
            f"{model!r} from what is available locally; pass --base with a checkpoint of a "
            "connected version, or push an anchor of an ancestor"
        )
    return plan


def published_version(catalog: Catalog, model: str, version: str) -> VersionManifest:
    """The record of ``version``; :class:`VersionNotFoundError` when it is not published (a gc
    may have removed it since it was resolved)."""
    record = catalog.find_version(model, version)
    if record is None:
        raise VersionNotFoundError(
            f"{catalog.backend.uri}: {model!r} has no version {version} (garbage-collected?); "
            "see `deltaroll log STORE MODEL`"
        )
    return record


def adjacent_step(
    catalog: Catalog, model: str, record: VersionManifest, have: Sequence[str]
) -> Step | None:
    """The one delta between the version of ``record`` and a version in ``have`` (its parent:
    forward, from ``record`` alone; its child: reverse, from the child's record); None when
    neither is held."""
    if record.parent in have and record.delta is not None:
        return Step("forward", record.parent, record.version, record.delta)
    for held in sorted(set(have)):
        child = catalog.find_version(model, held)
        if child is not None and child.parent == record.version and child.delta is not None:
            return Step("reverse", held, record.version, child.delta)
    return None


def pull(
    catalog: Catalog,
    model: str,
    ref: str,
    out_dir: Path,
    *,
    cache: ObjectCache,
    base: Path | None = None,
    keep_cache: bool = False,
    progress: ProgressCallback | None = None,
    verify_keys: Sequence[PublicKey] = (),
    name_sequences: NameSequences | None = None,
    aux_policy: AuxPolicy = DEFAULT_AUX_POLICY,
) -> PullResult:
    """Materialize version ``ref`` of ``model`` at ``out_dir`` (which must not exist); with
    ``verify_keys``, only a version one of them signed for this store (checked before anything
    is fetched, and against the manifest that produces it before anything is written), and a
    name only at a sequence ``name_sequences`` accepts."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise StoreError(f"{out_dir} already exists; choose a new output directory or remove it")
    version = resolve(catalog, model, ref)
    named = chosen_name(catalog, model, ref)
    signed = (
        signed_statement(catalog, model, version, verify_keys, name=named, sequences=name_sequences)
        if verify_keys
        else None
    )
    have = [checkpoint_version(Path(base))] if base is not None else []
    plan = plan_pull(catalog, model, version, have, cache)
    refs = [obj for step in plan.steps for obj in step.delta.objects]
    downloaded = download_objects(
        catalog.backend, model, refs, cache, policy=catalog.policy, progress=progress
    )
    if signed is not None:
        check_signed_plan(signed, plan, cache)
    work = out_dir.parent / f".{out_dir.name}.pull-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    try:
        result_dir = _apply_plan(plan, base, work, cache, aux_policy)
        result_dir.rename(out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        cache.release(obj.digest for obj in refs)
    if not keep_cache:  # unless another process holds them
        cache.prune(among=[obj.digest for obj in refs])
        prune_unused_scopes(cache.root)
    log.info("store.pulled", model=model, version=version, path=plan.path, bytes=downloaded)
    return PullResult(
        version=version,
        path=plan.path,
        downloaded_bytes=downloaded,
        steps=[step.kind for step in plan.steps],
        out_dir=out_dir,
    )


def read_delta(step: Step, cache: ObjectCache) -> tuple[DeltaManifest, bytes]:
    """The manifest of a step's delta (fetched into the cache with its objects), checked against
    the store's record: the versions it leads between and the objects it needs must be the
    record's, so a store never gets one delta fetched and another applied. The cached bytes
    are checked against the record's digest here: a file is not trusted for being in a cache."""
    path = cache.path(step.delta.manifest.digest)
    data = path.read_bytes()
    where = f"the delta {step.delta.base_version} -> {step.delta.target_version}"
    if hashlib.sha256(data).hexdigest() != step.delta.manifest.digest:
        path.unlink(missing_ok=True)
        raise InvalidManifestError(
            f"{where}: its cached manifest does not match the record's digest; it was removed "
            "from the cache and nothing was applied: run again to fetch it"
        )
    manifest = parse_delta_manifest(data, where)
    listed = [ObjectRef(digest=o.digest, size=o.size) for o in manifest.objects]
    if (manifest.base_version, manifest.target_version, listed) != (
        step.delta.base_version,
        step.delta.target_version,
        step.delta.payload,
    ):
        raise InvalidManifestError(
            f"{where}: its manifest object leads between other versions or lists other objects "
            "than the store's record; the store was altered: push the version again"
        )
    return manifest, data


def chosen_name(catalog: Catalog, model: str, ref: str) -> str | None:
    """``ref`` when it resolves as a name (a signature must then name it), else None."""
    if VERSION_LIKE.fullmatch(ref) or catalog.read_name(model, ref) is None:
        return None
    return ref


def check_signed_plan(signed: SignedTarget, plan: Plan, cache: ObjectCache) -> None:
    """Refuse a plan whose last delta does not produce the signed content (its objects are in
    the cache); an empty plan keeps a checkpoint that already is the signed version id."""
    if not plan.steps:
        return
    last = plan.steps[-1]
    check_signed_step(signed, last, read_delta(last, cache)[0])


def check_signed_step(signed: SignedTarget, step: Step, manifest: DeltaManifest) -> None:
    """Refuse ``step`` (the plan's last, its ``manifest`` already read) unless it produces the
    signed content."""
    signed.check_manifest(manifest, "base" if step.reverse else "target")


def materialize_delta(step: Step, cache: ObjectCache, delta_dir: Path) -> DeltaManifest:
    """Rebuild a delta directory (the checked manifest, objects linked from the cache); returns
    its manifest, parsed, for the apply (parsing 100,000 tensors once is enough)."""
    manifest, data = read_delta(step, cache)
    objects = delta_dir / OBJECTS_DIR
    objects.mkdir(parents=True)
    (delta_dir / MANIFEST_NAME).write_bytes(data)
    for ref in step.delta.payload:
        cache.link_into(ref.digest, objects / ref.digest)
    return manifest


def _apply_plan(
    plan: Plan, base: Path | None, work: Path, cache: ObjectCache, aux_policy: AuxPolicy
) -> Path:
    current = work / "checkpoint"
    if not plan.steps:
        assert base is not None  # an empty plan means the base already is the version
        if Path(base).is_dir():
            shutil.copytree(base, current)
        else:
            current.mkdir()
            shutil.copy2(base, current / Path(base).name)
        return current
    for index, step in enumerate(plan.steps):
        delta_dir = work / f"delta-{index}"
        manifest = materialize_delta(step, cache, delta_dir)
        if index == 0:
            source = Path(base) if step.source is not None and base is not None else None
            apply_delta(
                source,
                delta_dir,
                manifest,
                out_dir=current,
                reverse=step.reverse,
                aux_policy=aux_policy,
            )
        else:
            apply_delta(
                current,
                delta_dir,
                manifest,
                in_place=True,
                reverse=step.reverse,
                aux_policy=aux_policy,
            )
        shutil.rmtree(delta_dir)
    return current
