"""Pods as local processes: env, volumes, ports, readiness, termination messages, restarts, logs."""

from __future__ import annotations

import json
import urllib.request

import pytest
from kubernetes.client import ApiException
from sandbox_helpers import pod_manifest

from deltaroll_sandbox.polling import wait_for


def _phase(core, name):
    return core.read_namespaced_pod(name, "default").status.phase


def _finished(core, name):
    return wait_for(
        lambda: (
            _phase(core, name) in ("Succeeded", "Failed")
            and core.read_namespaced_pod(name, "default")
        )
    )


def test_env_from_secrets_configmaps_and_the_pod(core):
    core.create_namespaced_secret(
        "default", {"metadata": {"name": "s"}, "stringData": {"token": "t0ps3cret"}}
    )
    core.create_namespaced_config_map(
        "default", {"metadata": {"name": "c"}, "data": {"mode": "fast", "x": "1"}}
    )
    names = ("TOKEN", "MODE", "NAME", "NS", "IP", "GREETING", "C_x")
    code = f"import os; print(*[os.environ[k] for k in {names!r}])"
    env = [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "mode"}}},
        {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "GREETING", "value": "hi-$(NAME)"},
    ]
    core.create_namespaced_pod(
        "default",
        pod_manifest(
            "envy",
            code,
            container={"env": env, "envFrom": [{"configMapRef": {"name": "c"}, "prefix": "C_"}]},
        ),
    )
    assert _finished(core, "envy").status.phase == "Succeeded"
    assert (
        core.read_namespaced_pod_log("envy", "default")
        == "t0ps3cret fast envy default 127.0.0.1 hi-envy 1\n"
    )


def test_missing_secret_holds_the_container(core):
    env = [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "later", "key": "k"}}}]
    core.create_namespaced_pod(
        "default",
        pod_manifest("waits", "import os; print(os.environ['T'])", container={"env": env}),
    )

    def waiting_reason():
        statuses = core.read_namespaced_pod("waits", "default").status.container_statuses or []
        return statuses and statuses[0].state.waiting and statuses[0].state.waiting.reason

    # ContainerCreating comes first: wait for the reason itself
    wait_for(lambda: waiting_reason() == "CreateContainerConfigError")
    core.create_namespaced_secret(
        "default", {"metadata": {"name": "later"}, "stringData": {"k": "now"}}
    )
    assert _finished(core, "waits").status.phase == "Succeeded"
    assert core.read_namespaced_pod_log("waits", "default") == "now\n"


def test_volumes_map_mount_paths_to_folders(sandbox, core, tmp_path):
    host = tmp_path / "host"
    host.mkdir()
    (host / "in.txt").write_text("from host")
    core.create_namespaced_config_map(
        "default", {"metadata": {"name": "cfg"}, "data": {"app.conf": "k=v"}}
    )
    code = (
        "import sys; open('/scratch/a','w').write('x'); open('/claim/b','w').write('y');"
        "print(open('/host/in.txt').read(), open('/etc/cfg/app.conf').read(), sys.argv[1])"
    )
    volumes = [
        {"name": "scratch", "emptyDir": {}},
        {"name": "claim", "persistentVolumeClaim": {"claimName": "data"}},
        {"name": "host", "hostPath": {"path": str(host)}},
        {"name": "cfg", "configMap": {"name": "cfg"}},
    ]
    mounts = [
        {"name": v["name"], "mountPath": p}
        for v, p in zip(volumes, ["/scratch", "/claim", "/host", "/etc/cfg"], strict=True)
    ]
    manifest = pod_manifest(
        "vols",
        code,
        volumes=volumes,
        container={"volumeMounts": mounts, "args": ["--out=/claim/b"]},
    )
    core.create_namespaced_pod("default", manifest)
    assert _finished(core, "vols").status.phase == "Succeeded"
    claim = sandbox.directory / "pvcs" / "default" / "data"
    assert core.read_namespaced_pod_log("vols", "default") == f"from host k=v --out={claim}/b\n"
    assert (claim / "b").read_text() == "y"  # a claim is a folder shared by every pod that uses it


def test_downward_api_annotations_are_rewritten(core):
    code = (
        "import time, pathlib\n"
        "f = pathlib.Path('/etc/podinfo/annotations')\n"
        "while 'version=\"2\"' not in f.read_text(): time.sleep(0.05)\n"
        "print(f.read_text())"
    )
    volume = {
        "name": "podinfo",
        "downwardAPI": {
            "items": [{"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}}]
        },
    }
    manifest = pod_manifest(
        "dapi",
        code,
        metadata={"annotations": {"version": "1"}},
        volumes=[volume],
        container={"volumeMounts": [{"name": "podinfo", "mountPath": "/etc/podinfo"}]},
    )
    core.create_namespaced_pod("default", manifest)
    wait_for(lambda: _phase(core, "dapi") == "Running")
    core.patch_namespaced_pod("dapi", "default", {"metadata": {"annotations": {"version": "2"}}})
    assert _finished(core, "dapi").status.phase == "Succeeded"
    assert 'version="2"' in core.read_namespaced_pod_log("dapi", "default")


def test_termination_message_and_restarts(core):
    code = "open('/dev/termination-log','w').write('out of cheese'); raise SystemExit(3)"
    core.create_namespaced_pod("default", pod_manifest("crash", code, restartPolicy="OnFailure"))

    def restarted_twice():
        statuses = core.read_namespaced_pod("crash", "default").status.container_statuses or []
        return statuses and statuses[0].restart_count >= 2 and statuses[0]

    status = wait_for(restarted_twice)
    assert status.last_state.terminated.exit_code == 3
    assert status.last_state.terminated.message == "out of cheese"
    assert core.read_namespaced_pod("crash", "default").status.phase == "Running"
    core.create_namespaced_pod(
        "default",
        pod_manifest(
            "once",
            "print('last words'); raise SystemExit(5)",
            container={"terminationMessagePolicy": "FallbackToLogsOnError"},
        ),
    )
    terminated = _finished(core, "once").status.container_statuses[0].state.terminated
    assert terminated.exit_code == 5 and terminated.reason == "Error"
    assert terminated.message == "last words"  # no message file: the log's tail stands in


def test_readiness_gates_and_probe_on_the_pods_own_port(core):
    code = (
        "import http.server, os\n"
        "port = int(os.environ['DELTAROLL_SANDBOX_PORT_HTTP'])\n"
        "handler = http.server.SimpleHTTPRequestHandler\n"
        "http.server.HTTPServer(('127.0.0.1', port), handler).serve_forever()"
    )
    manifest = pod_manifest(
        "web",
        code,
        restartPolicy="Always",
        readinessGates=[{"conditionType": "example.com/Swapped"}],
        container={
            "ports": [{"name": "http", "containerPort": 8000}],
            "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
        },
    )
    core.create_namespaced_pod("default", manifest)

    def conditions():
        pod = core.read_namespaced_pod("web", "default")
        return {c.type: c.status for c in pod.status.conditions or []}

    wait_for(lambda: conditions().get("ContainersReady") == "True")
    assert conditions()["Ready"] == "False"  # the gate is not True yet
    pod = core.read_namespaced_pod("web", "default")
    ports = json.loads(pod.metadata.annotations["sandbox.deltaroll.dev/ports"])
    with urllib.request.urlopen(
        f"http://127.0.0.1:{ports['http']}/"
    ) as response:  # the pod's own port
        assert response.status == 200
    core.patch_namespaced_pod_status(
        "web",
        "default",
        {"status": {"conditions": [{"type": "example.com/Swapped", "status": "True"}]}},
    )
    wait_for(lambda: conditions().get("Ready") == "True")


def test_deleting_a_pod_is_graceful(sandbox, core, tmp_path):
    code = (
        "import signal, sys, time\n"
        "def bye(*_):\n"
        "    open('/out/bye', 'w').write('terminated'); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "open('/out/ready', 'w').write('1')\n"
        "time.sleep(600)"
    )
    volumes = [{"name": "out", "hostPath": {"path": str(tmp_path)}}]
    mounts = [{"name": "out", "mountPath": "/out"}]
    manifest = pod_manifest(
        "sleeper", code, restartPolicy="Always", volumes=volumes, container={"volumeMounts": mounts}
    )
    core.create_namespaced_pod("default", manifest)
    wait_for(lambda: (tmp_path / "ready").exists())
    # The pod is Terminating first (SIGTERM, grace period), then its kubelet removes it.
    terminating = core.delete_namespaced_pod("sleeper", "default")
    assert terminating.metadata.deletion_timestamp is not None
    wait_for(lambda: not core.list_namespaced_pod("default").items)
    assert (tmp_path / "bye").read_text() == "terminated"
    assert not sandbox.live_pids()


def test_logs_of_restarts_and_the_cli(sandbox, core):
    code = "import os, sys; print('run'); sys.exit(1)"
    core.create_namespaced_pod("default", pod_manifest("twice", code, restartPolicy="OnFailure"))
    wait_for(
        lambda: (
            (core.read_namespaced_pod("twice", "default").status.container_statuses or [None])[0]
            and core.read_namespaced_pod("twice", "default")
            .status.container_statuses[0]
            .restart_count
            >= 1
        )
    )
    assert core.read_namespaced_pod_log("twice", "default", previous=True) == "run\n"


def test_init_containers_and_a_native_sidecar(core):
    shared = [{"name": "work", "mountPath": "/work"}]
    init = {
        "name": "fetch",
        "image": "ignored",
        "volumeMounts": shared,
        "command": ["python", "-c", "open('/work/weights','w').write('w1')"],
    }
    # The sidecar is "started" only once its startupProbe passes (the file exists), and only
    # then do the main containers start: they can count on it.
    sidecar = {
        "name": "agent",
        "image": "ignored",
        "restartPolicy": "Always",
        "volumeMounts": shared,
        "command": [
            "python",
            "-c",
            "import time; time.sleep(0.3); open('/work/agent','w').write('up'); time.sleep(600)",
        ],
        "startupProbe": {  # room for a slow python start on a busy machine: no restart
            "exec": {"command": ["test", "-f", "/work/agent"]},
            "periodSeconds": 1,
            "failureThreshold": 60,
        },
    }
    code = "print(open('/work/weights').read(), open('/work/agent').read())"
    manifest = pod_manifest(
        "init",
        code,
        initContainers=[init, sidecar],
        volumes=[{"name": "work", "emptyDir": {}}],
        container={"volumeMounts": shared},
    )
    core.create_namespaced_pod("default", manifest)
    pod = _finished(core, "init")  # the sidecar does not keep the pod from completing
    assert pod.status.phase == "Succeeded"
    assert core.read_namespaced_pod_log("init", "default") == "w1 up\n"
    statuses = {s.name: s for s in pod.status.init_container_statuses}
    assert statuses["fetch"].state.terminated.exit_code == 0
    assert statuses["agent"].started and statuses["agent"].restart_count == 0
    assert statuses["agent"].state.terminated is not None  # stopped after the main container


def test_follow_streams_the_log_until_the_container_exits(core):
    code = "import time\nfor i in range(3):\n    print(i, flush=True); time.sleep(0.2)"
    core.create_namespaced_pod("default", pod_manifest("counter", code))
    wait_for(lambda: _phase(core, "counter") in ("Running", "Succeeded"))
    response = core.read_namespaced_pod_log(
        "counter", "default", follow=True, _preload_content=False
    )
    assert response.data.decode() == "0\n1\n2\n"


def test_the_node_and_name_checks(sandbox, core):
    (node,) = core.list_node().items
    assert {c.type: c.status for c in node.status.conditions}["Ready"] == "True"
    assert sandbox.kubectl("get", "nodes").stdout.splitlines()[1].split()[:2] == [
        node.metadata.name,
        "Ready",
    ]
    bad = pod_manifest("bad", "pass", volumes=[{"name": "../escape", "emptyDir": {}}])
    with pytest.raises(ApiException) as err:  # names become folders: they must be DNS labels
        core.create_namespaced_pod("default", bad)
    assert err.value.status == 422 and "spec.volumes[0].name" in err.value.body


def test_a_failing_startup_probe_kills_the_container(core):
    probe = {"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 1}
    manifest = pod_manifest(
        "stuck", "import time; time.sleep(600)", container={"startupProbe": probe}
    )
    core.create_namespaced_pod("default", manifest)
    pod = _finished(core, "stuck")
    assert pod.status.phase == "Failed"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 128 + 15  # SIGTERM
    events = core.list_namespaced_event("default", field_selector="involvedObject.name=stuck")
    assert "Unhealthy" in {e.reason for e in events.items}


def test_pods_with_the_same_port_run_side_by_side(api, core):
    import kubernetes

    apps = kubernetes.client.AppsV1Api(api)
    labels = {"app": "web"}
    container = {
        "name": "web",
        "image": "ignored",
        # "8000" is the container port: the kubelet hands each pod its own host port instead.
        "command": ["python", "-m", "http.server", "8000", "--bind", "127.0.0.1"],
        "ports": [{"name": "http", "containerPort": 8000}],
        "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1},
    }
    apps.create_namespaced_deployment(
        "default",
        {
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
            },
        },
    )
    wait_for(lambda: apps.read_namespaced_deployment("web", "default").status.ready_replicas == 2)
    pods = core.list_namespaced_pod("default", label_selector="app=web").items
    ports = {
        json.loads(p.metadata.annotations["sandbox.deltaroll.dev/ports"])["8000"] for p in pods
    }
    assert len(ports) == 2
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/") as response:
            assert response.status == 200
    running = core.list_namespaced_pod("default", field_selector="status.phase=Running").items
    assert {p.metadata.name for p in running} == {p.metadata.name for p in pods}
    assert core.list_namespaced_pod("default", field_selector="status.phase=Pending").items == []


def test_a_command_that_cannot_start(core):
    manifest = pod_manifest("nope", "")
    manifest["spec"]["containers"][0]["command"] = ["/no/such/binary"]
    core.create_namespaced_pod("default", manifest)
    terminated = _finished(core, "nope").status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (128, "StartError")
    assert "/no/such/binary" in terminated.message
