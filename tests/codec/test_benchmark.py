"""The codec benchmark runs end to end in --quick mode and reports the JSON it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PEERS = ("deltaroll", "slime_xor", "trl_gap_delta", "trl_raw")


@pytest.mark.slow
def test_quick_benchmark_reports_its_json(tmp_path: Path) -> None:
    json_out = tmp_path / "result.json"
    completed = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "codec.py"),
            "--quick",
            "--workdir",
            str(tmp_path / "work"),
            "--json-out",
            str(json_out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert json.loads(json_out.read_text()) == result
    assert "worst ratio vs slime xor" in completed.stderr  # the table

    assert result["benchmark"] == "codec" and result["quick"] is True
    assert result["training"]["optimizer"] == "AdamW"
    assert len(result["pairs"]) == result["training"]["steps"]
    for pair in result["pairs"]:
        assert pair["bit_exact"] is True
        assert 0 < pair["changed_elements"] < pair["total_elements"]
        assert set(pair["bytes"]) == set(PEERS)
        assert set(pair["bytes_per_changed_element"]) == set(PEERS)
        # The peers' sizes follow from their descriptions: 4-byte indices or 2- to 4-byte gaps,
        # plus the 2-byte bf16 values.
        assert pair["bytes"]["trl_raw"] == 6 * pair["changed_elements"]
        assert 4 <= pair["bytes"]["trl_gap_delta"] / pair["changed_elements"] <= 6
        assert pair["bytes"]["deltaroll"] < pair["bytes"]["slime_xor"]
        for key in ("encode_s", "apply_s", "reverse_apply_s", "load_target_s"):
            assert pair[key] > 0
    for key in ("copyto_gbps", "diff_gbps", "diff_vs_copyto", "encode_gbps"):
        assert result["throughput"][key] > 0
    assert "base bytes + target bytes" in result["throughput"]["definition"]
    targets = result["targets"]
    assert targets["bit_exact"] is True
    assert isinstance(targets["size_met"], bool) and isinstance(targets["throughput_met"], bool)
    assert result["throughput"]["torch_payloads_identical"] is True
    assert targets["worst_vs_slime_xor"] == max(
        pair["ratio_vs"]["slime_xor"] for pair in result["pairs"]
    )
