"""Which requests a client of an inference pod may send to its engine, checked on the raw path.

vLLM (``VLLM_SERVER_DEV_MODE=1``) and SGLang mount their weight-update routes on the one FastAPI
app that serves inference (vLLM's ``register_vllm_serve_api_routers``, SGLang's
``http_server.py``), on one host and port. vLLM's ``--api-key`` is one key for both (before the
route-derived guard it covered only ``/v1``, leaving ``/pause`` and ``/collective_rpc`` open);
SGLang's ``--admin-api-key`` splits the keys, but every client still reaches the routes. So the
engine listens on 127.0.0.1 and ``deltaroll engine proxy`` serves the pod's port with the exact
(method, path) pairs below, nothing else.

A request matches on its raw path, as sent, before anything decodes it: every allowed path is
lower-case letters, digits, ``_``, ``-`` and single ``/``, so ``%70ause``, ``%2F``, ``//``,
``..``, ``;`` or ``/PAUSE`` (which uvicorn would decode, or Starlette route, somewhere else) never
matches, and what is forwarded is the path that matched, never a spelling of it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from deltaroll.engines.errors import EngineConfigError

Route = tuple[str, str]  # (method, path)

#: OpenAI-compatible inference, models and health: what a Service's clients and probes need.
OPENAI_ROUTES: Final[frozenset[Route]] = frozenset(
    {
        ("GET", "/health"),
        ("GET", "/v1/models"),
        ("POST", "/v1/completions"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/embeddings"),
    }
)

INFERENCE_ROUTES: Final[dict[str, frozenset[Route]]] = {
    "vllm": OPENAI_ROUTES,
    "sglang": OPENAI_ROUTES,
}

#: Routes that change or reveal what the engine serves: the agent's, on loopback, never added
#: with ``--allow-route`` (vLLM's development routes, SGLang's weight routes).
ADMIN_PATHS: Final = frozenset(
    {
        "/pause", "/resume", "/is_paused", "/sleep", "/wake_up", "/collective_rpc",
        "/init_weight_transfer_engine", "/start_weight_update", "/update_weights",
        "/finish_weight_update", "/update_weight_version", "/weight_info", "/server_info",
        "/get_server_info", "/get_weight_version", "/pause_generation", "/continue_generation",
        "/reset_prefix_cache", "/reset_mm_cache", "/scale_elastic_ep", "/update_weights_from_disk",
        "/update_weights_from_tensor", "/update_weights_from_distributed",
        "/init_weights_update_group", "/destroy_weights_update_group", "/release_memory_occupation",
        "/resume_memory_occupation", "/v1/load_lora_adapter", "/v1/unload_lora_adapter",
        "/load_lora_adapter", "/unload_lora_adapter", "/flush_cache", "/abort_request",
        "/set_internal_state", "/start_profile", "/stop_profile", "/configure_logging",
    }
)  # fmt: skip

_PATH = re.compile(r"(/[a-z0-9_-]+)+")
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
# RFC 3986 query characters; the engine's own parser reads the query.
_QUERY = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*")


def allowed_routes(kind: str, extra: Iterable[str] = ()) -> frozenset[Route]:
    """The routes of ``kind`` plus ``extra`` (each ``"METHOD /path"``); EngineConfigError for
    an unknown kind, a malformed route or an admin route."""
    if kind not in INFERENCE_ROUTES:
        raise EngineConfigError(
            f"--allow {kind}: use one of {', '.join(sorted(INFERENCE_ROUTES))} (the reference "
            "engine serves its admin routes on a port of their own)"
        )
    return INFERENCE_ROUTES[kind] | {parse_route(text) for text in extra}


def parse_route(text: str) -> Route:
    """``"POST /generate"`` -> ``("POST", "/generate")``, refusing anything but a plain path."""
    method, _, path = text.strip().partition(" ")
    if method not in _METHODS or not _PATH.fullmatch(path.strip()):
        raise EngineConfigError(
            f"--allow-route {text!r}: give a method and a plain lower-case path, e.g. "
            "'POST /generate' (no query, dots, encoding or trailing /)"
        )
    if path.strip() in ADMIN_PATHS:
        raise EngineConfigError(
            f"--allow-route {text!r}: {path.strip()} is an admin route of the engine; only the "
            "agent may call it, over the pod's loopback"
        )
    return method, path.strip()


def forwardable(method: str, raw_target: str, routes: frozenset[Route]) -> str | None:
    """``raw_target`` (path and query, as the client sent them) if its method and exact path
    are allowed and its query is well-formed; None when it must not reach the engine."""
    path, _, query = raw_target.partition("?")
    if (method, path) in routes and _QUERY.fullmatch(query):
        return raw_target
    return None
