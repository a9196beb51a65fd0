"""``deltaroll worker`` against a real file:// store with real trained checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deltaroll.checkpoint import checkpoint_version
from deltaroll.store import Store
from fixtures.cli import deltaroll_json
from fixtures.deltas import delta_content
from fixtures.trl_patches import write_trl_patch
from worker.helpers import SECRET_SENTINEL, Worker, compute_args, refuse_new_objects, same_files

PERMANENT = 3


def _anchor(worker: Worker, store_uri: str, checkpoint: Path) -> str:
    run = worker(*compute_args(store_uri, f"file://{checkpoint}", name="step-0"))
    assert run.code == 0, run.process.stderr
    assert run.report is not None
    return str(run.report["version"])


def test_compute_publishes_what_log_shows_and_pull_is_bit_exact(
    worker: Worker, store_uri: str, checkpoints: list[Path], tmp_path: Path
) -> None:
    root = _anchor(worker, store_uri, checkpoints[0])
    assert root == checkpoint_version(checkpoints[0])

    run = worker(
        *compute_args(store_uri, f"file://{checkpoints[1]}", name="step-1", parent="step-0"),
        "--json",
    )

    assert run.code == 0, run.process.stderr
    assert run.report is not None and run.report["ok"] is True
    assert json.loads(run.process.stdout) == run.report  # --json prints the same report
    assert run.report["version"] == checkpoint_version(checkpoints[1])
    assert run.report["parent"] == root
    assert 0 < run.report["changed_fraction"] < 1
    logged = {v["version"]: v for v in deltaroll_json("log", store_uri, "tiny")["versions"]}
    assert logged[run.report["version"]]["delta_bytes"] == run.report["delta_bytes"]
    assert logged[run.report["version"]]["names"] == ["step-1"]
    assert run.report["full_bytes"] == sum(p.stat().st_size for p in checkpoints[1].iterdir())
    out = tmp_path / "pulled"
    deltaroll_json("pull", store_uri, "tiny", "step-1", "-o", str(out))
    assert same_files(out, checkpoints[1])


def test_a_retried_compute_finds_its_version_and_uploads_nothing(
    worker: Worker, store_uri: str, checkpoints: list[Path], tmp_path: Path
) -> None:
    _anchor(worker, store_uri, checkpoints[0])
    args = compute_args(store_uri, f"file://{checkpoints[1]}", name="step-1", parent="step-0")
    first, again = worker(*args), worker(*args)
    assert first.code == again.code == 0, again.process.stderr
    # The retry says it created nothing: a ModelDelta may delete only a version it created.
    assert (first.report.pop("created"), again.report.pop("created")) == (True, False)
    assert first.report == again.report
    assert len(Store(store_uri).versions("tiny")) == 2


def test_a_missing_parent_fails_permanently_and_says_so(
    worker: Worker, store_uri: str, checkpoints: list[Path]
) -> None:
    _anchor(worker, store_uri, checkpoints[0])
    run = worker(
        *compute_args(store_uri, f"file://{checkpoints[1]}", name="step-1", parent="step-119")
    )
    assert run.code == PERMANENT
    assert run.report is not None
    assert run.report["reason"] == "ParentNotFound"
    assert "step-119" in run.report["message"]
    assert run.process.stderr.strip().splitlines()[-1].startswith("error: ")
    assert len(Store(store_uri).versions("tiny")) == 1


def test_a_target_that_is_not_safetensors_is_named_as_such(
    worker: Worker, store_uri: str, checkpoints: list[Path], tmp_path: Path
) -> None:
    _anchor(worker, store_uri, checkpoints[0])
    bogus = tmp_path / "bogus"
    bogus.mkdir()
    (bogus / "model.safetensors").write_bytes(b"this is not a safetensors file")
    nowhere = f"file://{tmp_path / 'nowhere'}"
    missing = worker(*compute_args(store_uri, nowhere, name="step-1", parent="step-0"))
    invalid = worker(*compute_args(store_uri, f"file://{bogus}", name="step-1", parent="step-0"))
    assert (missing.code, invalid.code) == (PERMANENT, PERMANENT)
    assert missing.report is not None and missing.report["reason"] == "TargetNotFound"
    assert invalid.report is not None and invalid.report["reason"] == "InvalidTarget"
    assert len(Store(store_uri).versions("tiny")) == 1


def test_a_store_that_refuses_writes_publishes_nothing(
    worker: Worker, store_uri: str, checkpoints: list[Path], tmp_path: Path
) -> None:
    _anchor(worker, store_uri, checkpoints[0])
    blocked = refuse_new_objects(tmp_path / "store", checkpoints[0], checkpoints[1], tmp_path)
    run = worker(
        *compute_args(store_uri, f"file://{checkpoints[1]}", name="step-1", parent="step-0")
    )
    assert blocked
    assert run.code != 0
    assert run.report is not None and run.report["reason"] == "StoreAccessDenied"
    assert len(Store(store_uri).versions("tiny")) == 1


def test_import_materialize_and_squash(
    worker: Worker, store_uri: str, checkpoints: list[Path], tmp_path: Path
) -> None:
    _anchor(worker, store_uri, checkpoints[0])
    patch = write_trl_patch(
        checkpoints[0],
        checkpoints[1],
        tmp_path / "patch.safetensors",
        generation="branch",
        encoding="gap_delta",
    )
    imported = worker(
        "import",
        "--store",
        store_uri,
        "--model",
        "tiny",
        "--parent",
        "step-0",
        "--patch",
        f"file://{patch}",
        "--name",
        "step-1",
    )
    assert imported.code == 0, imported.process.stderr
    assert imported.report is not None
    assert imported.report["version"] == checkpoint_version(checkpoints[1])

    step2 = worker(
        *compute_args(store_uri, f"file://{checkpoints[2]}", name="step-2", parent="step-1")
    )
    assert step2.code == 0, step2.process.stderr
    assert step2.report is not None
    anchored = worker("materialize", "--store", store_uri, "--model", "tiny", "--version", "step-2")
    assert anchored.code == 0, anchored.process.stderr
    assert anchored.report is not None and anchored.report["anchored"] is True
    squashed = worker(
        "squash", "--store", store_uri, "--model", "tiny", "--from", "step-0", "--to", "step-2"
    )
    assert squashed.code == 0, squashed.process.stderr
    store = Store(store_uri)
    assert store.versions("tiny")[step2.report["version"]].parent == checkpoint_version(
        checkpoints[0]
    )
    out = tmp_path / "pulled"
    deltaroll_json("pull", store_uri, "tiny", "step-2", "-o", str(out))
    assert same_files(out, checkpoints[2])


def test_three_shards_publish_the_same_delta_as_one_worker(
    worker: Worker, checkpoints: list[Path], tmp_path: Path
) -> None:
    single, sharded = f"file://{tmp_path / 'single'}", f"file://{tmp_path / 'sharded'}"
    for uri in (single, sharded):
        _anchor(worker, uri, checkpoints[0])
    target = f"file://{checkpoints[1]}"
    alone = worker(*compute_args(single, target, name="step-1", parent="step-0"))
    assert alone.code == 0, alone.process.stderr
    sharded_args = compute_args(sharded, target, name="step-1", parent="step-0")
    runs = [worker(*sharded_args, "--shards", "3", "--index", str(i)) for i in (2, 0, 1)]
    assert [r.code for r in runs] == [0, 0, 0], [r.process.stderr for r in runs]
    reports = [r.report for r in runs]
    assert all(r is not None for r in reports)
    published = [r for r in reports if r and r["published_by_this_index"]]
    assert len(published) == 1 and published[0]["index"] == 1  # the last to finish
    assert sorted(f for r in reports if r for f in r["files"]) == sorted(
        p.name for p in checkpoints[1].glob("*.safetensors")
    )
    assert published[0]["version"] == alone.report["version"]  # type: ignore[index]
    version = alone.report["version"]  # type: ignore[index]
    one = Store(single).versions("tiny")[version].delta
    three = Store(sharded).versions("tiny")[version].delta
    assert one is not None and three is not None
    # The same delta, packed differently (each share packs its own payloads).
    assert delta_content(tmp_path / "single", one) == delta_content(tmp_path / "sharded", three)
    assert not list((tmp_path / "sharded" / "tiny" / "staging").rglob("*.json"))
    out = tmp_path / "pulled"
    deltaroll_json("pull", sharded, "tiny", "step-1", "-o", str(out))
    assert same_files(out, checkpoints[1])


def test_a_target_and_a_store_on_s3_never_leak_the_credentials(
    worker: Worker, s3: Any, checkpoints: list[Path], tmp_path: Path
) -> None:
    for bucket in ("weights", "checkpoints"):
        s3.create_bucket(Bucket=bucket)
    for step in (0, 1):
        for path in checkpoints[step].iterdir():
            s3.upload_file(str(path), "checkpoints", f"run-7/step-{step}/{path.name}")
    store = "s3://weights/deltaroll"
    run7 = "s3://checkpoints/run-7"
    first = worker(*compute_args(store, f"{run7}/step-0", name="step-0"))
    second = worker(*compute_args(store, f"{run7}/step-1", name="step-1", parent="step-0"))
    missing = worker(*compute_args(store, f"{run7}/step-9", name="step-9", parent="step-0"))
    assert (first.code, second.code, missing.code) == (0, 0, 3), second.process.stderr
    assert second.report is not None
    assert second.report["version"] == checkpoint_version(checkpoints[1])
    assert missing.report is not None and missing.report["reason"] == "TargetNotFound"
    for run in (first, second, missing):
        seen = run.process.stdout + run.process.stderr + json.dumps(run.report)
        assert SECRET_SENTINEL not in seen


def test_the_parent_cache_is_used_only_when_it_holds_the_parent(
    worker: Worker, store_uri: str, checkpoints: list[Path], tmp_path: Path
) -> None:
    root = _anchor(worker, store_uri, checkpoints[0])
    cache = tmp_path / "parents"
    args = (
        *compute_args(store_uri, f"file://{checkpoints[1]}", name="step-1", parent="step-0"),
        "--parent-cache",
        cache,
    )
    filled = worker(*args)
    assert filled.code == 0, filled.process.stderr
    assert (cache / "tiny" / root).is_dir() and "worker.parent_cached" not in filled.process.stderr
    reused = worker(*args)
    assert reused.code == 0 and "worker.parent_cached" in reused.process.stderr
    shard = next((cache / "tiny" / root).glob("*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:-8] + b"\x00" * 8)  # a damaged cache entry
    repaired = worker(*args)
    assert repaired.code == 0, repaired.process.stderr
    assert "worker.parent_cached" not in repaired.process.stderr
    assert {**repaired.report, "created": True} == filled.report
