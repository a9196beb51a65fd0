"""The vLLM and SGLang adapters' in-memory path, end to end through the engines' real routes:
local servers that check each request's documented shape run the Deltaroll extension on a
stand-in model the way vLLM's workers and SGLang's schedulers would, and the proxy in front of
the engine forwards none of the routes this path uses."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from deltaroll.api.engine_patch import SGLANG_LOADER, SGLANG_REQUEST_ENV
from deltaroll.checkpoint import open_checkpoint
from deltaroll.checkpoint.digests import checkpoint_digests
from deltaroll.engines import engine_client
from deltaroll.engines.errors import LayoutChangeError, LivePatchError
from deltaroll.engines.inference_routes import allowed_routes, forwardable
from engines.fake_engines import FakeEngine, FakeSGLang, FakeVLLM, checkpoint_dir, vllm_error
from engines.parallel_standin import checkpoint_tensors, fine_tuned, live_request, write_versions
from engines.ranks import SHAPE, bits, loaded, parallel

pytestmark = pytest.mark.slow

VERSION = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = checkpoint_tensors(SHAPE, seed=3)
    return write_versions(tmp_path_factory.mktemp("versions"), base, fine_tuned(base, 0.01, 4))


@pytest.fixture
def model(versions: Path) -> torch.nn.Module:
    return loaded(versions / "base", parallel("tp", 0, 1))


def apply(kind: str, fake: FakeEngine, delta: Path):
    request = live_request(delta)
    client = engine_client(kind, fake.url)
    return client.apply_delta(
        delta, from_version=request.from_version, to_version=request.to_version
    )


def assert_admin_only(fake: FakeEngine, kind: str) -> None:
    """Every route the in-memory path used is one the pod's proxy refuses to its clients."""
    routes = allowed_routes(kind)
    used = {(seen.method, seen.path) for seen in fake.seen}
    assert used and all(forwardable(m, p, routes) is None for m, p in used), used


def test_vllm_patches_every_worker_through_collective_rpc(versions, model, tmp_path):
    expected = bits(loaded(versions / "target", parallel("tp", 0, 1)))
    with FakeVLLM(served_dir=str(checkpoint_dir(tmp_path / "s")), extension_model=model) as fake:
        result = apply("vllm", fake, versions / "delta")
        paths = [seen.path for seen in fake.seen]
        assert paths == [
            "/collective_rpc", "/pause", "/collective_rpc", "/update_weight_version",
            "/reset_prefix_cache", "/resume",
        ]  # fmt: skip
        assert fake.weight_version == result.version and not fake.paused
        assert_admin_only(fake, "vllm")
    assert all(torch.equal(bits(model)[n], expected[n]) for n in expected)
    assert result.changed_elements > 0 and result.bytes_applied == 2 * result.changed_elements


def test_vllm_served_digests_find_a_changed_element_in_a_worker(versions, model, tmp_path) -> None:
    """The shapes that place each tensor come from the agent's own weights; the directory vLLM
    names (here one with other shapes under the same names) is never read."""
    expected = checkpoint_digests(open_checkpoint(versions / "base"))
    names = sorted(expected)
    elsewhere = tmp_path / "named-by-vllm"
    elsewhere.mkdir()
    shapes = {n: torch.zeros(1, 1, dtype=torch.bfloat16) for n in names}
    save_file(shapes, elsewhere / "model.safetensors")
    with FakeVLLM(served_dir=str(elsewhere), extension_model=model) as fake:
        fake.weight_version = VERSION
        client = engine_client("vllm", fake.url)
        weights = versions / "base"
        served = client.served_digests(names, checkpoint=weights)
        assert served is not None and served.version == VERSION
        assert served.tensors == expected
        assert client.served_digests(names, checkpoint=weights) is None  # asked again at once
        qkv = model.model.layers[0].self_attn.qkv_proj.weight
        qkv.data.view(torch.int16)[0, 0] += 1  # the served q_proj changes in the worker
        deadline = time.monotonic() + 10
        while (served := client.served_digests(names, checkpoint=weights)) is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert served is not None
        assert [n for n in names if served.tensors[n] != expected[n]] == [
            "model.layers.0.self_attn.q_proj.weight"
        ]


def test_vllm_without_the_extension_says_how_to_start_it_before_pausing(versions, tmp_path):
    with FakeVLLM(served_dir=str(checkpoint_dir(tmp_path / "s"))) as fake:
        with pytest.raises(LivePatchError, match="--worker-extension-cls") as caught:
            apply("vllm", fake, versions / "delta")
        assert caught.value.old_weights_kept
        assert [seen.path for seen in fake.seen] == ["/collective_rpc"]  # no drain for nothing
        assert fake.weight_version is None


def test_vllm_that_does_not_pause_is_not_patched(versions, model, tmp_path):
    """Requests would run on half-patched weights: nothing is applied, the engine resumes."""
    before = bits(model)
    refused = vllm_error(500, "engine core is not running")
    fake = FakeVLLM(
        served_dir=str(checkpoint_dir(tmp_path / "s")), extension_model=model, pause_error=refused
    )
    with fake:
        with pytest.raises(LivePatchError, match="did not pause .*engine core is not running"):
            apply("vllm", fake, versions / "delta")
        assert [seen.path for seen in fake.seen] == ["/collective_rpc", "/pause", "/resume"]
        assert fake.weight_version is None
    assert all(torch.equal(bits(model)[n], before[n]) for n in before)


def test_vllm_reports_a_rank_fallback_as_a_layout_change(versions, model, tmp_path):
    layer = model.model.layers[1].mlp.gate_up_proj
    layer.weight = torch.nn.Parameter(layer.weight.data.to(torch.float8_e4m3fn), False)
    with FakeVLLM(served_dir=str(checkpoint_dir(tmp_path / "s")), extension_model=model) as fake:
        with pytest.raises(LayoutChangeError, match="quantized serving"):
            apply("vllm", fake, versions / "delta")
        assert fake.weight_version is None  # no label for weights it does not serve


def test_sglang_patches_every_scheduler_through_its_custom_loader(
    versions, model, tmp_path, monkeypatch
):
    monkeypatch.setenv(SGLANG_REQUEST_ENV, str(tmp_path / "patch-request.json"))
    expected = bits(loaded(versions / "target", parallel("tp", 0, 1)))
    fake = FakeSGLang(model_path="/m", custom_weight_loader=(SGLANG_LOADER,), model=model)
    with fake:
        result = apply("sglang", fake, versions / "delta")
        assert [seen.path for seen in fake.seen] == [
            "/server_info", "/update_weights_from_tensor", "/update_weight_version",
        ]  # fmt: skip
        assert fake.weight_version == result.version
        assert_admin_only(fake, "sglang")
    assert all(torch.equal(bits(model)[n], expected[n]) for n in expected)


def test_sglang_without_the_loader_allowed_falls_back_with_how_to_start_it(
    versions, model, tmp_path, monkeypatch
):
    monkeypatch.setenv(SGLANG_REQUEST_ENV, str(tmp_path / "patch-request.json"))
    with FakeSGLang(model_path="/m", model=model) as fake:
        with pytest.raises(LivePatchError, match="--custom-weight-loader"):
            apply("sglang", fake, versions / "delta")
        assert [seen.path for seen in fake.seen] == ["/server_info"]  # nothing held or written
        assert fake.weight_version == "default"
    assert not (tmp_path / "patch-request.json").exists()


def test_sglang_without_the_shared_request_file_says_which_variable(versions, model, monkeypatch):
    monkeypatch.delenv(SGLANG_REQUEST_ENV, raising=False)
    with FakeSGLang(model_path="/m", custom_weight_loader=(SGLANG_LOADER,), model=model) as fake:
        with pytest.raises(LivePatchError, match=SGLANG_REQUEST_ENV):
            apply("sglang", fake, versions / "delta")
        assert fake.seen == []


def test_sglang_refusal_of_the_base_keeps_the_old_version_label(
    versions, model, tmp_path, monkeypatch
):
    monkeypatch.setenv(SGLANG_REQUEST_ENV, str(tmp_path / "patch-request.json"))
    with torch.no_grad():
        model.model.norm.weight.view(torch.int16)[0] += 1  # not the delta's base any more
    before = bits(model)
    with FakeSGLang(model_path="/m", custom_weight_loader=(SGLANG_LOADER,), model=model) as fake:
        with pytest.raises(LivePatchError, match="rank 0: .*model.norm.weight") as caught:
            apply("sglang", fake, versions / "delta")
        assert caught.value.old_weights_kept and fake.weight_version == "default"
    assert all(torch.equal(bits(model)[n], before[n]) for n in before)
