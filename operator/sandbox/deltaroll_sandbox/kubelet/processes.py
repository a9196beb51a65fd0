"""Starting and stopping container processes, each in its own process group.

A :class:`ProcessTable` remembers every process it started until it is reaped, so a stopping
sandbox kills all of them (and their children, via the process group) and leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

Process = asyncio.subprocess.Process


def _signal_group(process: Process, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


class ProcessTable:
    """The processes of one kubelet."""

    def __init__(self) -> None:
        self._live: set[Process] = set()

    async def start(
        self, argv: list[str], env: dict[str, str], cwd: Path, log_path: Path
    ) -> Process:
        """Start ``argv`` with stdout and stderr appended to ``log_path``."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log_file:
            process = await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                cwd=cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own process group: we can stop its children too
            )
        self._live.add(process)
        return process

    async def wait(self, process: Process) -> int:
        code = await process.wait()
        _signal_group(process, signal.SIGKILL)  # orphaned children of a finished container
        self._live.discard(process)
        return code

    async def stop(self, process: Process, grace_s: float) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace_s``; returns once it is reaped."""
        if process.returncode is None:
            _signal_group(process, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(process.wait()), timeout=grace_s)
        _signal_group(process, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            await process.wait()
        self._live.discard(process)

    async def stop_all(self, grace_s: float) -> None:
        await asyncio.gather(*(self.stop(p, grace_s) for p in list(self._live)))

    def live_pids(self) -> set[int]:
        return {p.pid for p in self._live if p.returncode is None}
