"""Every command the README marks as runnable works: the marked ``sh`` blocks run in order, in one
bash session (so a block can use what an earlier one started or exported), in a scratch folder
that sees the repository's crds/, charts/, examples/ and benchmarks/, on the sandbox and a
``file://`` store. Commands that need a real cluster or a cloud bucket stay unmarked."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
MARKER = "<!-- runnable -->"
SHARED = ("crds", "charts", "examples", "benchmarks")
FENCE = re.compile(r"^```(\S*)\s*$")


def runnable_blocks(text: str) -> list[str]:
    """The ``sh`` blocks right after a runnable marker; a marker before anything else fails."""
    lines = text.splitlines()
    blocks = []
    for index, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        fence = FENCE.match(lines[index + 1]) if index + 1 < len(lines) else None
        assert fence and fence.group(1) == "sh", f"README line {index + 2}: marker without ```sh"
        end = next(i for i in range(index + 2, len(lines)) if lines[i].startswith("```"))
        blocks.append("\n".join(lines[index + 2 : end]))
    return blocks


def test_the_marker_parser_finds_blocks_and_refuses_a_stray_marker() -> None:
    text = f"intro\n{MARKER}\n```sh\necho one\necho two\n```\n```sh\nnot marked\n```\n"
    assert runnable_blocks(text) == ["echo one\necho two"]
    with pytest.raises(AssertionError, match="marker without"):
        runnable_blocks(f"{MARKER}\n```yaml\nkind: Pod\n```\n")


def script(blocks: list[str]) -> str:
    parts = [
        "set -euo pipefail",
        "trap 'kill $(jobs -p) 2>/dev/null || true; wait' EXIT",  # the sandbox, the operator
    ]
    for number, block in enumerate(blocks):
        parts += [block, f"echo '::readme-block-{number}-ran::'"]
    return "\n".join(parts) + "\n"


@pytest.mark.timeout(900)
def test_every_runnable_block_of_the_readme_runs(tmp_path: Path) -> None:
    blocks = runnable_blocks((REPO / "README.md").read_text())
    assert len(blocks) >= 6, "the README lost its runnable blocks"
    for name in SHARED:
        (tmp_path / name).symlink_to(REPO / name)
    bins = [str(Path(sys.executable).parent), str(REPO / ".tools" / "bin")]
    env = {
        **os.environ,
        "PATH": os.pathsep.join([*bins, os.environ.get("PATH", "")]),
        "DELTAROLL_CACHE_DIR": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
    }
    env.pop("KUBECONFIG", None)
    process = subprocess.Popen(
        ["bash", "-c", script(blocks)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=840)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
    logs = "".join(
        f"\n--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
        for p in (tmp_path / "sandbox.log", tmp_path / "operator.log")
        if p.exists()
    )
    assert process.returncode == 0, output[-6000:] + logs
    ran = re.findall(r"::readme-block-(\d+)-ran::", output)
    assert [int(n) for n in ran] == list(range(len(blocks))), output[-3000:]
    # what the blocks claim, checked on what they left behind
    assert "step-1" in output and "Ready" in output
    assert (tmp_path / "pulled-step-2").is_dir()
    assert (tmp_path / "rendered.yaml").stat().st_size > 0
