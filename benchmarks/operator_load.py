"""The operator with N = 100, 300 and 1000 ModelDeployments at rest in one namespace (sandbox).

The real operator (``deltaroll operator run``, Kopf over HTTPS, as the demo and the e2e tests run
it) against an API-only sandbox. Each ModelDeployment selects its own pod; the pods are
simulated (:mod:`controllers.simulated_fleet`): pod objects whose agent annotations and Ready
condition are written through the API, as a real agent writes them, because a thousand agent
processes do not fit on a laptop and the operator cannot tell the difference. One of the N (the
"probe") selects two pods and rolls out in canary steps: setWeight 50, an indefinite pause,
setWeight 100, with obedient simulated agents.

For each N, in a fresh sandbox, with the ModelDeployments and pods created first:

- ``first_status_s``: from the operator's start until every ModelDeployment has a status, and
  the CPU seconds the operator and this process (the sandbox's API server) spent meanwhile
  (``first_status_cpu_s``): where that time goes;
- ``requests_per_deployment``: the requests the operator's start cost per ModelDeployment, by
  verb and resource (the sandbox's audit log), until every first status and until at rest
  (``requests_at_start``: their sum until at rest);
- ``idle_cores``: the operator's CPU (utime + stime from /proc/<pid>/stat) over a window at rest,
  in cores; ``idle_requests``: the one-off requests it made in that window (the sandbox's audit
  log; watch streams left out); ``rss_mb``: its resident memory after the window;
- ``start_s``: from a ``spec.version`` patch of the probe to its first pod patched (median of
  the rollouts), and ``promote_s``: from the promote annotation (what ``kubectl deltaroll
  promote`` writes) to the next step's pod patch. The ratios divide them by the same numbers
  with the probe alone (N = 1), measured in the same run.

With ``--baseline DIR`` (a source tree of the code to compare with, e.g. ``git archive main``
unpacked), each N is measured twice in the same run, the baseline's operator first, and each row
says which code ran and the load average before and after it (this machine is shared).

Prints a table on stderr and one JSON object as the last line of stdout (and to --json-out).

Run: flock /tmp/bench.lock .venv/bin/python benchmarks/operator_load.py [--sizes 100,300,1000]
[--baseline DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import controllers.simulated_fleet as fleet  # noqa: E402
from deltaroll.api.annotations import POD_VERSION, PROMOTE  # noqa: E402
from deltaroll_sandbox.testing import RunningSandbox, running_sandbox  # noqa: E402
from rollout import print_json, start_operator, stop  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VERSIONS = ("v1", "v2", "v3", "v4")
PROBE, PROBE_PODS = "probe", ("probe-0", "probe-1")
STEPS = [{"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]
WAIT_S = 600.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no VmRSS for pid {pid}")


def wait_until(check: Callable[[], Any], what: str, poll_s: float = 0.002) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(poll_s)
    raise SystemExit(f"not within {WAIT_S} s: {what}")


def phases(sandbox: RunningSandbox) -> list[str | None]:
    """Every ModelDeployment's status.phase, read inside the sandbox (no request) and without a
    copy of each object: polled every 0.1 s in the API server's loop, the deep copies of a
    thousand objects took a fifth of its time while it served the operator's first statuses."""

    def listed() -> list[str | None]:
        store = sandbox.sandbox.api.store
        rtype = store.registry.lookup(fleet.GROUP, fleet.VERSION, fleet.PLURAL)
        return [
            (obj.get("status") or {}).get("phase")
            for key, obj in store.all_objects()
            if key == rtype.storage_key
        ]

    return list(sandbox.call(listed, timeout=fleet.LOOP_WAIT_S))


def requests_per_deployment(
    sandbox: RunningSandbox, window: tuple[float, float], n: int
) -> dict[str, float]:
    """The one-off requests in ``window`` (time.monotonic()) per ModelDeployment, by verb and
    resource ("LIST pods", "PATCH modeldeployments/status", "POST events"...): what each new
    object costs the API server. Watch streams and discovery are left out."""
    counts = sandbox.requests(*window, timeout=fleet.LOOP_WAIT_S)
    return {kind: round(count / n, 2) for kind, count in counts.most_common()}


def populate(sandbox: RunningSandbox, store_uri: str, n: int) -> None:
    """n - 1 ModelDeployments at rest, each with its pod on v1, and the probe with two."""
    import kubernetes

    client = sandbox.api_client()
    core = kubernetes.client.CoreV1Api(client)
    custom = kubernetes.client.CustomObjectsApi(client)

    def one(i: int) -> None:
        name = f"md-{i:04d}"
        core.create_namespaced_pod(fleet.NAMESPACE, fleet.pod(f"{name}-0", {"app": name}, "v1"))
        fleet.ready(core, f"{name}-0")
        body = fleet.modeldeployment(name, store_uri, "v1", {"app": name})
        custom.create_namespaced_custom_object(
            fleet.GROUP, fleet.VERSION, fleet.NAMESPACE, fleet.PLURAL, body
        )

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(n - 1)))
    for name in PROBE_PODS:
        core.create_namespaced_pod(fleet.NAMESPACE, fleet.pod(name, {"app": PROBE}, "v1"))
        fleet.ready(core, name)
    probe = fleet.modeldeployment(
        PROBE, store_uri, "v1", {"app": PROBE}, strategy={"canary": {"steps": STEPS}}
    )
    custom.create_namespaced_custom_object(
        fleet.GROUP, fleet.VERSION, fleet.NAMESPACE, fleet.PLURAL, probe
    )
    client.close()


def wanted(sandbox: RunningSandbox, name: str) -> str | None:
    annotations = fleet.read(sandbox, "pods", name)["metadata"].get("annotations") or {}
    return annotations.get(POD_VERSION)


def patch_probe(custom: Any, body: dict[str, Any]) -> None:
    custom.patch_namespaced_custom_object(
        fleet.GROUP, fleet.VERSION, fleet.NAMESPACE, fleet.PLURAL, PROBE, body
    )


def roll(sandbox: RunningSandbox, custom: Any, version: str) -> tuple[float, float]:
    """Roll the probe to ``version``: (spec.version -> first pod patched, promote -> next step's
    pod patched), in seconds; returns once the probe is Healthy on ``version``."""
    started = time.perf_counter()
    patch_probe(custom, {"spec": {"version": version}})
    canary = wait_until(
        lambda: next((p for p in PROBE_PODS if wanted(sandbox, p) == version), None),
        "the canary pod patched",
    )
    start_s = time.perf_counter() - started
    wait_until(
        lambda: fleet.read(sandbox, fleet.PLURAL, PROBE)["status"].get("phase") == "Paused",
        "Paused",
    )
    (other,) = [p for p in PROBE_PODS if p != canary]
    started = time.perf_counter()
    patch_probe(custom, {"metadata": {"annotations": {PROMOTE: "step"}}})
    wait_until(lambda: wanted(sandbox, other) == version, "the next step's pod patched")
    promote_s = time.perf_counter() - started
    wait_until(
        lambda: fleet.read(sandbox, fleet.PLURAL, PROBE)["status"].get("stableVersion") == version,
        f"the probe Healthy on {version}",
        poll_s=0.05,
    )
    return start_s, promote_s


def measure(
    root: Path, store_uri: str, n: int, idle_window_s: float, code: Path | None = None
) -> dict[str, Any]:
    """One N in a fresh sandbox; ``code``: the source tree whose operator runs (None: ours)."""
    import kubernetes

    label = "baseline" if code else "change"
    load_before = os.getloadavg()[0]
    with running_sandbox(root / f"sandbox-{n}-{label}", run_pods=False) as sandbox:
        sandbox.kubectl("apply", "-f", str(REPO / "crds"))
        populate(sandbox, store_uri, n)
        started, sandbox_cpu = time.monotonic(), time.process_time()
        operator = start_operator(sandbox, root / f"operator-{n}-{label}.log", code)
        try:
            wait_until(lambda: all(phases(sandbox)), "every status", 0.1)
            first_status_s = time.monotonic() - started
            cpu = {
                "operator": round(cpu_seconds(operator.pid), 1),
                "sandbox": round(time.process_time() - sandbox_cpu, 1),
            }
            wait_until(
                lambda: all(phase == "Healthy" for phase in phases(sandbox)),
                "every ModelDeployment Healthy",
                0.2,
            )
            quiet = wait_until(lambda: fleet.quiet_since(sandbox, 2.0), "two quiet seconds", 0.2)
            requests = {
                "until_first_status": requests_per_deployment(
                    sandbox, (started, started + first_status_s), n
                ),
                "until_at_rest": requests_per_deployment(sandbox, (started, quiet), n),
            }
            window_start, cpu_before = time.monotonic(), cpu_seconds(operator.pid)
            time.sleep(idle_window_s)
            idle_cores = (cpu_seconds(operator.pid) - cpu_before) / (
                time.monotonic() - window_start
            )
            idle_requests = len(fleet.requests_since(sandbox, max(quiet, window_start)))
            memory = rss_mb(operator.pid)
            client = sandbox.api_client()
            agents = fleet.ObedientAgents(client, list(PROBE_PODS)).start()
            custom = kubernetes.client.CustomObjectsApi(client)
            try:
                timings = [roll(sandbox, custom, version) for version in VERSIONS[1:]]
            finally:
                agents.stop()
                client.close()
        finally:
            stop(operator)
    return {
        "code": label,
        "deployments": n,
        "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "first_status_s": round(first_status_s, 2),
        "first_status_cpu_s": cpu,
        "requests_per_deployment": requests,
        "requests_at_start": round(sum(requests["until_at_rest"].values()), 2),
        "idle_cores": round(idle_cores, 4),
        "idle_requests": idle_requests,
        "idle_window_s": idle_window_s,
        "rss_mb": round(memory, 1),
        "start_s": round(statistics.median(t[0] for t in timings), 3),
        "promote_s": round(statistics.median(t[1] for t in timings), 3),
        "start_s_each": [round(t[0], 3) for t in timings],
        "promote_s_each": [round(t[1], 3) for t in timings],
    }


COLUMNS = (
    ("code", "code", 8),
    ("N", "deployments", 6),
    ("first status s", "first_status_s", 15),
    ("reqs/MD", "requests_at_start", 8),
    ("idle cores", "idle_cores", 11),
    ("idle reqs", "idle_requests", 10),
    ("RSS MB", "rss_mb", 8),
    ("start s", "start_s", 8),
    ("x alone", "start_ratio", 8),
    ("promote s", "promote_s", 10),
    ("x alone", "promote_ratio", 8),
    ("load", "load_average", 12),
)


def print_line(cells: list[Any]) -> None:
    widths = [width for _, _, width in COLUMNS]
    print(
        " ".join(f"{str(cell):>{width}}" for cell, width in zip(cells, widths, strict=True)),
        file=sys.stderr,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,300,1000", help="comma-separated N")
    parser.add_argument("--idle-window", type=float, default=20.0, help="seconds at rest")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument(
        "--baseline", type=Path, help="source tree to compare with, measured before each N"
    )
    args = parser.parse_args()
    if args.baseline and not (args.baseline / "operator" / "deltaroll").is_dir():
        raise SystemExit(f"--baseline {args.baseline}: no operator/deltaroll in it")
    sizes = [int(s) for s in args.sizes.split(",") if s]
    with tempfile.TemporaryDirectory(prefix="operator-load-") as tmp:
        root = Path(tmp)
        store_uri = fleet.push_versions(root, VERSIONS)
        alone = measure(root, store_uri, 1, args.idle_window)
        alone.update(start_ratio=1.0, promote_ratio=1.0)
        print_line([title for title, _, _ in COLUMNS])
        print_line([alone[key] for _, key, _ in COLUMNS])
        rows = []
        for n in sizes:
            for code in (args.baseline, None) if args.baseline else (None,):
                row = measure(root, store_uri, n, args.idle_window, code)
                row["start_ratio"] = round(row["start_s"] / alone["start_s"], 2)
                row["promote_ratio"] = round(row["promote_s"] / alone["promote_s"], 2)
                rows.append(row)
                print_line([row[key] for _, key, _ in COLUMNS])
    result = {
        "benchmark": "operator_load",
        "cpu_count": os.cpu_count(),
        "pods": "simulated (agent annotations and Ready written through the API)",
        "baseline": str(args.baseline) if args.baseline else None,
        "alone": alone,
        "rows": rows,
    }
    print_json(result, args.json_out)


if __name__ == "__main__":
    main()
