"""Kopf's own examples, run the way Kopf's e2e tests run them: ``kubectl apply -f crd.yaml``,
the operator under KopfRunner, ``kubectl apply/delete -f obj.yaml``."""

from __future__ import annotations

from pathlib import Path

import kopf.testing
import pytest
from sandbox_helpers import MANIFESTS

from deltaroll_sandbox.polling import wait_for

OPERATOR = Path(__file__).parent / "kopf_examples_operator.py"
KEX = ("kopf.dev", "v1", "default", "kopfexamples", "kopf-example-1")


@pytest.mark.slow
def test_kopf_examples(sandbox, core, custom):
    sandbox.kubectl("apply", "-f", str(MANIFESTS / "kopfexamples-crd.yaml"))
    with kopf.testing.KopfRunner(
        ["run", "-A", "--standalone", str(OPERATOR)], timeout=60
    ) as runner:
        sandbox.kubectl("apply", "-f", str(MANIFESTS / "kopfexample.yaml"))

        def status():
            return custom.get_namespaced_custom_object(*KEX).get("status", {})

        wait_for(lambda: "create_with_retry" in status() and "create_fn" in status(), timeout=120)
        assert status()["create_with_retry"] == {"job2-status": 100}
        table = sandbox.kubectl("get", "kopfexamples").stdout.splitlines()
        assert table[0].split() == ["NAME", "DURATION", "CHILDREN", "MESSAGE"]
        assert table[1].split()[1] == "1m" and table[1].split()[3] == "created"

        # The child pod really ran `sh -x -c ...` with its env (and, restartPolicy being Always,
        # runs it again: as on a cluster, it never "succeeds").
        (pod,) = core.list_namespaced_pod(
            "default", label_selector="application=kopf-example-10"
        ).items
        name = pod.metadata.name

        def restarts():
            statuses = core.read_namespaced_pod(name, "default").status.container_statuses or []
            return statuses[0].restart_count if statuses else 0

        wait_for(lambda: restarts() >= 1)
        assert "FIELD=value" in core.read_namespaced_pod_log(name, "default", previous=True)

        events = core.list_namespaced_event(
            "default", field_selector="involvedObject.name=kopf-example-1"
        )
        assert {"AnyReason", "SomeReason"} <= {e.reason for e in events.items}

        sandbox.kubectl(
            "patch", "kex", "kopf-example-1", "--type=merge", "-p", '{"spec":{"field":"changed"}}'
        )
        wait_for(lambda: status().get("field") == "value -> changed")
        wait_for(lambda: status().get("monitor") == {"monitored": True})

        sandbox.kubectl(
            "delete", "-f", str(MANIFESTS / "kopfexample.yaml")
        )  # waits: Kopf's finalizer
        wait_for(lambda: core.list_namespaced_pod("default").items == [])  # the child is collected
    assert runner.exit_code == 0
    assert runner.exception is None
    assert "Whoops!" in runner.output  # the intentional, retried failure
    assert runner.output.count("Traceback") == 0, runner.output
