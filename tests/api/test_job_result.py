"""The termination message always fits Kubernetes' 4096 bytes and stays valid JSON."""

from __future__ import annotations

import json

from deltaroll.api.job_result import LIMIT_BYTES, JobReport


def test_a_long_message_is_trimmed_not_the_report() -> None:
    report = {"ok": False, "reason": "InvalidTarget", "message": "x" * 10_000}
    data = JobReport(**report).encode()
    assert len(data) <= LIMIT_BYTES
    decoded = json.loads(data)
    assert decoded["reason"] == "InvalidTarget" and decoded["message"].endswith("...")


def test_reports_round_trip_and_foreign_messages_are_ignored() -> None:
    report = {"ok": True, "version": "a" * 32, "delta_bytes": 12}
    parsed = JobReport.parse(JobReport(**report).encode().decode())
    assert parsed is not None and parsed.to_dict() == report
    assert JobReport.parse("Killed") is None
    assert JobReport.parse("[1, 2]") is None
    assert JobReport.parse(None) is None
