"""``python -m deltaroll_demo`` as a user runs it: the whole rollout story on the sandbox, checked
from its final JSON line and exit status, and cross-checked against the store it leaves behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from deltaroll.checkpoint import checkpoint_version
from deltaroll.store import Store

pytestmark = pytest.mark.slow
MODEL = "demo-llm"


def run_demo(*args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "deltaroll_demo", *args],
        capture_output=True,
        text=True,
        timeout=580,
        env={**os.environ, **env},
    )
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "{}"
    return done, json.loads(last)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("demo")
    done, result = run_demo("--workdir", str(workdir))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return workdir, result


@pytest.mark.timeout(600)
def test_the_story_happens_as_told(demo: tuple[Path, dict[str, Any]]) -> None:
    _, result = demo
    assert result["ok"] is True and result["failure"] is None
    assert result["promoted"] == ["v1", "v2"]
    assert result["rolled_back"] == ["v3"]
    assert len(result["final_version_per_pod"]) == 4
    assert set(result["final_version_per_pod"].values()) == {"v2"}
    assert all(result["checks"].values()), result["checks"]
    assert result["degraded"]["reason"] == "AnalysisFailed"
    (v3_run,) = result["analysis"]["v3"]
    (v2_run,) = result["analysis"]["v2"]
    assert float(v3_run["lastValue"]) > 2 * float(v2_run["lastValue"])
    assert {"RolloutStarted", "AnalysisFailed"} <= set(result["events"])


@pytest.mark.timeout(600)
def test_bytes_shipped_are_the_stores_deltas_and_far_below_the_checkpoint(
    demo: tuple[Path, dict[str, Any]],
) -> None:
    workdir, result = demo
    store = Store(f"file://{workdir / 'store'}", cache_dir=workdir / "test-cache")
    manifest = store.versions(MODEL)[result["version_ids"]["v2"]]
    assert manifest.delta is not None
    v2_delta = sum(ref.size for ref in {r.digest: r for r in manifest.delta.objects}.values())
    full = result["full_checkpoint_bytes"]
    assert full == sum(p.stat().st_size for p in (workdir / "checkpoints" / "v1").iterdir())
    per_pod = result["bytes_per_pod_per_version"]
    assert len(per_pod) == 4
    for shipped in per_pod.values():
        assert 0 < shipped["v1"] <= full  # the anchor, compressed
        assert shipped["v2"] == v2_delta < full / 5
    # peers served part of v2 (the canary's first pod holds it for the later steps' pods), so
    # the delta crossed the bucket fewer times than once per pod
    from_peers = sum(p["v2"] for p in result["peer_bytes_per_pod_per_version"].values())
    from_bucket = sum(shipped["v2"] for shipped in per_pod.values()) - from_peers
    assert from_peers > 0 and from_bucket < len(per_pod) * v2_delta
    # only the canary pulled v3; its way back to v2 reused the same (reversible) delta
    assert sorted(1 for shipped in per_pod.values() if shipped["v3"] > 0) == [1]
    assert result["delta_bytes"]["v2"] == v2_delta


@pytest.mark.timeout(600)
def test_the_store_serves_v2_bit_exact(demo: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    workdir, result = demo
    out = tmp_path / "v2"
    subprocess.run(
        [str(Path(sys.executable).parent / "deltaroll"), "pull", f"file://{workdir / 'store'}"]
        + [MODEL, "v2", "-o", str(out)],
        check=True,
        capture_output=True,
        env={**os.environ, "DELTAROLL_CACHE_DIR": str(tmp_path / "cache")},
        timeout=120,
    )
    assert checkpoint_version(out) == result["version_ids"]["v2"]
    assert checkpoint_version(workdir / "checkpoints" / "v2") == result["version_ids"]["v2"]


@pytest.mark.timeout(600)
def test_a_story_that_does_not_happen_exits_non_zero(tmp_path: Path) -> None:
    """With no time to wait, the pods cannot come up: exit 1, and the JSON says which step."""
    done, result = run_demo("--workdir", str(tmp_path), DELTAROLL_DEMO_WAIT_S="1")
    assert done.returncode == 1
    assert result["ok"] is False
    assert "timed out after 1 s waiting for v1" in result["failure"]
    assert result["promoted"] == [] and result["rolled_back"] == []


@pytest.mark.timeout(300)
def test_the_codec_demo_still_runs(tmp_path: Path) -> None:
    done, result = run_demo("codec", "--workdir", str(tmp_path / "codec"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert result["demo"] == "codec" and result["ok"] is True
    assert all(size < result["target_bytes"] for size in result["delta_bytes"])
