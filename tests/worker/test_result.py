"""The termination message always fits Kubernetes' 4096 bytes and stays valid JSON."""

from __future__ import annotations

import json

from deltaroll.worker.result import LIMIT_BYTES, encode, parse_report


def test_a_long_message_is_trimmed_not_the_report() -> None:
    report = {"ok": False, "reason": "InvalidTarget", "message": "x" * 10_000}
    data = encode(report)
    assert len(data) <= LIMIT_BYTES
    decoded = json.loads(data)
    assert decoded["reason"] == "InvalidTarget" and decoded["message"].endswith("...")


def test_reports_round_trip_and_foreign_messages_are_ignored() -> None:
    report = {"ok": True, "version": "a" * 32, "delta_bytes": 12}
    assert parse_report(encode(report).decode()) == report
    assert parse_report("Killed") is None
    assert parse_report("[1, 2]") is None
    assert parse_report(None) is None
