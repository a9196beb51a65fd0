"""The demo's bytes table as an 80-column terminal shows it: whole pod names, percentages."""

from __future__ import annotations

import re

from rich.console import Console

from deltaroll_demo.summary import print_summary

FULL = 48_123_456
PODS = [f"demo-llm-5d8f7c9b4f-{suffix}" for suffix in ("x0k2p", "q7wzn", "b2mtd", "k9rfs")]


def test_the_bytes_table_fits_80_columns_with_whole_names_and_percentages() -> None:
    shipped = {"v1": 31_234_567, "v2": 2_345_678, "v3": 0}
    outcome = {
        "full_checkpoint_bytes": FULL,
        "bytes_per_pod_per_version": {pod: dict(shipped) for pod in PODS},
        "peer_bytes_per_pod_per_version": {
            pod: {"v1": 0, "v2": 1_172_839, "v3": 0} for pod in PODS
        },
        "pause_per_pod_per_version": {
            pod: {
                "v1": {
                    "version": "v1",
                    "method": "disk-reload",
                    "pause_s": 4.75,
                    "bytes_applied": 1,
                },
                "v2": {
                    "version": "v2",
                    "method": "in-memory",
                    "pause_s": 0.0123,
                    "bytes_applied": 1,
                },
                "v3": {"version": "v2", "method": "in-memory", "pause_s": 0.0, "bytes_applied": 1},
            }
            for pod in PODS
        },
        "step_seconds": {},
        "checks": {},
        "failure": None,
    }
    console = Console(width=80, record=True, force_terminal=False)
    print_summary(console, outcome, "/tmp/kubeconfig", keep=False)
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "…" not in text
    for pod in PODS:
        assert pod in text
    assert len(re.findall(r"\b64\.91%", text)) == len(PODS)  # 31,234,567 of 48,123,456
    assert len(re.findall(r"\b4\.87%", text)) == len(PODS)
    assert "x)" not in text  # no raw ratios
    assert len(re.findall(r"peers 50\.00%", text)) == len(PODS)  # half of v2 from peers
    assert len(re.findall(r"peers 0\.00%", text)) == len(PODS)  # v1 all from the bucket
    assert len(re.findall(r"12\.3 ms", text)) == len(PODS)  # each pod's in-memory pause
    assert len(re.findall(r"in-memory v2", text)) == 2 * len(PODS)
