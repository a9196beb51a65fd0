"""The store commands as real subprocesses: exit codes, one JSON object on stdout, one error line,
and no credential anywhere in the output, whatever goes wrong."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from deltaroll.store import Store, keys
from fixtures.cli import DELTAROLL, deltaroll_json, run_deltaroll
from store.support import ACCESS_KEY_SENTINEL, SECRET_SENTINEL, make_bucket


@pytest.fixture
def cache_env(tmp_path: Path) -> dict[str, str]:
    return {"DELTAROLL_CACHE_DIR": str(tmp_path / "cache")}


def test_push_pull_log_gc_squash(checkpoints: list[Path], tmp_path: Path, cache_env: dict) -> None:
    store = f"file://{tmp_path / 'store'}"
    first = deltaroll_json("push", store, "tiny", checkpoints[0], "--name", "step-0", env=cache_env)
    assert first["parent"] is None and first["uploaded_bytes"] > 0

    refused = run_deltaroll("push", store, "tiny", checkpoints[1], env=cache_env)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.startswith("error: ") and refused.stderr.count("\n") == 1
    assert "--base" in refused.stderr and "--anchor" in refused.stderr

    versions = [first["version"]]
    for index in (1, 2, 3):
        pushed = deltaroll_json(
            "push",
            store,
            "tiny",
            checkpoints[index],
            "--base",
            checkpoints[index - 1],
            "--name",
            f"step-{index}",
            env=cache_env,
        )
        assert pushed["parent"] == versions[-1]
        assert 0 < pushed["uploaded_bytes"] < first["uploaded_bytes"] / 3
        versions.append(pushed["version"])

    log = deltaroll_json("log", store, "tiny", env=cache_env)
    assert [v["version"] for v in log["versions"]] == versions
    assert log["versions"][3]["names"] == ["step-3"]

    pulled = deltaroll_json(
        "pull",
        store,
        "tiny",
        "step-3",
        "-o",
        tmp_path / "out",
        "--base",
        checkpoints[1],
        env=cache_env,
    )
    assert pulled["version"] == versions[3]
    assert pulled["path"] == versions[1:]
    assert 0 < pulled["downloaded_bytes"] < first["uploaded_bytes"] / 3

    squashed = deltaroll_json("squash", store, "tiny", "step-1", "step-3", env=cache_env)
    assert squashed["parent"] == versions[1]

    dry = deltaroll_json(
        "gc", store, "tiny", "--keep", "step-3", "--dry-run", "--grace-seconds", "0", env=cache_env
    )
    assert dry["dry_run"] and dry["deleted_versions"] == [versions[2]]
    done = deltaroll_json(
        "gc", store, "tiny", "--keep", "step-3", "--grace-seconds", "0", env=cache_env
    )
    assert done["deleted_versions"] == [versions[2]] and done["freed_bytes"] > 0
    assert [v["version"] for v in deltaroll_json("log", store, "tiny")["versions"]] == [
        versions[0],
        versions[1],
        versions[3],
    ]


def test_no_credential_ever_reaches_output(
    s3_env: str, checkpoints: list[Path], tmp_path: Path, cache_env: dict
) -> None:
    env = {
        **cache_env,
        "AWS_ENDPOINT_URL": s3_env,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_SENTINEL,
        "AWS_SECRET_ACCESS_KEY": SECRET_SENTINEL,
        "AWS_ALLOW_HTTP": "true",
    }
    bucket = make_bucket(s3_env)
    store = f"s3://{bucket}/models"
    outputs = []

    def record(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
        outputs.append(done.stdout + done.stderr)
        return done

    pushed = record(run_deltaroll("push", store, "tiny", checkpoints[0], "--json", env=env))
    assert pushed.returncode == 0, pushed.stderr
    version = json.loads(pushed.stdout)["version"]

    failures = [
        run_deltaroll(
            "pull", store, "tiny", "no-such-version", "-o", tmp_path / "a", "--json", env=env
        ),
        run_deltaroll("log", "s3://no-such-bucket-here/models", "tiny", "--json", env=env),
        run_deltaroll(
            "log", store, "tiny", "--json", env={**env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
        ),
        run_deltaroll(
            "push",
            f"s3://{ACCESS_KEY_SENTINEL.lower()}:{SECRET_SENTINEL}@b/p",
            "tiny",
            checkpoints[0],
            env=env,
        ),
    ]
    anchor = Store(store).catalog.read_anchor("tiny", version)
    victim = keys.object_key("tiny", anchor.delta.objects[0].digest)
    Store(store).catalog.backend.write(victim, b"tampered", create_only=False)
    failures.append(
        run_deltaroll("pull", store, "tiny", version, "-o", tmp_path / "b", "--json", env=env)
    )

    for done in failures:
        record(done)
        assert done.returncode != 0
        assert done.stdout == ""
        assert done.stderr.strip().splitlines()[-1].startswith("error: "), done.stderr
    assert "corrupt" in outputs[-1] and victim in outputs[-1]
    assert "gave up after" in outputs[3]
    everything = "\n".join(outputs)
    assert SECRET_SENTINEL not in everything
    assert ACCESS_KEY_SENTINEL not in everything
    assert ACCESS_KEY_SENTINEL.lower() not in everything


def test_concurrent_pushes_from_separate_processes(
    s3_env: str, checkpoints: list[Path], tmp_path: Path, cache_env: dict
) -> None:
    """Three processes push the same version at once: S3's If-None-Match lets exactly one
    publish; the others report the version as already published, and nothing is clobbered."""
    store = f"s3://{make_bucket(s3_env)}/models"
    deltaroll_json("push", store, "tiny", checkpoints[0], env=cache_env)
    args = ["push", store, "tiny", checkpoints[2], "--base", checkpoints[1], "--json"]
    deltaroll_json("push", store, "tiny", checkpoints[1], "--base", checkpoints[0], env=cache_env)
    procs = [
        subprocess.Popen(
            [str(DELTAROLL), *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **cache_env},
        )
        for _ in range(3)
    ]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        reports.append(json.loads(out))
    assert len({r["version"] for r in reports}) == 1
    assert sorted(r["published"] for r in reports) == [False, False, True]
    manifest = Store(store).versions("tiny")[reports[0]["version"]]
    assert manifest.parent == reports[0]["parent"]
