"""Reading the wanted version from the downwardAPI file, and the agent-state annotation format."""

from __future__ import annotations

from pathlib import Path

import pytest

from deltaroll.agent.errors import AgentError
from deltaroll.agent.wanted import parse_downward_file, read_wanted_version, unquote_go
from deltaroll.api.agent_state import (
    MAX_MESSAGE_CHARS,
    AgentState,
    format_agent_state,
    parse_agent_state,
)
from deltaroll.api.annotations import POD_VERSION
from deltaroll_sandbox.kubelet.volumes import field_text

TRICKY = {
    POD_VERSION: "3f9a0c1d2e4b5a6978c0d1e2f3a4b5c6",
    "note": 'quotes " and \\ backslash, tab\tnewline\nend',
    "unicode": "Gewichte ✓ — 重み",
    "empty": "",
}


def test_the_kubelets_rendering_reads_back_exactly(tmp_path: Path) -> None:
    text = field_text({"metadata": {"annotations": TRICKY}}, "metadata.annotations")
    assert parse_downward_file(text) == TRICKY
    path = tmp_path / "annotations"
    path.write_text(text)
    assert read_wanted_version(path) == TRICKY[POD_VERSION]


@pytest.mark.parametrize(
    ("quoted", "value"),
    [
        (r'"a\x41\u00e9\U0001F600"', "aAé😀"),
        (r'"\a\b\f\n\r\t\v\\\""', '\a\b\f\n\r\t\v\\"'),
        (r'"\xe2\x9c\x93"', "✓"),  # Go escapes raw bytes of invalid/unprintable UTF-8 this way
    ],
)
def test_go_escapes(quoted: str, value: str) -> None:
    assert unquote_go(quoted) == value


def test_no_annotation_means_no_version(tmp_path: Path) -> None:
    path = tmp_path / "annotations"
    path.write_text('other="x"\n')
    assert read_wanted_version(path) is None
    path.write_text(f'{POD_VERSION}="  "\n')
    assert read_wanted_version(path) is None


def test_a_missing_or_malformed_file_says_how_to_mount_it(tmp_path: Path) -> None:
    with pytest.raises(AgentError, match="downwardAPI volume"):
        read_wanted_version(tmp_path / "nothing")
    bad = tmp_path / "annotations"
    bad.write_text("not an annotation line\n")
    with pytest.raises(AgentError, match="line 1"):
        read_wanted_version(bad)


def test_agent_state_round_trip_and_bounds() -> None:
    value = format_agent_state(AgentState.FAILED, "object 'm/objects/ab' is corrupt:\n delete it")
    assert value == "Failed: object 'm/objects/ab' is corrupt: delete it"
    assert parse_agent_state(value) == (
        AgentState.FAILED,
        "object 'm/objects/ab' is corrupt: delete it",
    )
    assert parse_agent_state("Ready") == (AgentState.READY, "")
    assert parse_agent_state("Bogus: x") == (None, "")
    assert parse_agent_state(None) == (None, "")
    long = format_agent_state(AgentState.PULLING, "x" * 5000)
    assert len(long) == len("Pulling: ") + MAX_MESSAGE_CHARS and long.endswith("...")
