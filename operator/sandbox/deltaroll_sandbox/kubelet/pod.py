"""One pod on the sandbox's kubelet: its folder, volumes, ports, containers and status.

Init containers run one after the other before the main containers; an init container with
``restartPolicy: Always`` is a native sidecar (Kubernetes 1.29+): once it has started (its
``startupProbe`` succeeded, if it has one) the next containers start; it keeps running (and
restarting) beside the main containers, counts towards readiness, and is stopped once the main
containers are done (so a Job's pod with a sidecar still completes). Probes: ``startupProbe``
gates ``started`` and the other probes (failing it kills the container), ``readinessProbe``
drives ``ready``, ``livenessProbe`` kills the container after ``failureThreshold`` failures.

Status follows the kubelet's conventions: phase Pending → Running → Succeeded/Failed, one
``containerStatuses`` entry per container (state, lastState, ready, restartCount), conditions
PodScheduled, Initialized, ContainersReady and Ready, where Ready also needs every
``readinessGates`` condition (written by others through ``pods/status``) to be True.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import random
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from deltaroll_sandbox.apiserver.resources import ResourceType
from deltaroll_sandbox.apiserver.store import Store, now_rfc3339
from deltaroll_sandbox.apiserver.tokens import TokenIssuer
from deltaroll_sandbox.kubelet import events, probes, volumes
from deltaroll_sandbox.kubelet.environment import (
    ContainerConfigError,
    Lookup,
    command_line,
    container_environment,
    mapped_probe,
)
from deltaroll_sandbox.kubelet.node import SandboxNode
from deltaroll_sandbox.kubelet.processes import Process, ProcessTable

log = structlog.get_logger("deltaroll_sandbox.kubelet")

PORTS_ANNOTATION = "sandbox.deltaroll.dev/ports"
MAX_GRACE_S = 5.0
TOKEN_CHECK_S = 10.0  # how often the pod's ServiceAccount tokens are checked for age
BACKOFF_START_S, BACKOFF_MAX_S = 0.5, 10.0


def pod_dir(sandbox_dir: Path, pod: dict[str, Any]) -> Path:
    meta = pod["metadata"]
    return sandbox_dir / "pods" / meta["namespace"] / f"{meta['name']}-{meta['uid'][:8]}"


def log_path(directory: Path, container: str, restart_count: int) -> Path:
    return directory / "logs" / container / f"{restart_count}.log"


# Host ports handed to pods that still exist. The OS may offer a port again as soon as the probe
# socket closes, before the pod's process binds it; without this two pods could share one port.
_reserved_ports: set[int] = set()
#: Where pods' host ports come from: below the kernel's ephemeral range, so that no process
#: binding port 0 (the operator's own servers, an agent's client sockets) takes one between its
#: reservation and the pod's bind (an agent then failed to start 20 times: EADDRINUSE).
POD_PORTS: range = range(20_000, 32_768)


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _reserve_port() -> int:
    ports = range(POD_PORTS.start, min(POD_PORTS.stop, _ephemeral_low()))
    for port in random.sample(ports, len(ports)):
        if port in _reserved_ports:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:  # every address: a pod's process may bind 0.0.0.0
                sock.bind(("0.0.0.0", port))  # noqa: S104
            except OSError:
                continue
        _reserved_ports.add(port)
        return port
    raise OSError(f"no free port in {ports} for the sandbox's pods")


def _set_condition(
    conditions: list[dict[str, Any]], kind: str, ok: bool, reason: str | None = None
) -> None:
    status = "True" if ok else "False"
    for condition in conditions:
        if condition.get("type") == kind:
            if condition.get("status") != status:
                condition.update(status=status, lastTransitionTime=now_rfc3339())
            if reason and not ok:
                condition["reason"] = reason
            elif ok:
                condition.pop("reason", None)
            return
    new = {
        "type": kind,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": now_rfc3339(),
    }
    if reason and not ok:
        new["reason"] = reason
    conditions.append(new)


@dataclass
class ContainerRecord:
    """What the kubelet knows of one container, rendered into ``containerStatuses``."""

    name: str
    image: str
    state: dict[str, Any] = field(
        default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}}
    )
    last_state: dict[str, Any] = field(default_factory=dict)
    restart_count: int = 0
    ready: bool = False
    started: bool = False
    container_id: str | None = None

    def as_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "state": self.state,
            "lastState": self.last_state,
            "ready": self.ready,
            "restartCount": self.restart_count,
            "started": self.started,
        }
        if self.container_id:
            status["containerID"] = self.container_id
        return status

    @property
    def running(self) -> bool:
        return "running" in self.state


class PodWorker:
    """Runs one pod until it finishes or is deleted."""

    def __init__(
        self,
        store: Store,
        pods: ResourceType,
        pod: dict[str, Any],
        node: SandboxNode,
        sandbox_dir: Path,
        base_env: dict[str, str],
        processes: ProcessTable,
        lookup: Lookup,
        tokens: TokenIssuer,
    ) -> None:
        self.store, self.pods, self.pod = store, pods, pod
        self.namespace, self.name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        self.sandbox_dir, self.base_env, self.processes, self.lookup = (
            sandbox_dir,
            base_env,
            processes,
            lookup,
        )
        self.tokens = tokens
        self.node = node
        self.dir = pod_dir(sandbox_dir, pod)
        spec = pod["spec"]
        self.records = {
            c["name"]: ContainerRecord(c["name"], c.get("image", "")) for c in spec["containers"]
        }
        self.init_records = {
            c["name"]: ContainerRecord(c["name"], c.get("image", ""))
            for c in spec.get("initContainers") or []
        }
        self.initialized = not self.init_records
        self.finished = False
        self.main_done = False
        self.sidecar_names = {
            c["name"]
            for c in spec.get("initContainers") or []
            if c.get("restartPolicy") == "Always"
        }
        self.ports: dict[str, int] = {}
        self.volumes: volumes.PodVolumes | None = None
        self.stopping = False
        self._running: dict[str, Process] = {}
        self.task: asyncio.Task[None] | None = None
        self._rotation: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"pod {self.namespace}/{self.name}")

    async def stop(self, grace_s: float | None = None) -> None:
        self.stopping = True
        for name in self._running:
            self._event("Killing", f"Stopping container {name}")
        grace = min(float(self.pod["spec"].get("terminationGracePeriodSeconds", 30)), MAX_GRACE_S)
        grace = grace if grace_s is None else grace_s
        await asyncio.gather(*(self.processes.stop(p, grace) for p in list(self._running.values())))
        for task in (self.task, self._rotation):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        _reserved_ports.difference_update(self.ports.values())

    def on_update(self, pod: dict[str, Any]) -> None:
        """Someone wrote the pod: refresh downwardAPI files, re-evaluate readiness gates."""
        old_meta, self.pod = self.pod["metadata"], pod
        meta = pod["metadata"]
        if self.volumes is not None and (
            old_meta.get("annotations") != meta.get("annotations")
            or old_meta.get("labels") != meta.get("labels")
        ):
            volumes.refresh_downward(self.volumes, pod)
        self._publish()

    async def _run(self) -> None:
        try:
            await self._prepare()
            pod_policy = self.pod["spec"].get("restartPolicy", "Always")
            init_policy = "Never" if pod_policy == "Never" else "OnFailure"
            sidecars: list[asyncio.Task[int]] = []
            for container in self.pod["spec"].get("initContainers") or []:
                record = self.init_records[container["name"]]
                if container.get("restartPolicy") == "Always":
                    # A native sidecar: it keeps running beside the main containers.
                    sidecars.append(
                        asyncio.create_task(self._run_container(container, record, "Always"))
                    )
                    while not record.started and not sidecars[-1].done():
                        await asyncio.sleep(0.02)
                    continue
                if await self._run_container(container, record, init_policy) != 0:
                    self.finished = True
                    self._publish()
                    return
            self.initialized = True
            self._publish()
            await asyncio.gather(
                *(
                    self._run_container(c, self.records[c["name"]], pod_policy)
                    for c in self.pod["spec"]["containers"]
                )
            )
            self.main_done = True  # sidecars stop once the main containers are done
            for container in self.pod["spec"].get("initContainers") or []:
                if (process := self._running.get(container["name"])) is not None:
                    await self.processes.stop(process, MAX_GRACE_S)
            await asyncio.gather(*sidecars)
            self.finished = True
            self._publish()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("kubelet.pod_failed", pod=f"{self.namespace}/{self.name}")

    async def _prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for container in self.pod["spec"]["containers"] + (
            self.pod["spec"].get("initContainers") or []
        ):
            for port in container.get("ports") or []:
                # a hostPort is that port on the node's address (the process binds $(HOST_IP))
                host_port = int(port["hostPort"]) if port.get("hostPort") else _reserve_port()
                self.ports[str(port["containerPort"])] = host_port
                if port.get("name"):
                    self.ports[port["name"]] = host_port

        def annotate_ports(pod: dict[str, Any]) -> None:
            pod["metadata"].setdefault("annotations", {})[PORTS_ANNOTATION] = json.dumps(
                self.ports, sort_keys=True
            )

        if self.ports:
            self.store.mutate(self.pods, self.namespace, self.name, annotate_ports)
        self._publish()
        self.pod = self.store.find(self.pods, self.namespace, self.name) or self.pod  # hostIP
        while not self.stopping:
            try:
                self.volumes = volumes.prepare(
                    self.pod, self.dir, self.node, self.sandbox_dir, self.lookup, self.tokens
                )
                if self.volumes.tokens:
                    self._rotation = asyncio.create_task(self._rotate_tokens(self.volumes))
                return
            except volumes.VolumeError as exc:
                for record in [*self.init_records.values(), *self.records.values()]:
                    record.state = {"waiting": {"reason": "ContainerCreating", "message": str(exc)}}
                self._publish()
                await asyncio.sleep(1.0)

    async def _rotate_tokens(self, pod_volumes: volumes.PodVolumes) -> None:
        """Replace the pod's ServiceAccount tokens as they age, as the kubelet does: a
        container must read its token file again, not keep the first one."""
        while not self.stopping and not self.finished:
            await asyncio.sleep(TOKEN_CHECK_S)
            try:
                now = datetime.datetime.now(datetime.UTC)
                volumes.rotate_tokens(pod_volumes, self.pod, self.tokens, now)
            except volumes.VolumeError as exc:  # the pod or its ServiceAccount is gone
                log.warning("kubelet.token_not_rotated", pod=self.name, error=str(exc))

    # ---------------------------------------------------------------- containers

    async def _run_container(
        self, container: dict[str, Any], record: ContainerRecord, policy: str
    ) -> int:
        """Run (and restart, per ``policy``) one container until it is done; its last exit code."""
        backoff = BACKOFF_START_S
        container_dir = self.dir / "containers" / container["name"]
        container_dir.mkdir(parents=True, exist_ok=True)
        message_file = container_dir / "termination-log"
        while True:
            assert self.volumes is not None
            mounts = volumes.mount_map(container, self.volumes)
            mounts[container.get("terminationMessagePath", "/dev/termination-log")] = message_file
            started_at = now_rfc3339()
            try:
                env = container_environment(
                    self.pod, container, self.base_env, mounts, self.ports, self.dir, self.lookup
                )
                argv = command_line(container, env, mounts, self.ports)
            except ContainerConfigError as exc:
                if record.state.get("waiting", {}).get("message") != str(exc):
                    self._event("Failed", f"Error: {exc}", "Warning")
                record.state = {
                    "waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}
                }
                self._publish()
                await asyncio.sleep(1.0)
                continue
            except FileNotFoundError as exc:
                code, message, reason = 128, str(exc), "StartError"
                self._event("Failed", f"Error: {exc}", "Warning")
            else:
                try:
                    code, message, reason = await self._execute(
                        container, record, argv, env, mounts, message_file
                    )
                except OSError as exc:  # not found, not executable, a bad workingDir...
                    code, message, reason = 128, f"exec: {exc}", "StartError"
                    self._event("Failed", f"Error: {message}", "Warning")
            record.ready = False
            record.state = {
                "terminated": {
                    "exitCode": code,
                    "reason": reason,
                    "startedAt": started_at,
                    "finishedAt": now_rfc3339(),
                    **({"message": message} if message else {}),
                    **({"containerID": record.container_id} if record.container_id else {}),
                }
            }
            restart = policy == "Always" or (policy == "OnFailure" and code != 0)
            if self.stopping or self.main_done or not restart:
                self._publish()
                return code
            record.last_state = record.state
            record.restart_count += 1
            if code != 0:
                self._event(
                    "BackOff",
                    f"Back-off restarting failed container {container['name']}",
                    "Warning",
                )
            record.state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {backoff}s restarting failed "
                    f"container={container['name']} pod={self.name}",
                }
            }
            self._publish()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _execute(
        self,
        container: dict[str, Any],
        record: ContainerRecord,
        argv: list[str],
        env: dict[str, str],
        mounts: dict[str, Path],
        message_file: Path,
    ) -> tuple[int, str, str]:
        message_file.write_bytes(b"")
        logfile = log_path(self.dir, container["name"], record.restart_count)
        cwd = (
            Path(volumes.rewrite_paths(container["workingDir"], mounts))
            if container.get("workingDir")
            else self.dir
        )
        cwd.mkdir(parents=True, exist_ok=True)
        process = await self.processes.start(argv, env, cwd, logfile)
        self._running[container["name"]] = process
        record.container_id = f"sandbox://{process.pid}"
        record.state = {"running": {"startedAt": now_rfc3339()}}
        self._event("Started", f"Started container {container['name']}")
        record.started = "startupProbe" not in container
        record.ready = record.started and "readinessProbe" not in container
        self._publish()
        checks: dict[str, Any] = {
            kind: mapped_probe(container[kind], env, mounts, self.ports)
            for kind in ("startupProbe", "readinessProbe", "livenessProbe")
            if kind in container
        }
        watchers = [asyncio.create_task(self._probe(checks, record, process, env))]
        try:
            code = await self.processes.wait(process)
        finally:
            for task in watchers:
                task.cancel()
            self._running.pop(container["name"], None)
        code = code if code >= 0 else 128 - code  # killed by signal N: 128+N, as a runtime reports
        message = message_file.read_bytes()[:4096].decode(errors="replace").strip()
        if (
            not message
            and code != 0
            and container.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        ):
            lines = logfile.read_bytes().decode(errors="replace").splitlines()[-80:]
            message = "\n".join(lines)[-2048:]
        return code, message, "Completed" if code == 0 else "Error"

    async def _probe(
        self,
        checks: dict[str, Any],
        record: ContainerRecord,
        process: Process,
        env: dict[str, str],
    ) -> None:
        """The startupProbe first (``started``; failing it kills the container), then the
        readiness and liveness probes, as the kubelet runs them."""
        if "startupProbe" in checks:
            if not await self._probe_loop(checks, record, process, "startupProbe", env):
                return
            record.started = True
            record.ready = "readinessProbe" not in checks
            self._publish()
        await asyncio.gather(
            *(
                self._probe_loop(checks, record, process, kind, env)
                for kind in ("readinessProbe", "livenessProbe")
                if kind in checks
            )
        )

    async def _probe_loop(
        self,
        checks: dict[str, Any],
        record: ContainerRecord,
        process: Process,
        kind: str,
        env: dict[str, str],
    ) -> bool:
        """Probe until the process ends; a startupProbe returns at its first success (True)."""
        probe = checks[kind]
        await asyncio.sleep(float(probe.get("initialDelaySeconds", 0)))
        successes = failures = 0
        while process.returncode is None:
            ok = await probes.check(probe, self.ports, env)
            successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
            if kind == "startupProbe" and ok:
                return True
            if kind == "readinessProbe":
                if ok and successes >= int(probe.get("successThreshold", 1)) and not record.ready:
                    record.ready = True
                    self._publish()
                elif not ok and failures >= int(probe.get("failureThreshold", 3)) and record.ready:
                    record.ready = False
                    self._publish()
            elif not ok and failures >= int(probe.get("failureThreshold", 3)):
                # liveness or startup failed: kill it; restartPolicy decides what comes next
                self._event("Unhealthy", f"{kind[:-5].capitalize()} probe failed", "Warning")
                await self.processes.stop(process, MAX_GRACE_S)
                return False
            await asyncio.sleep(float(probe.get("periodSeconds", 10)))
        return False

    # ---------------------------------------------------------------- status

    def _phase(self) -> str:
        records = list(self.records.values())
        if self.finished:
            failed_init = any(
                r.state.get("terminated", {}).get("exitCode", 0) != 0
                for r in self.init_records.values()
                if r.name not in self.sidecar_names
            )
            if failed_init or any(
                r.state.get("terminated", {}).get("exitCode", 0) != 0 for r in records
            ):
                return "Failed"
            return "Succeeded"
        if self.initialized and any(r.container_id is not None for r in records):
            return "Running"  # a process ran (a startupProbe may still be pending)
        return "Pending"

    def _event(self, reason: str, message: str, kind: str = "Normal") -> None:
        events.record(self.store, self.pod, reason, message, kind, host=self.node.name)

    def _publish(self) -> None:
        """Write the kubelet-owned parts of status; conditions written by others stay."""
        if self.stopping:
            return
        phase = self._phase()
        sidecars = [r for r in self.init_records.values() if r.name in self.sidecar_names]
        containers_ready = all(r.ready for r in [*self.records.values(), *sidecars])
        gates = [g["conditionType"] for g in self.pod["spec"].get("readinessGates") or []]

        def update(pod: dict[str, Any]) -> None:
            status = pod.setdefault("status", {})
            conditions = status.setdefault("conditions", [])
            by_type = {c.get("type"): c for c in conditions}
            gates_ok = all(by_type.get(g, {}).get("status") == "True" for g in gates)
            _set_condition(conditions, "PodScheduled", True)
            _set_condition(conditions, "Initialized", self.initialized, "ContainersNotInitialized")
            _set_condition(
                conditions,
                "ContainersReady",
                containers_ready and phase == "Running",
                "ContainersNotReady",
            )
            ready_reason = (
                "ContainersNotReady" if not containers_ready else "ReadinessGatesNotReady"
            )
            _set_condition(
                conditions,
                "Ready",
                containers_ready and gates_ok and phase == "Running",
                ready_reason,
            )
            status.update(
                phase=phase,
                hostIP=self.node.address,
                hostIPs=[{"ip": self.node.address}],
                podIP="127.0.0.1",
                podIPs=[{"ip": "127.0.0.1"}],
                containerStatuses=[r.as_status() for r in self.records.values()],
            )
            status.setdefault("startTime", now_rfc3339())
            if self.init_records:
                status["initContainerStatuses"] = [
                    r.as_status() for r in self.init_records.values()
                ]

        self.store.mutate(self.pods, self.namespace, self.name, update, subresource="status")
