"""The SGLang and vLLM adapters against local servers that check each request's documented shape."""

from __future__ import annotations

from pathlib import Path

import pytest

from deltaroll.engines import (
    EngineClient,
    EngineConfigError,
    EngineReloadError,
    EngineUnreachableError,
    engine_client,
)
from engines.fake_engines import NO_BODY, FakeSGLang, FakeVLLM, checkpoint_dir
from fixtures.ports import free_port


@pytest.fixture
def served(tmp_path: Path) -> Path:
    return checkpoint_dir(tmp_path / "served")


@pytest.fixture
def new_weights(tmp_path: Path) -> Path:
    return checkpoint_dir(tmp_path / "v2")


@pytest.fixture
def not_a_checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "empty"
    path.mkdir()
    (path / "config.json").write_text("{}")
    return path


# --- SGLang -------------------------------------------------------------------------------------


def test_sglang_reload_posts_the_model_path_and_version(served, new_weights):
    with FakeSGLang(model_path=str(served)) as sglang:
        client = engine_client("sglang", sglang.url)
        client.reload(new_weights, version="v2-id")
        assert sglang.calls() == [("POST", "/update_weights_from_disk")]
        assert sglang.seen[0].body == {"model_path": str(new_weights), "weight_version": "v2-id"}
        assert sglang.model_path == str(new_weights)
        assert client.loaded_version() == "v2-id"
        assert client.health() is True


def test_sglang_reload_without_a_version_sends_only_the_path(served, new_weights, monkeypatch):
    monkeypatch.chdir(new_weights.parent)
    with FakeSGLang(model_path=str(served)) as sglang:
        engine_client("sglang", sglang.url).reload(Path(new_weights.name))  # relative: resolved
        assert sglang.seen[0].body == {"model_path": str(new_weights)}


def test_sglang_refusal_raises_with_sglangs_message(served, not_a_checkpoint):
    with FakeSGLang(model_path=str(served)) as sglang:
        client = engine_client("sglang", sglang.url)
        with pytest.raises(EngineReloadError) as refused:
            client.reload(not_a_checkpoint, version="v2-id")
        assert refused.value.status == 400
        assert refused.value.engine_message.startswith("Failed to update weights: no safetensors")
        assert refused.value.old_weights_kept is True  # SGLang rolls back to its weights
        assert "\n" not in str(refused.value)  # one line for the CLI and the pod's status
        assert sglang.model_path == str(served)
        assert client.loaded_version() == "default"


def test_sglang_before_0_5_reports_its_version_on_get_model_info(served, new_weights):
    with FakeSGLang(model_path=str(served), legacy_model_info=True) as sglang:
        client = engine_client("sglang", sglang.url)
        client.reload(new_weights, version="v2-id")
        assert client.loaded_version() == "v2-id"
        assert sglang.calls()[-2:] == [("GET", "/model_info"), ("GET", "/get_model_info")]


# --- vLLM ---------------------------------------------------------------------------------------

WEIGHT_TRANSFER_CALLS = [
    ("POST", "/pause"),
    ("GET", "/server_info"),
    ("POST", "/init_weight_transfer_engine"),
    ("POST", "/start_weight_update"),
    ("POST", "/update_weights"),
    ("POST", "/finish_weight_update"),
    ("POST", "/reset_prefix_cache"),
    ("POST", "/resume"),
]


def test_vllm_reload_drives_the_disk_weight_transfer_protocol(served, new_weights):
    with FakeVLLM(served_dir=str(served)) as vllm:
        client = engine_client("vllm", vllm.url)
        client.reload(new_weights, version="v2-id")
        assert vllm.calls() == WEIGHT_TRANSFER_CALLS
        pause, info, init, start, update, finish, reset, resume = vllm.seen
        assert pause.query == {"mode": ["wait"]}
        assert info.query == {"config_format": ["json"]}
        assert init.body == {"init_info": {}}
        assert start.body is NO_BODY
        assert update.body == {"update_info": {"path": str(new_weights)}}
        assert finish.body == {"weight_version": "v2-id"}
        assert reset.query == {"reset_running_requests": ["true"]}
        assert resume.body is NO_BODY
        assert (vllm.model_path, vllm.paused, vllm.rpc_reloads) == (str(new_weights), False, 0)
        assert client.loaded_version() == "v2-id"


def test_vllm_finish_without_a_version_has_no_body(served, new_weights):
    with FakeVLLM(served_dir=str(served)) as vllm:
        engine_client("vllm", vllm.url).reload(new_weights)
        assert vllm.seen[5].path == "/finish_weight_update"
        assert vllm.seen[5].body is NO_BODY
        assert vllm.model_path == str(new_weights)


def test_vllm_refusal_raises_with_vllms_message_and_resumes(served, not_a_checkpoint):
    with FakeVLLM(served_dir=str(served), weight_version="v1-id") as vllm:
        client = engine_client("vllm", vllm.url)
        with pytest.raises(EngineReloadError) as refused:
            client.reload(not_a_checkpoint, version="v2-id")
        assert refused.value.status == 400
        assert "contains no safetensors files" in refused.value.engine_message
        assert refused.value.old_weights_kept is False  # vLLM's reload is not transactional
        finish = vllm.seen[5]  # the started update is finished, without a version
        assert (finish.path, finish.body) == ("/finish_weight_update", NO_BODY)
        assert vllm.calls()[-1] == ("POST", "/resume")
        assert (vllm.paused, vllm.session_active) == (False, False)
        assert client.loaded_version() == "v1-id"
        # The next reload starts a fresh session and succeeds.
        client.reload(served, version="v1-id")


RPC_RELOAD_CALLS = [
    ("GET", "/v1/models"),
    ("POST", "/collective_rpc"),
    ("POST", "/update_weight_version"),
    ("POST", "/reset_prefix_cache"),
    ("POST", "/resume"),
]


@pytest.mark.parametrize("backend", ["nccl", "ipc"])
def test_vllm_with_another_backend_reloads_through_collective_rpc_and_keeps_the_version(
    served, backend
):
    # The server's configuration decides: an ipc server would also accept an empty init.
    with FakeVLLM(served_dir=str(served), backend=backend, weight_version="v1-id") as vllm:
        client = engine_client("vllm", vllm.url)
        client.reload(served, version="v2-id")
        assert vllm.calls() == [
            ("POST", "/pause"),
            ("GET", "/server_info"),
            *RPC_RELOAD_CALLS,
        ]
        assert vllm.seen[3].body == {"method": "reload_weights"}
        assert vllm.seen[4].body == {"new_version": "v2-id"}
        assert (vllm.rpc_reloads, vllm.prefix_cache_resets, vllm.paused) == (1, 1, False)
        assert client.loaded_version() == "v2-id"
        assert (vllm.session_active, vllm.layerwise_pending) == (False, False)  # never started


def test_vllm_without_server_info_learns_the_backend_from_the_update_and_finishes_it(served):
    with FakeVLLM(served_dir=str(served), backend="ipc", server_info=False) as vllm:
        client = engine_client("vllm", vllm.url)
        client.reload(served, version="v2-id")
        # The disk protocol up to the update the ipc backend refuses, its finish, then the rpc.
        assert vllm.calls() == [*WEIGHT_TRANSFER_CALLS[:6], *RPC_RELOAD_CALLS]
        assert vllm.seen[5].body is NO_BODY  # the started update is ended, with no version
        assert vllm.session_active is False
        assert client.loaded_version() == "v2-id"
        client.reload(served, version="v3-id")  # no session was left open to block this one
        assert client.loaded_version() == "v3-id"


def test_vllm_without_weight_transfer_reloads_through_collective_rpc(served):
    with FakeVLLM(served_dir=str(served), backend=None) as vllm:
        client = engine_client("vllm", vllm.url)
        client.reload(served, version="v2-id")
        assert ("POST", "/collective_rpc") in vllm.calls()
        assert ("POST", "/init_weight_transfer_engine") not in vllm.calls()
        assert (vllm.rpc_reloads, vllm.paused) == (1, False)
        assert client.loaded_version() is None  # this vLLM keeps no version: nothing to compare


def test_vllm_fallback_refuses_a_directory_it_was_not_launched_on(served, new_weights):
    with FakeVLLM(served_dir=str(served), backend="nccl") as vllm:
        with pytest.raises(EngineReloadError) as refused:
            engine_client("vllm", vllm.url).reload(new_weights)
        assert refused.value.status == 409
        assert str(served) in refused.value.engine_message
        assert '"backend": "disk"' in refused.value.engine_message
        assert ("POST", "/collective_rpc") not in vllm.calls()
        assert (vllm.rpc_reloads, vllm.paused) == (0, False)


def test_vllm_without_dev_mode_says_how_to_enable_it(served):
    with FakeVLLM(served_dir=str(served), dev_mode=False) as vllm:
        client = engine_client("vllm", vllm.url)
        assert client.health() is True
        with pytest.raises(EngineReloadError, match="VLLM_SERVER_DEV_MODE=1"):
            client.reload(served)
        assert client.loaded_version() is None


# --- the factory and transport ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["reference", "sglang", "vllm"])
def test_every_kind_implements_the_protocol(kind):
    client = engine_client(kind, "http://127.0.0.1:8000/")
    assert isinstance(client, EngineClient)
    assert (client.kind, client.endpoint) == (kind, "http://127.0.0.1:8000")


@pytest.mark.parametrize(
    ("kind", "endpoint", "words"),
    [
        ("triton", "http://127.0.0.1:8000", "unknown engine kind 'triton'"),
        ("vllm", "127.0.0.1:8000", "not an http(s) URL"),
        ("vllm", "ftp://host:21", "not an http(s) URL"),
        ("vllm", "http://user:secret@host:8000", "must not carry credentials"),
        ("vllm", "http://host:8000/?x=1", "query"),
    ],
)
def test_bad_kinds_and_endpoints_are_config_errors(kind, endpoint, words):
    with pytest.raises(EngineConfigError, match=words.replace("(", r"\(").replace(")", r"\)")) as e:
        engine_client(kind, endpoint)
    assert "secret" not in str(e.value)


@pytest.mark.parametrize("kind", ["sglang", "vllm"])
def test_an_engine_that_is_down_is_unhealthy_and_unreachable(kind, served):
    client = engine_client(kind, f"http://127.0.0.1:{free_port()}")
    assert client.health() is False
    with pytest.raises(EngineUnreachableError, match="unreachable"):
        client.reload(served)
