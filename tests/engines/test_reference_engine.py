"""The reference engine for real: a subprocess serving a tiny trained Llama from safetensors."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import blake3
import pytest
import torch
from safetensors.torch import load_file

from deltaroll.checkpoint import checkpoint_version
from deltaroll.engines import EngineReloadError, EngineUnreachableError, engine_client
from engines.checkpoints import EVAL_TEXTS, MAX_TOKENS, PROMPT
from engines.http_util import call
from engines.processes import RunningEngine
from fixtures.cli import DELTAROLL, run_deltaroll
from fixtures.ports import free_port


def reload(engine: RunningEngine, path: Path, **extra: str) -> tuple[int, dict]:
    return call(
        "POST", engine.admin_url + "/update_weights_from_disk", {"model_path": str(path), **extra}
    )


def served_version(engine: RunningEngine) -> str:
    status, body = call("GET", engine.admin_url + "/weights_checksum")
    assert status == 200
    return body["version"]


def greedy(engine: RunningEngine) -> dict:
    status, body = call(
        "POST",
        engine.url + "/v1/completions",
        {"model": "v1", "prompt": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0},
    )
    assert status == 200, body
    return body


def test_completions_are_the_models_own_greedy_continuation(reference_engine, checkpoints):
    body = greedy(reference_engine)
    assert body["object"] == "text_completion"
    [choice] = body["choices"]
    assert choice["text"] == checkpoints.v1_greedy_completion
    assert choice["finish_reason"] == "length"
    assert body["usage"] == {
        "prompt_tokens": len(PROMPT.encode()),
        "completion_tokens": MAX_TOKENS,
        "total_tokens": len(PROMPT.encode()) + MAX_TOKENS,
    }
    assert greedy(reference_engine)["choices"] == body["choices"]  # greedy is deterministic


def test_a_list_of_prompts_gets_one_choice_each(reference_engine):
    status, body = call(
        "POST", reference_engine.url + "/v1/completions", {"prompt": ["a", "bc"], "max_tokens": 3}
    )
    assert status == 200
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert body["usage"]["prompt_tokens"] == 3


def test_eval_is_the_mean_token_loss_and_a_diverged_model_scores_worse(
    reference_engine, checkpoints
):
    status, good = call("POST", reference_engine.url + "/eval", {"texts": EVAL_TEXTS})
    assert status == 200
    assert good["finite"] is True
    assert good["tokens"] == sum(len(t.encode()) - 1 for t in EVAL_TEXTS)
    assert good["loss"] == pytest.approx(checkpoints.v1_eval_loss, rel=1e-6)
    try:
        assert reload(reference_engine, checkpoints.diverged)[0] == 200
        status, bad = call("POST", reference_engine.url + "/eval", {"texts": EVAL_TEXTS})
        assert status == 200
        assert bad["loss"] > good["loss"] + 1.0
        assert bad["version"] == checkpoint_version(checkpoints.diverged)
    finally:
        assert reload(reference_engine, checkpoints.v1)[0] == 200


def test_weights_checksum_is_the_checkpoints_version_and_file_bytes(reference_engine, checkpoints):
    status, body = call("GET", reference_engine.admin_url + "/weights_checksum")
    assert status == 200
    assert body["version"] == checkpoint_version(checkpoints.v1)
    on_disk = load_file(checkpoints.v1 / "model.safetensors")
    assert set(body["tensors"]) == set(on_disk)
    for name, tensor in on_disk.items():
        raw = tensor.contiguous().reshape(-1).view(torch.uint8).numpy()
        assert body["tensors"][name] == {
            "dtype": "BF16",
            "shape": list(tensor.shape),
            "digest": blake3.blake3(raw.tobytes()).hexdigest(),
        }


def test_reload_to_a_new_directory_serves_the_new_version(reference_engine, checkpoints):
    v1, v2 = checkpoint_version(checkpoints.v1), checkpoint_version(checkpoints.v2)
    assert v1 != v2
    try:
        status, body = reload(reference_engine, checkpoints.v2, weight_version=v2)
        assert status == 200
        assert body["success"] is True and body["version"] == v2
        assert served_version(reference_engine) == v2
        assert call("GET", reference_engine.url + "/health")[1]["version"] == v2
        assert greedy(reference_engine)["system_fingerprint"] == v2
    finally:
        assert reload(reference_engine, checkpoints.v1)[0] == 200
    assert served_version(reference_engine) == v1


def test_reload_of_a_directory_patched_in_place(reference_engine, checkpoints, tmp_path):
    """What the agent does: patch the served directory's files, then reload the same path."""
    served = tmp_path / "served"
    shutil.copytree(checkpoints.v1, served)
    try:
        assert reload(reference_engine, served)[0] == 200
        assert served_version(reference_engine) == checkpoint_version(checkpoints.v1)
        staged = served / ".model.safetensors.new"
        shutil.copyfile(checkpoints.v2 / "model.safetensors", staged)
        staged.replace(served / "model.safetensors")
        assert reload(reference_engine, served)[0] == 200
        assert served_version(reference_engine) == checkpoint_version(checkpoints.v2)
    finally:
        assert reload(reference_engine, checkpoints.v1)[0] == 200


def test_weights_patched_in_place_are_not_served_before_a_reload(
    reference_engine, checkpoints, tmp_path
):
    """The agent patches the served files at their byte offsets (same inodes): the engine must
    hold its own copy of the tensors, so what it serves changes only on reload."""
    served = tmp_path / "served"
    shutil.copytree(checkpoints.v1, served)
    v1, v2 = checkpoint_version(checkpoints.v1), checkpoint_version(checkpoints.v2)
    try:
        assert reload(reference_engine, served)[0] == 200
        before = greedy(reference_engine)
        delta = tmp_path / "delta"
        for args in (
            ("diff", str(checkpoints.v1), str(checkpoints.v2), "-o", str(delta)),
            ("apply", str(served), str(delta), "--in-place"),
        ):
            subprocess.run([str(DELTAROLL), *args], check=True, capture_output=True)
        assert checkpoint_version(served) == v2
        assert served_version(reference_engine) == v1
        assert greedy(reference_engine)["choices"] == before["choices"]
        assert reload(reference_engine, served)[0] == 200
        assert served_version(reference_engine) == v2
    finally:
        assert reload(reference_engine, checkpoints.v1)[0] == 200


def corrupt_copies(v1: Path, root: Path) -> dict[str, tuple[Path, str]]:
    """Directories a reload must refuse, and a word the refusal must contain."""
    truncated = root / "truncated"
    shutil.copytree(v1, truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])

    no_weights = root / "no-weights"
    shutil.copytree(v1, no_weights)
    (no_weights / "model.safetensors").unlink()

    wrong_config = root / "wrong-config"
    shutil.copytree(v1, wrong_config)
    config = (wrong_config / "config.json").read_text()
    (wrong_config / "config.json").write_text(
        config.replace('"hidden_size": 64', '"hidden_size": 32')
    )

    return {
        "missing": (root / "does-not-exist", "no such directory"),
        "truncated": (truncated, "truncated"),
        "no-weights": (no_weights, "not exactly one .safetensors file"),
        "wrong-config": (wrong_config, "cannot be loaded"),
    }


@pytest.mark.parametrize("case", ["missing", "truncated", "no-weights", "wrong-config"])
def test_a_failed_reload_answers_400_and_keeps_the_old_weights(
    reference_engine, checkpoints, tmp_path, case
):
    before = greedy(reference_engine)
    path, reason = corrupt_copies(checkpoints.v1, tmp_path)[case]
    status, body = reload(reference_engine, path)
    assert status == 400
    assert body["success"] is False
    assert reason in body["message"]
    assert checkpoint_version(checkpoints.v1) in body["message"]  # "still serving <version>"
    assert served_version(reference_engine) == checkpoint_version(checkpoints.v1)
    assert greedy(reference_engine)["choices"] == before["choices"]


def test_a_reload_whose_weights_are_not_the_expected_version_is_refused(
    reference_engine, checkpoints
):
    v1 = checkpoint_version(checkpoints.v1)
    status, body = reload(reference_engine, checkpoints.v2, weight_version=v1)
    assert status == 400
    assert f"not the expected {v1}" in body["message"]
    assert served_version(reference_engine) == v1


def test_the_client_reloads_and_reports_refusals_with_the_engines_message(
    reference_engine, checkpoints, tmp_path
):
    client = engine_client("reference", reference_engine.admin_url)
    assert client.health() is True
    v1, v2 = checkpoint_version(checkpoints.v1), checkpoint_version(checkpoints.v2)
    try:
        client.reload(checkpoints.v2, version=v2)
        assert client.loaded_version() == v2
    finally:
        client.reload(checkpoints.v1, version=v1)
    with pytest.raises(EngineReloadError) as refused:
        client.reload(tmp_path / "nothing-here")
    assert refused.value.status == 400
    assert "no such directory" in refused.value.engine_message
    assert refused.value.old_weights_kept is True
    assert client.loaded_version() == v1


def test_an_engine_that_is_not_running_is_unhealthy_and_unreachable(tmp_path):
    client = engine_client("reference", f"http://127.0.0.1:{free_port()}")
    assert client.health() is False
    with pytest.raises(EngineUnreachableError, match="unreachable"):
        client.reload(tmp_path)


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/v1/completions", {}, 400, "prompt: Field required"),
        ("/v1/completions", {"prompt": "a", "max_tokens": 0}, 400, "max_tokens"),
        ("/v1/completions", {"prompt": "a", "max_tokens": 300}, 400, "context of 256 tokens"),
        ("/eval", {"texts": []}, 400, "texts"),
        ("/eval", {"texts": ["a"]}, 400, "at least 2"),
        (
            "/update_weights_from_disk",
            {"model_path": "/x", "load_format": "pt"},
            400,
            "load_format",
        ),
        ("/nope", {}, 404, "no route"),
    ],
)
def test_malformed_requests_get_a_clear_4xx(reference_engine, path, body, status, words):
    admin = path == "/update_weights_from_disk"
    base = reference_engine.admin_url if admin else reference_engine.url
    got_status, got = call("POST", base + path, body)
    assert got_status == status
    message = got.get("message") or got["error"]["message"]
    assert words in message


def test_a_body_that_is_not_json_is_a_400(reference_engine):
    status, body = call("POST", reference_engine.url + "/eval", raw=b"{not json")
    assert status == 400
    assert "not JSON" in body["error"]["message"]


@pytest.mark.parametrize(
    "command",
    [
        [str(DELTAROLL), "engine", "serve", "--kind", "reference"],
        [sys.executable, "-m", "deltaroll.engines.reference"],
    ],
)
def test_serving_a_missing_directory_fails_with_one_error_line(command, tmp_path):
    result = subprocess.run(
        [*command, "--model-path", str(tmp_path / "absent"), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'absent'}: no such directory; pass a checkpoint directory"
    ]


def test_the_cli_reloads_and_probes_a_running_engine(reference_engine, checkpoints, tmp_path):
    v1, v2 = checkpoint_version(checkpoints.v1), checkpoint_version(checkpoints.v2)
    engine = ["--kind", "reference", "--endpoint", reference_engine.admin_url]

    def deltaroll(*args: str) -> subprocess.CompletedProcess[str]:
        return run_deltaroll("engine", *args, timeout=60)

    try:
        done = deltaroll("reload", *engine, "--model-path", str(checkpoints.v2), "--version", v2,
                         "--json")  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["loaded_version"] == v2
        status = deltaroll("status", *engine, "--json")
        assert status.returncode == 0
        assert json.loads(status.stdout) == {
            "kind": "reference",
            "endpoint": reference_engine.admin_url,
            "healthy": True,
            "loaded_version": v2,
        }
    finally:
        assert reload(reference_engine, checkpoints.v1)[0] == 200
    refused = deltaroll("reload", *engine, "--model-path", str(tmp_path), "--json")
    assert refused.returncode == 1
    assert refused.stdout == ""
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith(f"error: engine at {reference_engine.admin_url} failed to load weights")
    assert f"still serving version {v1}" in line


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/update_weights_from_disk"),
        ("GET", "/weights_checksum"),
        ("POST", "//update_weights_from_disk"),
        ("POST", "/v1/../update_weights_from_disk"),
        ("POST", "/update_weights_from_disk?x=1"),
    ],
)
def test_the_inference_port_serves_no_admin_route(reference_engine, checkpoints, method, path):
    """A client of the Service reaches only inference; the weights stay what the agent set."""
    body = {"model_path": str(checkpoints.v2)} if method == "POST" else None
    status, reply = call(method, reference_engine.url + path, body)
    assert status == 404, reply
    assert served_version(reference_engine) == checkpoint_version(checkpoints.v1)


def test_the_admin_port_is_on_loopback_and_serves_no_inference(reference_engine):
    from deltaroll.engines.reference.server import ADMIN_HOST

    assert ADMIN_HOST == "127.0.0.1"
    status, _ = call("POST", reference_engine.admin_url + "/v1/completions", {"prompt": "a"})
    assert status == 404
    port = int(reference_engine.admin_url.rsplit(":", 1)[1])
    assert listening_addresses(port) == {"127.0.0.1"}


def listening_addresses(port: int) -> set[str]:
    """The IPv4 addresses a TCP socket listens on at ``port`` (Linux' /proc/net/tcp)."""
    found = set()
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = row.split()[1], row.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found
