"""The engine extension against stand-ins of vLLM's parallel layers: two ranks in a gloo group
patch fused, sharded parameters in memory to exactly what a fresh load of the target gives, or
all stay on the old weights; what cannot be patched falls back with its reason."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from deltaroll.api.engine_patch import PROTOCOL, SGLANG_REQUEST_ENV, PatchResult, RankDigests
from deltaroll.checkpoint import open_checkpoint, read_delta_manifest
from deltaroll.checkpoint.digests import checkpoint_digests
from deltaroll.engines.extension.placement import Placement, narrowed
from deltaroll.engines.extension.ranked_patch import CHUNK_ELEMENTS, patch_on_rank
from deltaroll.engines.rank_answers import agreed_digests
from engines.parallel_standin import (
    DENSE,
    checkpoint_tensors,
    fine_tuned,
    live_request,
    write_versions,
)
from engines.ranks import SHAPE, loaded, parallel, run_ranks

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("shape", "dim", "start", "length"),
    [
        ((6, 5), 0, 2, 3),
        ((6, 5), 1, 1, 2),
        ((4, 3, 5), 1, 1, 1),
        ((7,), 0, 3, 4),
        ((6, 5), None, 0, 0),
    ],
)
def test_placement_translates_positions_like_narrowing(shape, dim, start, length) -> None:
    full = np.arange(int(np.prod(shape))).reshape(shape)
    placement = Placement("p", shape, dim, start, length)
    region = full if dim is None else np.take(full, range(start, start + length), axis=dim)
    positions = np.arange(full.size, dtype=np.int64)[::2]
    held, local = placement.local_positions(positions)
    assert list(region.reshape(-1)[local]) == list(positions[held])
    assert held.sum() == np.isin(positions, region).sum()


def test_a_slice_along_two_dimensions_is_refused() -> None:
    with pytest.raises(ValueError, match="not a slice"):
        narrowed("w", (8, 8), (4, 4), 1, 2)


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Base and target checkpoints (about 2 % of elements changed, one tensor dense) and the
    delta between them."""
    base = checkpoint_tensors(SHAPE, seed=1)
    return write_versions(tmp_path_factory.mktemp("versions"), base, fine_tuned(base, 0.02, 2))


def work_dir(versions: Path, tmp_path: Path) -> Path:
    for side in ("base", "target"):
        (tmp_path / side).symlink_to(versions / side)
    return tmp_path


@pytest.mark.parametrize(
    ("mode", "chunk"),
    [("tp", None), ("pp", None), ("tp", 50)],  # 50: the dense norm and every sparse set in parts
)
def test_two_ranks_patch_fused_sharded_parameters_bit_for_bit(
    versions: Path, tmp_path: Path, mode: str, chunk: int | None
) -> None:
    dense = [e.name for e in read_delta_manifest(versions / "delta").tensors if e.kind == "dense"]
    assert sorted(dense) == sorted(DENSE)  # whole, by columns, by padded vocabulary rows
    request = live_request(versions / "delta")
    work = work_dir(versions, tmp_path)
    reports = run_ranks(work, mode, "apply", request, chunk_elements=chunk or CHUNK_ELEMENTS)
    for report in reports:
        assert report["result"]["outcome"] == "applied", report["result"]
        assert report["differs_from_target"] == []
        assert report["differs_from_before"], "the patch changed nothing"
        assert 0 < report["result"]["bytes_applied"] < 2 * report["result"]["changed_elements"]
    if mode == "tp":  # every rank holds a slice of every layer's fused parameters
        assert reports[0]["parameters"] == reports[1]["parameters"]
    else:  # the stages hold different layers
        assert reports[0]["parameters"] != reports[1]["parameters"]


def hashed_by_ranks(
    versions: Path, tmp_path: Path, mode: str, scenario: str, chunk: int | None = None
) -> tuple[dict[str, list[RankDigests]], dict[str, str]]:
    """Each rank's digests (asked twice at once: "first", "again"), and the base's digests."""
    request = live_request(versions / "delta")
    work = work_dir(versions, tmp_path)
    reports = run_ranks(work, mode, scenario, request, chunk_elements=chunk or CHUNK_ELEMENTS)
    answers = {k: [RankDigests.model_validate(r[k]) for r in reports] for k in ("first", "again")}
    return answers, checkpoint_digests(open_checkpoint(versions / "base"))


@pytest.mark.parametrize(("mode", "chunk"), [("tp", None), ("pp", None), ("tp", 1000)])
def test_ranks_hash_each_whole_checkpoint_tensor_from_their_slices(
    versions: Path, tmp_path: Path, mode: str, chunk: int | None
) -> None:
    answers, expected = hashed_by_ranks(versions, tmp_path, mode, "digests", chunk)
    assert agreed_digests(answers["first"]) == expected
    # Asked again at once: every rank refuses together, and says when to ask.
    assert all(a.retry_after_s > 0 and not a.digests for a in answers["again"])


def test_a_tampered_shard_on_one_rank_is_found(versions: Path, tmp_path: Path) -> None:
    answers, expected = hashed_by_ranks(versions, tmp_path, "tp", "digests-tampered")
    served = agreed_digests(answers["first"])
    wrong = sorted(n for n in expected if served[n] != expected[n])
    assert wrong == ["model.layers.0.self_attn.q_proj.weight"]


@pytest.mark.parametrize("scenario", ["corrupt", "write-fails"])
def test_a_failure_on_one_rank_leaves_every_rank_on_the_old_weights(
    versions: Path, tmp_path: Path, scenario: str
) -> None:
    reports = run_ranks(
        work_dir(versions, tmp_path), "tp", scenario, live_request(versions / "delta")
    )
    for report in reports:
        assert report["result"]["outcome"] == "failed"
        assert report["differs_from_before"] == []
        assert report["differs_from_target"], "the test's delta changes nothing"
    reasons = [r["result"]["reason"] for r in reports]
    if scenario == "corrupt":  # every rank checks the exchanged values, so every rank says why
        assert all("does not serve the delta's base" in reason for reason in reasons)
    else:
        assert "illegal memory access" in reasons[1]
        assert "another rank" in reasons[0]


def test_quantized_serving_falls_back_with_the_reason(versions: Path) -> None:
    model = loaded(versions / "base", parallel("tp", 0, 1))
    layer = model.model.layers[0].mlp.down_proj
    layer.weight = torch.nn.Parameter(layer.weight.data.to(torch.float8_e4m3fn), False)
    result = patch_on_rank(model, live_request(versions / "delta"), rank=0, reduce_max=None)
    assert result.outcome == "fallback"
    assert "quantized serving" in result.reason and "down_proj" in result.reason


def test_moe_experts_fall_back_with_the_reason(versions: Path, tmp_path: Path) -> None:
    base = checkpoint_tensors(SHAPE, seed=1)
    base["model.layers.0.mlp.experts.0.up_proj.weight"] = torch.ones(4, 4, dtype=torch.bfloat16)
    target = dict(
        base,
        **{"model.layers.0.mlp.experts.0.up_proj.weight": torch.zeros(4, 4, dtype=torch.bfloat16)},
    )
    write_versions(tmp_path, base, target)
    model = loaded(versions / "base", parallel("tp", 0, 1))
    result = patch_on_rank(model, live_request(tmp_path / "delta"), rank=0, reduce_max=None)
    assert result.outcome == "fallback"
    assert "MoE expert" in result.reason


def test_a_layout_change_falls_back_and_changes_nothing(versions: Path, tmp_path: Path) -> None:
    base = checkpoint_tensors(SHAPE, seed=1)
    target = dict(
        fine_tuned(base, 0.02, seed=2), **{"extra.weight": torch.ones(3, dtype=torch.bfloat16)}
    )
    write_versions(tmp_path, base, target)
    model = loaded(versions / "base", parallel("tp", 0, 1))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = patch_on_rank(model, live_request(tmp_path / "delta"), rank=0, reduce_max=None)
    assert result.outcome == "fallback"
    assert "adds, removes or reshapes" in result.reason and "extra.weight" in result.reason
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


@pytest.mark.parametrize(
    ("name", "grown"),
    [
        ("model.layers.0.self_attn.o_proj.weight", 1),  # a row-parallel layer's columns
        ("model.layers.0.self_attn.q_proj.weight", 0),  # a fused layer's part
        ("model.embed_tokens.weight", 0),  # the vocabulary (padded in the parameter)
    ],
)
def test_a_checkpoint_larger_than_what_the_engine_loaded_falls_back(
    versions: Path, tmp_path: Path, name: str, grown: int
) -> None:
    """A manifest whose tensor is larger than the engine's slices add up to (a checkpoint the
    engine was not started on), changed only where the two overlap: every changed position
    lands in a parameter, and the values there are the delta's base, so without the shape
    check the engine would take it and report a version it does not serve."""
    base = checkpoint_tensors(SHAPE, seed=1)
    tensor = base[name]
    extra = list(tensor.shape)
    extra[grown] = 8
    base[name] = torch.cat([tensor, torch.ones(extra, dtype=tensor.dtype)], dim=grown)
    target = dict(base)
    target[name] = base[name].clone()
    target[name][0, :4] += 1  # inside the part the engine holds
    write_versions(tmp_path, base, target)
    model = loaded(versions / "base", parallel("tp", 0, 1))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = patch_on_rank(model, live_request(tmp_path / "delta"), rank=0, reduce_max=None)
    assert result.outcome == "fallback", result
    assert "not the one the engine loaded" in result.reason or "does not hold" in result.reason
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_a_rank_parses_the_delta_manifest_once(versions: Path, monkeypatch) -> None:
    from deltaroll.checkpoint import manifest

    request = live_request(versions / "delta")
    parsed = []
    parse = manifest.parse_delta_manifest
    monkeypatch.setattr(
        manifest, "parse_delta_manifest", lambda *a: parsed.append(a[1]) or parse(*a)
    )
    model = loaded(versions / "base", parallel("tp", 0, 1))
    result = patch_on_rank(model, request, rank=0, reduce_max=None)
    assert result.outcome == "applied"
    assert len(parsed) == 1, parsed


def test_a_delta_for_other_versions_is_refused(versions: Path) -> None:
    model = loaded(versions / "base", parallel("tp", 0, 1))
    other = "0" * 32
    request = live_request(versions / "delta").model_copy(update={"from_version": other})
    result = patch_on_rank(model, request, rank=0, reduce_max=None)
    assert result.outcome == "failed" and other in result.reason


class _WorldGroup:
    """What ``get_world_group()`` gives in vLLM and SGLang (``GroupCoordinator``), one rank."""

    world_size, rank, cpu_group = 1, 0, None


def _engine_module(monkeypatch, name: str) -> None:
    import types

    parts = name.split(".")
    for end in range(1, len(parts) + 1):
        monkeypatch.setitem(sys.modules, ".".join(parts[:end]), types.ModuleType(parts[end - 1]))
    sys.modules[name].get_world_group = _WorldGroup  # type: ignore[attr-defined]


def test_the_vllm_worker_extension_patches_its_runners_model(versions, monkeypatch) -> None:
    from deltaroll.engines.extension.vllm_worker import DeltarollWorkerExtension

    _engine_module(monkeypatch, "vllm.distributed")
    model = loaded(versions / "base", parallel("tp", 0, 1))

    class Worker(DeltarollWorkerExtension):  # what --worker-extension-cls makes of vLLM's Worker
        model_runner = types.SimpleNamespace(get_model=lambda: model)

    worker = Worker()
    assert worker.deltaroll_patch_protocol() == PROTOCOL
    answer = worker.deltaroll_patch_in_memory(live_request(versions / "delta").model_dump_json())
    assert PatchResult.model_validate(answer).outcome == "applied"
    assert json.dumps(answer)  # /collective_rpc returns it as JSON


def test_the_sglang_loader_answers_beside_the_request(versions, monkeypatch, tmp_path) -> None:
    from deltaroll.engines.extension.sglang_loader import patch_in_memory

    _engine_module(monkeypatch, "sglang.srt.distributed")
    request = tmp_path / "patch-request.json"
    request.write_text(live_request(versions / "delta").model_dump_json())
    monkeypatch.setenv(SGLANG_REQUEST_ENV, str(request))
    model = loaded(versions / "base", parallel("tp", 0, 1))
    patch_in_memory(model, [])  # as ModelRunner.update_weights_from_tensor calls it
    answer = PatchResult.model_validate_json(
        (tmp_path / "patch-request.json.rank0.json").read_text()
    )
    assert answer.outcome == "applied" and answer.changed_elements > 0
    request.write_text("{not json")
    patch_in_memory(model, [])  # never raises: SGLang's scheduler would stop
    answer = PatchResult.model_validate_json(
        (tmp_path / "patch-request.json.rank0.json").read_text()
    )
    assert answer.outcome == "failed" and "patch-request.json" in answer.reason
