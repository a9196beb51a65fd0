"""The HTTP face of the sandbox's Kubernetes API, built on kmock's ``KubernetesScaffold``.

kmock (0.8) gives us discovery (``/api``, ``/apis``, ``/api/v1``, ``/apis/<g>/<v>``, ``/version``)
from its bundled builtin resources, the rendering of ``Status`` errors, and the resources array
that CRDs extend. What it lacks, and an operator depends on, lives here and in the sibling
modules: the object store with resourceVersions and watches (``store``), patches (``patches``),
selectors, CRD schemas, ``/openapi/v3``, the ``pods/log`` subresource, List kinds, watch streams
served as ``application/json;stream=watch`` with bookmarks, and paths kmock's parser trips on
(``/api/v1/namespaces`` answers 500 in kmock 0.8). Requests for objects are served here directly;
everything else falls through to kmock.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp.web
import attrs
import kmock
import structlog
import yaml

from deltaroll_sandbox import kubeconfig
from deltaroll_sandbox.apiserver import discovery, openapi, protobuf, scale, tables, watches
from deltaroll_sandbox.apiserver.builtins import BuiltinAdmission
from deltaroll_sandbox.apiserver.crds import CustomResourceAdmission
from deltaroll_sandbox.apiserver.identity import ADMIN, ANONYMOUS, UserInfo, current_user
from deltaroll_sandbox.apiserver.pod_security.admission import PodSecurityAdmission
from deltaroll_sandbox.apiserver.policies import PolicyAdmission
from deltaroll_sandbox.apiserver.rbac import authorize, verb_of
from deltaroll_sandbox.apiserver.resources import ResourceRegistry, ResourceType
from deltaroll_sandbox.apiserver.statuses import (
    ApiError,
    bad_request,
    method_not_allowed,
    not_found,
)
from deltaroll_sandbox.apiserver.store import (
    PODS,
    Obj,
    Store,
    dry_run,
    field_validation,
)
from deltaroll_sandbox.apiserver.tokens import TokenIssuer

log = structlog.get_logger("deltaroll_sandbox.apiserver")

MAX_BODY_BYTES = 3 * 1024 * 1024
AUDIT_LIMIT = 100_000
INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
# What system:public-info-viewer lets anyone, even without credentials, read.
PUBLIC_PATHS = ("/version", "/healthz", "/livez", "/readyz")
TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"  # noqa: S105 - a path


class PodLogSource(Protocol):
    """What the kubelet offers for ``GET .../pods/<name>/log``."""

    def stream(
        self,
        namespace: str,
        name: str,
        container: str | None,
        previous: bool,
        tail_lines: int | None,
        follow: bool,
    ) -> AsyncIterator[bytes]: ...


@dataclass(frozen=True)
class ApiPath:
    """A parsed object URL: ``/api(s)/<gv>[/namespaces/<ns>]/<plural>[/<name>[/<sub>]]``."""

    group: str
    version: str
    plural: str
    namespace: str | None
    name: str | None
    subresource: str | None
    legacy_watch: bool = False


def parse_api_path(path: str) -> ApiPath | None:
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    legacy_watch = bool(rest) and rest[0] == "watch"
    if legacy_watch:
        rest = rest[1:]
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        return None
    return ApiPath(
        group,
        version,
        rest[0],
        namespace,
        rest[1] if len(rest) > 1 else None,
        rest[2] if len(rest) > 2 else None,
        legacy_watch,
    )


@dataclass(frozen=True)
class AuditRecord:
    """One request as it arrived, as kube-apiserver's audit log keeps it: tests count what a
    client asked for (an idle operator must ask for nothing)."""

    at: float  # time.monotonic()
    method: str
    path: str
    query: str
    user_agent: str

    @property
    def watch(self) -> bool:
        """A watch stream (long-lived; opened again when it ends), not a one-off request."""
        return "watch=true" in self.query or "watch=1" in self.query or "/watch/" in self.path


@attrs.define(kw_only=True)
class SandboxApiServer(kmock.KubernetesScaffold):
    """kmock's scaffold plus a faithful object store; use :func:`serve` to put it on a port."""

    store: Store = attrs.field(init=False)
    tokens: TokenIssuer = attrs.field(init=False)
    pod_logs: PodLogSource | None = attrs.field(default=None)
    # How many writes a watch can resume from; older resourceVersions get 410 Gone.
    history_limit: int = attrs.field(default=20000)
    # The latest requests, oldest first (read it in the server's loop: RunningSandbox.call).
    audit: deque[AuditRecord] = attrs.field(factory=lambda: deque(maxlen=AUDIT_LIMIT))

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.store = Store(ResourceRegistry(self.resources), self.history_limit)
        # Defaulting first, validation last: PodSecurity judges pods as they will be stored.
        self.store.admissions += [
            BuiltinAdmission(),
            CustomResourceAdmission(),
            PodSecurityAdmission(),
        ]
        self.store.validators.append(PolicyAdmission())
        self.tokens = TokenIssuer(self._lookup)
        namespaces = self.store.registry.lookup("", "v1", "namespaces")
        assert namespaces is not None  # bundled with kmock
        for name in INITIAL_NAMESPACES:
            self.store.create(namespaces, None, {"metadata": {"name": name}})

    def _lookup(self, plural: str, namespace: str, name: str) -> Obj | None:
        rtype = self.store.registry.lookup("", "v1", plural)
        return None if rtype is None else self.store.find(rtype, namespace, name)

    def authenticate(self, request: aiohttp.web.BaseRequest) -> UserInfo:
        """The caller, from its bearer token: 401 for a token nobody issued."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return ANONYMOUS
        if token.strip() == kubeconfig.TOKEN:
            return ADMIN
        user = self.tokens.authenticate(token.strip())
        if user is None:
            raise ApiError(status=401, reason="Unauthorized", message="Unauthorized", details={})
        return user

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        path = raw_request.path
        self.audit.append(
            AuditRecord(
                time.monotonic(),
                raw_request.method,
                path,
                raw_request.query_string,
                raw_request.headers.get("User-Agent", ""),
            )
        )
        try:
            user = self.authenticate(raw_request)
            current_user.set(user)
            if user is ANONYMOUS and path not in PUBLIC_PATHS:
                raise ApiError(
                    status=403,
                    reason="Forbidden",
                    message=f'forbidden: User "{user.username}" cannot '
                    f'{raw_request.method.lower()} path "{path}"',
                    details={},
                )
            if path == "/openapi/v3" or path.startswith("/openapi/v3/"):
                return self._serve_openapi(path)
            if path == TOKEN_REVIEWS:
                return await self._serve_token_review(raw_request, user)
            parsed = parse_api_path(path)
            rtype = None
            if parsed is not None:
                rtype = self.store.registry.lookup(parsed.group, parsed.version, parsed.plural)
            if parsed is None or rtype is None:
                return await super().__call__(raw_request)  # discovery, 404s: kmock's own
            return await self._serve_object_request(raw_request, parsed, rtype)
        except ApiError as exc:
            return _status_response(exc)
        except Exception as exc:
            log.exception("apiserver.request_failed", method=raw_request.method, path=path)
            return await self._render_error(exc)

    async def _serve_server_version(self, request: kmock.Request) -> dict[str, Any]:
        # What the sandbox emulates (native sidecars, initial-events bookmarks...), not kmock's k3s.
        return {
            "major": "1",
            "minor": str(discovery.EMULATED_MINOR),
            "gitVersion": f"v1.{discovery.EMULATED_MINOR}.0+deltaroll-sandbox",
            "gitCommit": "",
            "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "",
            "compiler": "python",
            "platform": "linux/amd64",
        }

    async def _serve_apis(self, request: kmock.Request) -> dict[str, Any]:
        return discovery.groups(self.store.registry)

    async def _serve_group(self, request: kmock.Request) -> dict[str, Any]:
        assert request.resource is not None and request.resource.group is not None
        if not any(t.group == request.resource.group for t in self.store.registry):
            raise not_found("groups", request.resource.group)
        return discovery.group(self.store.registry, request.resource.group)

    async def _serve_version(self, request: kmock.Request) -> dict[str, Any]:
        res = request.resource
        assert res is not None and res.group is not None and res.version is not None
        found = discovery.resource_list(self.store.registry, res.group, res.version)
        if found is None:
            raise not_found("groupversions", f"{res.group}/{res.version}")
        return found

    async def _serve_token_review(
        self, request: aiohttp.web.BaseRequest, user: UserInfo
    ) -> aiohttp.web.StreamResponse:
        if request.method != "POST":
            raise method_not_allowed("a TokenReview is created with POST")
        authorize(
            self.store, user, "create", "authentication.k8s.io", "tokenreviews", None, None, None
        )
        return _json(self.tokens.review(await _read_body(request)), status=201)

    def _serve_openapi(self, path: str) -> aiohttp.web.Response:
        if path.rstrip("/") == "/openapi/v3":
            return aiohttp.web.json_response(openapi.index(self.store.registry))
        doc = openapi.document(self.store.registry, path[len("/openapi/v3/") :].strip("/"))
        if doc is None:
            raise not_found("openapi", path)
        return aiohttp.web.json_response(doc)

    async def _serve_object_request(
        self, request: aiohttp.web.BaseRequest, api: ApiPath, rtype: ResourceType
    ) -> aiohttp.web.StreamResponse:
        if api.namespace is not None and not rtype.namespaced:
            raise not_found(rtype.plural, api.name or "", rtype.group)
        query = request.query
        method = request.method
        ns = api.namespace if rtype.namespaced else ""
        watching = api.legacy_watch or query.get("watch") in ("true", "1")
        authorize(
            self.store,
            current_user.get(),
            verb_of(method, api.name is not None, watching),
            rtype.group,
            rtype.plural,
            api.subresource,
            ns or None,
            api.name,
        )
        if api.subresource == "token" and rtype.plural == "serviceaccounts" and api.name:
            if method != "POST":
                raise method_not_allowed("a TokenRequest is created with POST")
            body = await _read_body(request)
            return _json(self.tokens.token_request(ns or "", api.name, body), status=201)
        # Per request (a keep-alive connection may serve several in one task).
        field_validation.set(query.get("fieldValidation", "Ignore"))
        dry_run.set(query.get("dryRun") == "All")
        if api.subresource == "log" and rtype.storage_key == PODS and method == "GET":
            return await self._serve_pod_log(request, rtype, ns or "default", api.name or "")
        if api.subresource == "scale" and rtype.storage_key in scale.SCALABLE and api.name:
            if method == "GET":
                return _json(scale.view(self.store.get(rtype, ns or "", api.name)))
            content_type = request.headers.get("Content-Type", "application/merge-patch+json")
            body = await _read_body(request)
            return _json(
                scale.write(self.store, rtype, ns or "", api.name, method, content_type, body)
            )
        if api.subresource not in (None, "status") or (
            api.subresource == "status" and not rtype.has_status
        ):
            raise not_found(f"{rtype.plural}/{api.subresource}", api.name or "", rtype.group)
        if method == "GET" and watching:
            return await watches.serve(self.store, request, rtype, api.namespace, api.name)
        if method == "GET" and api.name is None:
            return self._serve_list(request, rtype, api.namespace)
        if method == "GET":
            obj = self.store.get(rtype, ns or "", api.name or "")
            if tables.wants_table(request.headers.get("Accept", "")):
                include = query.get("includeObject", "Metadata")
                return _json(tables.table(rtype, [obj], self.store.resource_version, include))
            return _json(obj)
        body = await _read_body(request)
        if method == "POST" and api.name is None:
            return _json(self.store.create(rtype, api.namespace, body), status=201)
        if method == "PUT" and api.name:
            return _json(self.store.replace(rtype, ns or "", api.name, body, api.subresource))
        if method == "PATCH" and api.name:
            content_type = request.headers.get("Content-Type", "application/merge-patch+json")
            if (
                content_type.startswith("application/apply-patch")
                and self.store.find(rtype, ns or "", api.name) is None
            ):
                return _json(self.store.create(rtype, api.namespace, body), status=201)
            return _json(
                self.store.patch(rtype, ns or "", api.name, content_type, body, api.subresource)
            )
        if method == "DELETE" and api.name:
            options = body if isinstance(body, dict) else {}
            if "All" in (options.get("dryRun") or []):
                dry_run.set(True)
            propagation = options.get("propagationPolicy") or query.get("propagationPolicy")
            grace = options.get("gracePeriodSeconds", query.get("gracePeriodSeconds"))
            if options.get("orphanDependents") is True:
                propagation = "Orphan"
            return _json(
                self.store.delete(
                    rtype,
                    ns or "",
                    api.name,
                    propagation,
                    options.get("preconditions"),
                    int(grace) if grace is not None else None,
                )
            )
        if method == "DELETE":
            deleted = []
            for obj in self.store.list_objects(rtype, api.namespace, watches.predicate(request)):
                meta = obj["metadata"]
                deleted.append(self.store.delete(rtype, meta.get("namespace", ""), meta["name"]))
            return _json(_list_body(rtype, deleted, self.store.resource_version))
        raise method_not_allowed(f"{method} is not supported on this URL")

    def _serve_list(
        self, request: aiohttp.web.BaseRequest, rtype: ResourceType, namespace: str | None
    ) -> aiohttp.web.Response:
        if tables.wants_table(request.headers.get("Accept", "")):
            items = self.store.list_objects(rtype, namespace, watches.predicate(request))
            include = request.query.get("includeObject", "Metadata")
            return _json(tables.table(rtype, items, self.store.resource_version, include))
        # Serialized here, before any other write: the stored objects need no deep copy, only
        # their apiVersion on a shallow one (64 agents listing their peers every 2 s made the
        # copies a sixth of the API server's thread).
        stored = self.store.peek_objects(rtype, namespace, watches.predicate(request))
        items = [{**obj, "apiVersion": rtype.api_version} for obj in stored]
        return _json(_list_body(rtype, items, self.store.resource_version))

    async def _serve_pod_log(
        self, request: aiohttp.web.BaseRequest, pods: ResourceType, namespace: str, name: str
    ) -> aiohttp.web.StreamResponse:
        self.store.get(pods, namespace, name)  # 404 for an unknown pod
        if self.pod_logs is None:
            raise bad_request("this server runs no kubelet: there are no logs")
        query = request.query
        tail = int(query["tailLines"]) if query.get("tailLines") else None
        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        chunks = self.pod_logs.stream(
            namespace,
            name,
            query.get("container"),
            query.get("previous") == "true",
            tail,
            query.get("follow") == "true",
        )
        first = await anext(chunks, b"")  # errors (unknown container) before the headers
        await response.prepare(request)
        await response.write(first)
        async for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
        return response


def _list_body(rtype: ResourceType, items: list[Obj], resource_version: int) -> Obj:
    return {
        "apiVersion": rtype.api_version,
        "kind": f"{rtype.kind}List",
        "metadata": {"resourceVersion": str(resource_version)},
        "items": items,
    }


async def _read_body(request: aiohttp.web.BaseRequest) -> Any:
    raw = await request.read()
    if "protobuf" in request.headers.get("Content-Type", ""):
        return protobuf.decode(raw)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise bad_request(f"the request body is neither JSON nor YAML: {exc}") from exc


def _json(obj: Any, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.json_response(obj, status=status)


def _status_response(exc: ApiError) -> aiohttp.web.Response:
    return aiohttp.web.json_response(exc.as_status(), status=exc.status)


@dataclass
class RunningServer:
    """An API server listening on a port; ``close()`` stops it."""

    runner: aiohttp.web.ServerRunner
    host: str
    port: int

    async def close(self) -> None:
        await self.runner.cleanup()


async def serve(
    handler: SandboxApiServer,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
) -> RunningServer:
    """Listen with aiohttp's low-level server (kmock's own ``Server`` patches aiohttp's resolver
    process-wide and speaks plain HTTP; we need HTTPS and no global side effects)."""

    def request_factory(
        message: Any, payload: Any, protocol: Any, writer: Any, task: Any
    ) -> aiohttp.web.BaseRequest:
        # kube-apiserver takes bodies up to 3 MiB (aiohttp's default is 1 MiB).
        return aiohttp.web.BaseRequest(
            message,
            payload,
            protocol,
            writer,
            task,
            asyncio.get_running_loop(),
            client_max_size=MAX_BODY_BYTES,
        )

    server = aiohttp.web.Server(handler, handler_cancellation=True, request_factory=request_factory)
    runner = aiohttp.web.ServerRunner(server, shutdown_timeout=0.5)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, host, port, ssl_context=ssl_context, reuse_address=True)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []
    actual_port = sockets[0].getsockname()[1] if sockets else port
    return RunningServer(runner, host, actual_port)
