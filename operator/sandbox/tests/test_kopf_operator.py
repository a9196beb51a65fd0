"""Kopf itself against the sandbox: a finalizer, a timer, a status patch, a Job that really runs,
and the owner-reference cascade, end to end."""

from __future__ import annotations

from pathlib import Path

import kopf.testing
import pytest
from kubernetes.client import ApiException
from sandbox_helpers import WIDGETS, widget

from deltaroll_sandbox.polling import wait_for

OPERATOR = Path(__file__).parent / "kopf_widget_operator.py"


@pytest.mark.slow
def test_kopf_operator_end_to_end(sandbox, core, batch, custom, widgets_crd):
    args = (*WIDGETS[:2], "default", WIDGETS[2])
    with kopf.testing.KopfRunner(
        ["run", "--standalone", "--namespace", "default", str(OPERATOR)], timeout=60
    ) as runner:
        custom.create_namespaced_custom_object(*args, widget("w1", size=3))

        def status():
            return custom.get_namespaced_custom_object(*args, "w1").get("status", {})

        done = wait_for(lambda: status().get("jobComplete") and status(), timeout=120)
        assert done["create_job"] == {"job": "w1-work"}  # the handler's result, patched into status
        assert done["ticks"] >= 1
        obj = custom.get_namespaced_custom_object(*args, "w1")
        assert "kopf.zalando.org/KopfFinalizerMarker" in obj["metadata"]["finalizers"]

        job = batch.read_namespaced_job("w1-work", "default")
        assert job.metadata.owner_references[0].uid == obj["metadata"]["uid"]
        pods = core.list_namespaced_pod("default", label_selector="job-name=w1-work").items
        assert [p.status.phase for p in pods] == ["Succeeded"]
        assert core.read_namespaced_pod_log(pods[0].metadata.name, "default") == "size 3\n"

        custom.delete_namespaced_custom_object(*args, "w1")
        wait_for(
            lambda: (
                core.list_namespaced_config_map(
                    "default", field_selector="metadata.name=w1-deleted"
                ).items
            )
        )

        def gone(read):
            try:
                read()
            except ApiException as exc:
                return exc.status == 404
            return False

        wait_for(lambda: gone(lambda: custom.get_namespaced_custom_object(*args, "w1")))
        # The cascade: widget → job → pod, all collected.
        assert gone(lambda: batch.read_namespaced_job("w1-work", "default"))
        assert core.list_namespaced_pod("default").items == []
    assert runner.exit_code == 0, runner.output
    assert runner.exception is None
    assert "Traceback" not in runner.output, runner.output
