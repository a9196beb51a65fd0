"""Readiness and liveness probes (httpGet, tcpSocket, exec) against a container's host ports."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp


async def check(probe: dict[str, Any], ports: dict[str, int], env: dict[str, str]) -> bool:
    """One probe attempt; any error or timeout is a failure, as on a cluster."""
    timeout = float(probe.get("timeoutSeconds", 1))
    try:
        if "httpGet" in probe:
            spec = probe["httpGet"]
            port = ports.get(str(spec["port"]), spec["port"])
            url = f"http://127.0.0.1:{port}{spec.get('path', '/')}"
            client_timeout = aiohttp.ClientTimeout(total=timeout)
            async with (
                aiohttp.ClientSession(timeout=client_timeout) as session,
                session.get(url) as response,
            ):
                return 200 <= response.status < 400
        if "tcpSocket" in probe:
            port = ports.get(str(probe["tcpSocket"]["port"]), probe["tcpSocket"]["port"])
            _, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", int(port)), timeout
            )
            writer.close()
            return True
        if "exec" in probe:
            process = await asyncio.create_subprocess_exec(
                *probe["exec"]["command"],
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                return await asyncio.wait_for(process.wait(), timeout) == 0
            finally:
                if process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    await process.wait()
    except (OSError, TimeoutError, aiohttp.ClientError):
        return False
    return False
