"""``deltaroll engine proxy`` in front of the vLLM and SGLang stand-ins, as a pod runs it: the
engine on loopback, the proxy on the pod port. A client of the port reaches inference (streamed)
and no admin route however it spells one; the agent still reloads the engine over loopback."""

from __future__ import annotations

import asyncio
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from deltaroll.engines import EngineReloadError, engine_client
from deltaroll.engines.errors import EngineConfigError
from deltaroll.engines.inference_routes import (
    ADMIN_PATHS,
    INFERENCE_ROUTES,
    OPENAI_ROUTES,
    allowed_routes,
    forwardable,
    parse_route,
)
from deltaroll.engines.proxy import build_app
from engines.fake_engines import FakeEngine, FakeSGLang, FakeVLLM, checkpoint_dir
from engines.processes import RunningProxy, start_proxy
from fixtures.cli import run_deltaroll
from fixtures.ports import free_port

KINDS = ("vllm", "sglang")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return checkpoint_dir(tmp_path_factory.mktemp("served") / "weights")


@pytest.fixture(scope="module", params=KINDS)
def pod(
    request: pytest.FixtureRequest, served: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, FakeEngine, RunningProxy]]:
    """(kind, the engine on loopback, the proxy serving the pod port in front of it)."""
    kind = request.param
    fake: FakeEngine = (
        FakeVLLM(served_dir=str(served)) if kind == "vllm" else FakeSGLang(model_path=str(served))
    )
    with fake:
        proxy = start_proxy(kind, fake.url, tmp_path_factory.mktemp("proxy") / "stderr.txt")
        yield kind, fake, proxy
        assert proxy.stop() == 0, proxy.log.read_text()


def send(url: str, method: str, target: str, body: Any = None) -> tuple[int, bytes]:
    """``method target`` exactly as written (http.client sends the target verbatim)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        connection.request(method, target, body=data, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def spellings(path: str) -> list[str]:
    """Ways a client might write ``path`` so that a server decoding or normalizing it (uvicorn
    percent-decodes; some proxies and routers fold case, dots and slashes) reaches it."""
    name = path[1:]
    return [
        path, path.upper(), path + "/", "/" + path, "/./" + name, "/v1/.." + path,
        "/v1/%2e%2e" + path, "/v1/%2E%2E/" + name, "/health/.." + path, "/v1/models/../.." + path,
        "/%" + f"{ord(name[0]):02x}" + name[1:], "/%" + f"{ord(name[0]):02X}" + name[1:],
        "/v1%2F..%2F" + name, "/v1/completions/..%2F.." + path, path + ";x", path + "%00",
        path + "%20", "/%2F" + name, "http://127.0.0.1" + path, path + "?mode=abort",
        "/v1/completions%2F..%2F.." + path, "\\" + name,
    ]  # fmt: skip


def test_a_client_of_the_pod_port_reaches_no_admin_route_however_it_is_spelled(pod) -> None:
    kind, fake, proxy = pod
    fake.seen.clear()
    attempts = [
        (method, target)
        for method, path in sorted(fake.served_routes() - INFERENCE_ROUTES[kind])
        for target in spellings(path)
        for method in {method, "POST"}
    ]
    attempts += [("GET", "/v1/completions"), ("DELETE", "/v1/models"), ("POST", "/v1/models")]
    answers = {(m, t): send(proxy.url, m, t, {"model_path": "/elsewhere"}) for m, t in attempts}
    passed = {k: v for k, v in answers.items() if v[0] not in (400, 404)}
    assert not passed, passed
    assert fake.seen == []  # nothing reached the engine
    assert {json.loads(v[1])["error"]["code"] for v in answers.values() if v[0] == 404} == {404}


def test_inference_passes_and_a_stream_arrives_event_by_event(pod) -> None:
    kind, fake, proxy = pod
    fake.seen.clear()
    assert send(proxy.url, "GET", "/health")[0] == 200
    status, models = send(proxy.url, "GET", "/v1/models?limit=1")
    assert status == 200 and json.loads(models)["data"][0]["id"] == "served"
    status, reply = send(proxy.url, "POST", "/v1/completions", {"prompt": "a", "max_tokens": 3})
    assert status == 200 and json.loads(reply)["choices"][0]["text"] == "w0 w1 w2"
    assert [(s.method, s.path, s.query) for s in fake.seen] == [
        ("GET", "/health", {}),
        ("GET", "/v1/models", {"limit": ["1"]}),
        ("POST", "/v1/completions", {}),
    ]

    fake.hold.clear()  # the engine keeps its last event back until the client saw the first
    finished = fake.streams_finished
    parts = urlsplit(proxy.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        body = json.dumps({"messages": [{"role": "user", "content": "a"}], "max_tokens": 3,
                           "stream": True})  # fmt: skip
        connection.request("POST", "/v1/chat/completions", body=body)
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type", "").startswith("text/event-stream")
        first = response.readline()
        assert json.loads(first.removeprefix(b"data: "))["choices"][0]["text"] == "w0"
        assert fake.streams_finished == finished  # it came through before the engine finished
        fake.hold.set()
        rest = response.read().split(b"\n\n")
    finally:
        fake.hold.set()
        connection.close()
    events = [e.strip().removeprefix(b"data: ") for e in rest if e.strip()]
    assert [json.loads(e)["choices"][0]["text"] for e in events[:-1]] == ["w1", "w2"]
    assert events[-1] == b"[DONE]"


def test_the_agent_reloads_over_loopback_and_not_through_the_pod_port(
    pod, served: Path, tmp_path: Path
) -> None:
    kind, fake, proxy = pod
    through_the_port = engine_client(kind, proxy.url, timeout=30)
    with pytest.raises(EngineReloadError) as refused:
        through_the_port.reload(served, version="v2-id")
    assert refused.value.status == 404
    assert through_the_port.loaded_version() is None  # the label is not readable there either
    on_loopback = engine_client(kind, fake.url, timeout=30)
    on_loopback.reload(checkpoint_dir(tmp_path / "v2"), version="v2-id")
    assert on_loopback.loaded_version() == "v2-id"


def test_an_added_route_passes_and_a_dead_engine_is_a_502(tmp_path: Path) -> None:
    with FakeSGLang(model_path=str(tmp_path)) as fake:
        proxy = start_proxy(
            "sglang", fake.url, tmp_path / "proxy.log", "--allow-route", "POST /generate",
            "--max-request-bytes", "1000",
        )  # fmt: skip
        try:
            assert send(proxy.url, "POST", "/generate", {"text": "a"})[0] == 404  # the engine's
            assert [(s.method, s.path) for s in fake.seen] == [("POST", "/generate")]
            assert send(proxy.url, "POST", "/v1/completions", {"prompt": "x" * 2000})[0] == 413
        finally:
            assert proxy.stop() == 0
    dead = start_proxy("vllm", f"http://127.0.0.1:{free_port()}", tmp_path / "dead.log")
    try:
        status, body = send(dead.url, "GET", "/health")
        assert status == 502 and "not answering" in json.loads(body)["error"]["message"]
    finally:
        assert dead.stop() == 0


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"allow": "reference"}, "--allow reference: use one of sglang, vllm"),
        ({"allow_route": ["POST /pause"]}, "is an admin route of the engine"),
        ({"allow_route": ["GET /v1/../x"]}, "a plain lower-case path"),
        ({"upstream": "http://10.1.2.3:8001"}, "not a loopback address"),
        ({"listen": "8000"}, "give HOST:PORT"),
    ],
)
def test_a_bad_option_is_refused_before_anything_listens(options: dict[str, Any], words: str):
    from deltaroll.cli.engine_commands import proxy

    with pytest.raises(EngineConfigError, match=words.replace(".", r"\.")):
        proxy(**{"allow": "vllm", **options})


def test_the_command_says_what_is_wrong_in_one_line() -> None:
    done = run_deltaroll("engine", "proxy", "--allow", "vllm", "--allow-route", "POST /pause")
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: --allow-route 'POST /pause': /pause is an admin route"), line


@pytest.mark.parametrize("path", sorted(ADMIN_PATHS))
def test_no_spelling_of_an_admin_path_is_forwardable(path: str) -> None:
    routes = allowed_routes("vllm") | allowed_routes("sglang")
    for target in spellings(path):
        for method in ("GET", "POST"):
            assert forwardable(method, target, routes) is None, (method, target)


def test_only_exact_inference_targets_are_forwardable() -> None:
    routes = allowed_routes("vllm")
    assert forwardable("POST", "/v1/completions", routes) == "/v1/completions"
    assert forwardable("GET", "/v1/models?a=b&c=%20", routes) == "/v1/models?a=b&c=%20"
    for target in (
        "/v1/completions/",
        "/V1/completions",
        "//v1/completions",
        "/v1//completions",
        "/v1/./completions",
        "/v1/completions%00",
        "/v1/models?a b",
        "/v1/models?\x00",
    ):
        assert forwardable("POST", target, routes) is None, target  # fmt: skip
        assert forwardable("GET", target.replace("completions", "models"), routes) is None
    assert not {path for _, path in routes} & ADMIN_PATHS
    with pytest.raises(EngineConfigError):
        parse_route("POST /update_weights_from_disk")
    assert parse_route("GET /metrics") == ("GET", "/metrics")


def test_the_engine_gets_at_most_the_bound_and_a_request_beyond_it_is_told_to_retry() -> None:
    """A flood of slow requests holds at most ``max_engine_connections`` engine connections;
    one that waits past the queue timeout gets 503 with Retry-After, and once the engine answers,
    the next request passes again."""
    asyncio.run(_flood_a_slow_engine())


async def _flood_a_slow_engine() -> None:
    release = asyncio.Event()
    open_now, most_open = 0, 0

    async def slow_completion(request: web.Request) -> web.Response:
        nonlocal open_now, most_open
        open_now += 1
        most_open = max(most_open, open_now)
        try:
            await release.wait()
            return web.json_response({"choices": []})
        finally:
            open_now -= 1

    engine_app = web.Application()
    engine_app.router.add_post("/v1/completions", slow_completion)
    async with TestServer(engine_app, host="127.0.0.1") as engine:
        proxy_app = build_app(
            str(engine.make_url("")), OPENAI_ROUTES, max_engine_connections=2, queue_timeout_s=0.5
        )
        async with (
            TestServer(proxy_app, host="127.0.0.1") as proxy,
            aiohttp.ClientSession() as client,
        ):
            url = proxy.make_url("/v1/completions")
            held = [asyncio.create_task(client.post(url, json={"prompt": "a"})) for _ in range(4)]
            await asyncio.wait(held, timeout=5, return_when=asyncio.FIRST_COMPLETED)
            await asyncio.sleep(0.5)  # every waiter is past its queue timeout now
            refused = [task for task in held if task.done()]
            assert len(refused) == 2, (len(refused), most_open)
            for task in refused:
                reply = task.result()
                assert reply.status == 503 and reply.headers["Retry-After"] == "1"
            assert most_open == 2
            release.set()
            for task in held:
                if task not in refused:
                    assert (await task).status == 200
            async with client.post(url, json={"prompt": "b"}) as again:
                assert again.status == 200
