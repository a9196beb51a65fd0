"""``python -m deltaroll_demo [--workdir DIR] [--keep]`` runs the rollout story;
``python -m deltaroll_demo codec`` runs the codec-only demo (diff/apply/verify on local files)."""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Console

DEFAULT_WORKDIR = Path(".demo/rollout")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m deltaroll_demo", description=__doc__)
    parser.add_argument("mode", nargs="?", choices=("rollout", "codec"), default="rollout")
    parser.add_argument("--workdir", type=Path, default=None, help="recreated on every run")
    parser.add_argument(
        "--keep", action="store_true", help="keep the sandbox and operator running at the end"
    )
    return parser.parse_args(argv)


def rollout(workdir: Path, keep: bool) -> dict[str, Any]:
    from deltaroll.errors import DeltarollError
    from deltaroll.logs import configure_logging
    from deltaroll_demo.narration import Narrator
    from deltaroll_demo.story import Story
    from deltaroll_demo.summary import checks, print_summary, result
    from deltaroll_sandbox.testing import running_sandbox

    configure_logging("console", "warning")
    workdir = workdir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    console = Console(highlight=False)
    failure: str | None = None
    with ExitStack() as stack:
        with Narrator(console, {}) as narrator:
            with narrator.step("sandbox", "start the sandbox control plane (API + kubelet)"):
                sandbox = stack.enter_context(running_sandbox(workdir / "sandbox"))
            story = Story(sandbox, workdir, narrator)
            stack.callback(story.stop_operator)
            try:
                story.install()
                story.train()
                story.publish_anchor()
                story.deploy_v1()
                story.compute_delta("v2", "v1")
                story.roll_out("v2", expect="Healthy", events={"RolloutStarted", "Promoted"})
                story.compute_delta("v3", "v2")
                story.roll_out("v3", expect="Degraded", events={"RolloutStarted", "AnalysisFailed"})
            except DeltarollError as exc:  # a step that did not happen, or a store error
                failure = str(exc)
        facts = checks(story.record, story.store_uri, workdir / "check-cache")
        outcome = result(story.record, narrator.seconds, facts, failure)
        print_summary(console, outcome, str(sandbox.kubeconfig_path), keep)
        if keep:
            wait_for_interrupt()
    return outcome


def wait_for_interrupt() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.mode == "codec":
        from deltaroll_demo import codec

        return 0 if codec.main(args.workdir or codec.DEFAULT_WORKDIR)["ok"] else 1
    # SIGTERM unwinds like Ctrl-C, so the sandbox stops every pod process it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    outcome = rollout(args.workdir or DEFAULT_WORKDIR, args.keep)
    sys.stdout.flush()
    sys.stdout.write(json.dumps(outcome, sort_keys=True) + "\n")
    return 0 if outcome["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
