"""The :class:`Store` facade: one typed entry point to a model store, whatever the backend.

    store = Store("s3://bucket/models")
    store.push("llama-8b", Path("ckpt-120"), base=Path("ckpt-110"), name="step-120")
    store.pull("llama-8b", "step-120", Path("out"), base=Path("ckpt-110"))

Each method is a thin call into the module that owns the operation (push, pull, gc, squash,
log); the facade holds what they share: the backend, the retry policy and the object cache.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Unpack

from deltaroll.checkpoint.aux_policy import DEFAULT_AUX_POLICY, AuxPolicy
from deltaroll.redact import remember_secrets
from deltaroll.store.aliases import VERSION_LIKE, resolve, set_name
from deltaroll.store.backends import Backend, ProgressCallback, open_backend
from deltaroll.store.cache import ObjectCache, default_cache_dir
from deltaroll.store.cache_scope import scoped_directory
from deltaroll.store.catalog import Catalog
from deltaroll.store.gc import DEFAULT_GRACE, GcResult, gc
from deltaroll.store.graph import Plan, VersionGraph
from deltaroll.store.log import LogEntry, version_log
from deltaroll.store.manifests import VersionManifest, VersionStatement
from deltaroll.store.name_sequences import NameSequences
from deltaroll.store.publish import PublishOutcome, publish_delta
from deltaroll.store.pull import PullResult, load_graph, plan_pull, pull
from deltaroll.store.push import PushResult, push
from deltaroll.store.retry import DEFAULT_POLICY, RetryPolicy
from deltaroll.store.signatures import Expected, SignedTarget, sign_version, signed_statement
from deltaroll.store.signing import PublicKey, SigningKey
from deltaroll.store.squash import SquashResult, squash
from deltaroll.store.uri import StoreUri, parse_store_uri


class Store:
    """A model store at a URI (``file://``, ``s3://``, ``hf://buckets/...``).

    ``credentials`` maps the environment's variable names (AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_ENDPOINT_URL, AWS_REGION, AWS_ALLOW_HTTP,
    HF_TOKEN, HF_ENDPOINT) to values used instead of the process environment for this store
    only, e.g. a Kubernetes Secret's data read by the operator. Their secret values are scrubbed
    from every error message from then on. None (the default) reads the environment.

    ``cache_dir`` may be shared by many processes and tenants: each Store uses the part of it
    that its URI and credentials select (see :mod:`deltaroll.store.cache`).
    """

    def __init__(
        self,
        uri: str | StoreUri,
        *,
        credentials: Mapping[str, str] | None = None,
        cache_dir: Path | None = None,
        retry: RetryPolicy = DEFAULT_POLICY,
        backend: Backend | None = None,
    ) -> None:
        if credentials is not None:
            remember_secrets(credentials)
        self.location = parse_store_uri(uri) if isinstance(uri, str) else uri
        self.catalog = Catalog(backend or open_backend(self.location, credentials), retry)
        self._cache_dir = cache_dir or default_cache_dir()
        self._credentials = credentials

    @functools.cached_property
    def cache(self) -> ObjectCache:
        """Only objects fetched with this URI and these credentials (a shared cache directory
        must never hand one tenant what another fetched); made on first use, so a Store that
        only reads records never writes to the cache directory."""
        return ObjectCache(scoped_directory(self._cache_dir, self.location, self._credentials))

    @property
    def uri(self) -> str:
        return str(self.location)

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    # reading ----------------------------------------------------------------------------

    def versions(self, model: str) -> dict[str, VersionManifest]:
        return self.catalog.all_versions(model)

    def resolve(self, model: str, ref: str) -> str:
        """The version id of a name, a version id or a unique version-id prefix."""
        return resolve(self.catalog, model, ref)

    def log(self, model: str) -> list[LogEntry]:
        return version_log(self.catalog, model)

    def plan(self, model: str, ref: str, have: list[str] | None = None) -> Plan:
        """How a puller holding versions ``have`` would reach ``ref`` (nothing is fetched)."""
        # an id is not resolved first: the plan reads its record anyway (and names its absence)
        version = ref if VERSION_LIKE.fullmatch(ref) else self.resolve(model, ref)
        return plan_pull(self.catalog, model, version, have or [], self.cache)

    # writing ----------------------------------------------------------------------------

    def push(
        self,
        model: str,
        checkpoint: Path,
        *,
        base: Path | None = None,
        anchor: bool = False,
        name: str | None = None,
        force_name: bool = False,
        progress: ProgressCallback | None = None,
        aux_policy: AuxPolicy = DEFAULT_AUX_POLICY,
    ) -> PushResult:
        return push(
            self.catalog,
            model,
            checkpoint,
            base=base,
            anchor=anchor,
            name=name,
            force_name=force_name,
            progress=progress,
            aux_policy=aux_policy,
        )

    def publish(
        self, model: str, delta_dir: Path, *, progress: ProgressCallback | None = None
    ) -> PublishOutcome:
        """Publish a delta directory computed elsewhere (e.g. by a worker Job)."""
        return publish_delta(self.catalog, model, delta_dir, progress=progress)

    def set_name(self, model: str, name: str, ref: str, *, force: bool = False) -> bool:
        return set_name(self.catalog, model, name, self.resolve(model, ref), force=force)

    def pull(
        self,
        model: str,
        ref: str,
        out_dir: Path,
        *,
        base: Path | None = None,
        keep_cache: bool = False,
        progress: ProgressCallback | None = None,
        verify_keys: Sequence[PublicKey] = (),
        name_sequences: NameSequences | None = None,
        aux_policy: AuxPolicy = DEFAULT_AUX_POLICY,
    ) -> PullResult:
        return pull(
            self.catalog,
            model,
            ref,
            out_dir,
            cache=self.cache,
            base=base,
            keep_cache=keep_cache,
            progress=progress,
            verify_keys=verify_keys,
            name_sequences=name_sequences,
            aux_policy=aux_policy,
        )

    def sign(
        self,
        model: str,
        ref: str,
        key: SigningKey,
        *,
        names: Iterable[str] = (),
        origin: str | None = None,
    ) -> VersionStatement:
        """Sign a published version (its content read back from the store and checked)."""
        return sign_version(
            self.catalog, model, self.resolve(model, ref), key, names=names, origin=origin
        )

    def signed(
        self, model: str, version: str, trusted: Sequence[PublicKey], **expected: Unpack[Expected]
    ) -> SignedTarget:
        """The statement of ``version`` one of ``trusted`` signed for this store, as
        ``expected``; the store's :class:`SignatureError` otherwise."""
        return signed_statement(self.catalog, model, version, trusted, **expected)

    def gc(
        self,
        model: str,
        keep: list[str] | None,
        *,
        drop: Collection[str] = (),
        dry_run: bool = False,
        grace: timedelta = DEFAULT_GRACE,
        live_jobs: Mapping[str, Collection[str]] | None = None,
    ) -> GcResult:
        return gc(
            self.catalog,
            model,
            keep,
            drop=drop,
            dry_run=dry_run,
            grace=grace,
            live_jobs=live_jobs,
        )

    def squash(
        self, model: str, from_ref: str, to_ref: str, *, progress: ProgressCallback | None = None
    ) -> SquashResult:
        return squash(self.catalog, model, from_ref, to_ref, cache=self.cache, progress=progress)

    def graph(self, model: str) -> VersionGraph:
        """The version graph of ``model``: versions, parents and anchors."""
        return load_graph(self.catalog, model)
