"""The demo's narration: a live table on a terminal (steps with progress bars, pods, versions,
agent states, the rollout's step and analysis results), plain lines when output is piped.

The story calls :meth:`Narrator.step` around anything that takes time and :meth:`Narrator.observe`
with what it just read from the API; the narrator decides how to show it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from deltaroll_demo.observe import Pod, Received


@dataclass
class Snapshot:
    """The latest observation of the cluster."""

    pods: list[Pod] = field(default_factory=list)
    rollout: dict[str, Any] = field(default_factory=dict)
    received: dict[str, Received | None] = field(default_factory=dict)


class Narrator:
    """Shows the story as it happens; records how long each step took."""

    def __init__(self, console: Console, version_names: dict[str, str]) -> None:
        self.console = console
        self.names = version_names  # version id -> human name (v1, v2, v3)
        self.live_view = console.is_terminal
        self.snapshot = Snapshot()
        self.seconds: dict[str, float] = {}
        self._last_line = ""
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self._live: Live | None = None

    def __enter__(self) -> Narrator:
        if self.live_view:
            self._live = Live(
                get_renderable=self._render, console=self.console, refresh_per_second=4
            )
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    @contextmanager
    def step(self, key: str, title: str, total: float | None = None) -> Iterator[StepBar]:
        """Time ``title``; on a terminal a progress bar (pulsing when ``total`` is unknown)."""
        task = self._progress.add_task(title, total=total, detail="")
        if not self.live_view:
            self.console.print(f"==> {title}")
        started = time.perf_counter()
        bar = StepBar(self._progress, task)
        yield bar
        self.seconds[key] = round(time.perf_counter() - started, 2)
        self._progress.update(task, total=total or 1, completed=total or 1, detail="done")
        self._progress.stop_task(task)
        if not self.live_view:
            self.console.print(f"    done in {self.seconds[key]:.1f} s {bar.detail}")

    def observe(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        if not self.live_view:
            line = self._plain_line()
            if line != self._last_line:
                self.console.print(line, soft_wrap=True)
                self._last_line = line

    def name(self, version: str | None) -> str:
        if version is None:
            return "-"
        return self.names.get(version, version[:8])

    def _plain_line(self) -> str:
        rollout = self.snapshot.rollout
        pods = " | ".join(
            f"{p.name[-5:]} {self.name(p.wanted)}->{self.name(p.current)} {p.agent_state}"
            f"{' ready' if p.ready else ''}"
            for p in self.snapshot.pods
        )
        step = rollout.get("currentStepIndex")
        return (
            f"    [{rollout.get('phase', '-')} stable={self.name(rollout.get('stableVersion'))}"
            f" canary={self.name(rollout.get('canaryVersion'))} step={step}] {pods}"
        )

    def _render(self) -> RenderableType:
        return Group(self._progress, self._pods_table(), self._rollout_table())

    def _pods_table(self) -> Table:
        table = Table(title="inference pods", title_justify="left", expand=False)
        for column in ("pod", "wants", "serves", "agent", "Ready", "from bucket", "from peers"):
            table.add_column(column)
        for pod in self.snapshot.pods:
            received = self.snapshot.received.get(pod.name)
            table.add_row(
                pod.name,
                self.name(pod.wanted),
                self.name(pod.current),
                pod.agent_state,
                "yes" if pod.ready else "no",
                f"{received.bucket / 1e6:.2f} MB" if received is not None else "-",
                f"{received.peers / 1e6:.2f} MB" if received is not None else "-",
            )
        return table

    def _rollout_table(self) -> Table:
        rollout = self.snapshot.rollout
        table = Table(title="ModelDeployment demo-llm", title_justify="left", expand=False)
        for column in ("phase", "stable", "canary", "step", "analysis", "message"):
            table.add_column(column, overflow="fold")
        results = rollout.get("analysisResults") or []
        analysis = "; ".join(
            f"{self.name(r.get('version'))} {r.get('phase')} "
            f"({r.get('successful', 0)} ok, {r.get('failed', 0)} failed, "
            f"last {r.get('lastValue', '-')})"
            for r in results[-2:]
        )
        table.add_row(
            str(rollout.get("phase", "-")),
            self.name(rollout.get("stableVersion")),
            self.name(rollout.get("canaryVersion")),
            str(rollout.get("currentStepIndex", "-")),
            analysis or "-",
            str(rollout.get("message", ""))[:120],
        )
        return table


@dataclass
class StepBar:
    """The handle a step uses to move its bar and say what it is at."""

    progress: Progress
    task: TaskID
    detail: str = ""

    def advance(self, amount: float = 1) -> None:
        self.progress.advance(self.task, amount)

    def show(self, detail: str) -> None:
        self.detail = detail
        self.progress.update(self.task, detail=detail)
