"""``deltaroll agent run`` as a real subprocess: configuration mistakes are one clear line."""

from __future__ import annotations

import subprocess
from pathlib import Path

from agent.helpers import subprocess_env
from fixtures.cli import DELTAROLL


def run_agent(tmp_path: Path, *extra: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in subprocess_env().items() if k not in ("POD_NAME", "POD_NAMESPACE")}
    return subprocess.run(
        [
            str(DELTAROLL), "agent", "run",
            f"--store=file://{tmp_path / 'store'}", "--model=tiny",
            f"--annotations-file={tmp_path / 'annotations'}",
            f"--weights-dir={tmp_path / 'weights'}",
            "--engine-url=http://127.0.0.1:9", "--health-port=0", *extra,
        ],  # fmt: skip
        env={**base, **env}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_without_pod_identity_it_says_which_env_to_set(tmp_path: Path) -> None:
    done = run_agent(tmp_path, "--engine=reference")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: the agent needs its pod's name and namespace: set POD_NAME and POD_NAMESPACE "
        "from the downward API (fieldRef metadata.name / metadata.namespace)"
    ]


def test_an_unknown_engine_kind_is_refused(tmp_path: Path) -> None:
    done = run_agent(tmp_path, "--engine=tgi", POD_NAME="p", POD_NAMESPACE="ns")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: unknown engine kind 'tgi'")


def test_a_bad_interval_names_the_flag(tmp_path: Path) -> None:
    done = run_agent(
        tmp_path, "--engine=reference", "--poll-interval=0", POD_NAME="p", POD_NAMESPACE="ns"
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: --poll-interval:")


def test_a_negative_seeder_grace_names_the_flag(tmp_path: Path) -> None:
    done = run_agent(
        tmp_path, "--engine=reference", "--seeder-grace=-1", POD_NAME="p", POD_NAMESPACE="ns"
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: --seeder-grace:")


def test_peers_without_a_token_name_the_flag_and_the_audience(tmp_path: Path) -> None:
    done = run_agent(
        tmp_path, "--engine=reference", "--peers=app=x", POD_NAME="p", POD_NAMESPACE="ns"
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: --peer-token:") and "audience deltaroll-peer" in line


def test_the_charts_sidecar_snippet_is_what_the_command_accepts() -> None:
    import re

    import typer
    import yaml

    from deltaroll.cli.main import build_app

    readme = Path(__file__).parents[2] / "charts" / "deltaroll" / "README.md"
    match = re.search(
        r"<!-- agent-sidecar-snippet[^>]*-->\s*```yaml\n(.*?)```", readme.read_text(), re.S
    )
    assert match
    (agent,) = yaml.safe_load(match.group(1))["spec"]["template"]["spec"]["initContainers"]
    assert agent["args"][:2] == ["agent", "run"]
    group = typer.main.get_command(build_app())
    run = group.commands["agent"].commands["run"]  # type: ignore[attr-defined]
    params = run.make_context("run", list(agent["args"][2:])).params
    assert params["engine"] == "vllm" and params["engine_url"] == "http://127.0.0.1:8001"
    assert params["health_port"] == 8081 and params["health_host"] == "127.0.0.1"
    probe = " ".join(agent["startupProbe"]["exec"]["command"])
    assert "http://127.0.0.1:8081/healthz" in probe  # loopback: no port leaves the pod
    assert {e["name"] for e in agent["env"]} >= {"POD_NAME", "POD_NAMESPACE"}


def test_a_negative_scrub_rate_names_the_flag_from_the_flag_or_the_env(tmp_path: Path) -> None:
    pod = {"POD_NAME": "p", "POD_NAMESPACE": "ns"}
    by_flag = run_agent(tmp_path, "--engine=reference", "--scrub-rate=-1", **pod)
    by_env = run_agent(tmp_path, "--engine=reference", DELTAROLL_SCRUB_RATE="-1", **pod)
    for done in (by_flag, by_env):
        assert done.returncode == 2
        assert done.stderr.strip().startswith("error: --scrub-rate:")
