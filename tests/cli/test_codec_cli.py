"""``deltaroll diff | apply | verify | inspect | import-trl`` as real subprocesses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file, save_file

from deltaroll.checkpoint import read_delta_manifest
from fixtures.trl_patches import write_trl_patch

from .conftest import Run

DIFF_KEYS = {
    "base_version",
    "target_version",
    "tensors",
    "total_elements",
    "changed_elements",
    "delta_bytes",
    "target_bytes",
}


def _one_json(stdout: str) -> dict[str, Any]:
    lines = stdout.splitlines()
    assert len(lines) == 1, stdout
    return json.loads(lines[0])


def _disk_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def test_diff_apply_verify_inspect_round_trip(
    deltaroll: Run, steps: list[Path], tmp_path: Path
) -> None:
    delta = tmp_path / "delta"
    diff = deltaroll("diff", steps[0], steps[1], "-o", delta, "--json")
    assert diff.returncode == 0, diff.stderr
    summary = _one_json(diff.stdout)
    assert summary.keys() >= DIFF_KEYS
    assert summary["delta_bytes"] == _disk_bytes(delta)
    assert summary["target_bytes"] == _disk_bytes(steps[1])
    assert 0 < summary["changed_elements"] <= summary["total_elements"]

    applied = deltaroll("apply", steps[0], delta, "-o", tmp_path / "out", "--json")
    assert applied.returncode == 0, applied.stderr
    assert _one_json(applied.stdout)["to_version"] == summary["target_version"]
    assert deltaroll("verify", tmp_path / "out", delta).returncode == 0
    assert deltaroll("verify", tmp_path / "out", delta, "--side", "target").returncode == 0

    mismatch = deltaroll("verify", tmp_path / "out", delta, "--side", "base")
    assert mismatch.returncode != 0
    assert mismatch.stderr.startswith("error: ") and len(mismatch.stderr.splitlines()) == 1
    assert deltaroll("verify", steps[0], delta, "--side", "base").returncode == 0

    report = deltaroll("verify", steps[2], delta, "--json")
    assert report.returncode != 0 and _one_json(report.stdout)["matches"] is False

    inspected = deltaroll("inspect", delta, "--json")
    assert inspected.returncode == 0
    info = _one_json(inspected.stdout)
    assert info["target_version"] == summary["target_version"]
    assert info["delta_bytes"] == summary["delta_bytes"]
    human = deltaroll("inspect", delta)
    assert summary["target_version"] in human.stdout


def test_in_place_and_reverse(deltaroll: Run, steps: list[Path], tmp_path: Path) -> None:
    delta = tmp_path / "delta"
    assert deltaroll("diff", steps[0], steps[1], "-o", delta).returncode == 0
    forward = deltaroll("apply", steps[0], delta, "--in-place", "--json")
    assert forward.returncode == 0 and _one_json(forward.stdout)["changed"] is True
    assert deltaroll("verify", steps[0], delta).returncode == 0
    back = deltaroll("apply", steps[0], delta, "--in-place", "--reverse")
    assert back.returncode == 0, back.stderr
    assert deltaroll("verify", steps[0], delta, "--side", "base").returncode == 0
    reverse_out = deltaroll("apply", steps[1], delta, "--reverse", "-o", tmp_path / "back")
    assert reverse_out.returncode == 0
    assert deltaroll("verify", tmp_path / "back", delta, "--side", "base").returncode == 0


def test_import_trl(deltaroll: Run, steps: list[Path], tmp_path: Path) -> None:
    patch = write_trl_patch(steps[0], steps[1], tmp_path / "patch.safetensors")
    imported = deltaroll("import-trl", steps[0], patch, "-o", tmp_path / "delta", "--json")
    assert imported.returncode == 0, imported.stderr
    assert _one_json(imported.stdout).keys() >= DIFF_KEYS
    assert deltaroll("apply", steps[0], tmp_path / "delta", "--in-place").returncode == 0
    assert deltaroll("verify", steps[0], tmp_path / "delta").returncode == 0
    diff = deltaroll("diff", steps[0], steps[1], "-o", tmp_path / "d2", "--json")
    assert _one_json(diff.stdout)["changed_elements"] == 0  # step-0 is now exactly step-1


def _corrupt_payload(delta: Path) -> str:
    manifest = read_delta_manifest(delta)
    index = next(entry.payload.object for entry in manifest.tensors if entry.payload)
    digest = manifest.objects[index].digest
    path = delta / "objects" / digest
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    return digest


def _user_errors(steps: list[Path], tmp_path: Path) -> list[tuple[str, list[object], str]]:
    delta = tmp_path / "delta"
    trl_patch = write_trl_patch(steps[0], steps[1], tmp_path / "trl.safetensors", encoding="raw")
    save_file(load_file(str(trl_patch)), str(trl_patch), metadata={"encoding": "nvcomp_cascaded"})
    (tmp_path / "junk.safetensors").write_text("not tensors")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    return [
        (
            "missing base",
            ["diff", tmp_path / "nope", steps[1], "-o", tmp_path / "d"],
            "does not exist",
        ),
        (
            "junk file",
            ["diff", tmp_path / "junk.safetensors", steps[1], "-o", tmp_path / "d"],
            "not a valid",
        ),
        ("output taken", ["diff", steps[0], steps[1], "-o", tmp_path / "taken"], "already exists"),
        (
            "output under a file",
            ["diff", steps[0], steps[1], "-o", tmp_path / "taken" / "file" / "d"],
            "taken/file: ",
        ),
        (
            "bad device",
            ["diff", steps[0], steps[1], "-o", tmp_path / "d", "--device", "tpu9"],
            "device",
        ),
        ("no mode", ["apply", steps[0], delta], "-o OUT_DIR or --in-place"),
        (
            "both modes",
            ["apply", steps[0], delta, "-o", tmp_path / "o", "--in-place"],
            "exactly one",
        ),
        ("wrong base", ["apply", steps[2], delta, "-o", tmp_path / "o"], "applies to"),
        (
            "not a delta",
            ["apply", steps[0], tmp_path / "taken", "-o", tmp_path / "o"],
            "delta directory",
        ),
        ("bad side", ["verify", steps[0], delta, "--side", "middle"], "--side"),
        (
            "trl encoding",
            ["import-trl", steps[0], trl_patch, "-o", tmp_path / "t"],
            "nvcomp_cascaded",
        ),
        ("inspect non-delta", ["inspect", tmp_path / "taken"], "delta directory"),
    ]


def test_user_errors_are_one_line_and_non_zero(
    deltaroll: Run, steps: list[Path], tmp_path: Path
) -> None:
    assert deltaroll("diff", steps[0], steps[1], "-o", tmp_path / "delta").returncode == 0
    for label, args, message in _user_errors(steps, tmp_path):
        result = deltaroll(*args, "--json") if args[0] in ("diff", "apply") else deltaroll(*args)
        assert result.returncode != 0, label
        assert result.stdout == "", label
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (label, result.stderr)
        assert message in lines[0], (label, lines[0])


@pytest.mark.parametrize("mode", ["-o", "--in-place"])
def test_corrupt_delta_names_the_object(
    deltaroll: Run, steps: list[Path], tmp_path: Path, mode: str
) -> None:
    delta = tmp_path / "delta"
    assert deltaroll("diff", steps[0], steps[1], "-o", delta).returncode == 0
    digest = _corrupt_payload(delta)
    before = {p.name: p.read_bytes() for p in steps[0].iterdir()}
    args = ["-o", tmp_path / "out"] if mode == "-o" else ["--in-place"]
    result = deltaroll("apply", steps[0], delta, *args)
    assert result.returncode != 0
    assert digest in result.stderr and result.stderr.startswith("error: ")
    assert not (tmp_path / "out").exists()
    assert {p.name: p.read_bytes() for p in steps[0].iterdir()} == before
