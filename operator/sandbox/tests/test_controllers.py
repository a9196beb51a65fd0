"""Jobs (incl. Indexed, parallelism, backoffLimit, activeDeadlineSeconds) and Deployments."""

from __future__ import annotations

from deltaroll_sandbox.polling import wait_for


def _job(name, code, **spec):
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            **spec,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {"name": "main", "image": "ignored", "command": ["python", "-c", code]}
                    ],
                }
            },
        },
    }


def _conditions(batch, name):
    job = batch.read_namespaced_job(name, "default")
    return {c.type: c for c in job.status.conditions or []}


def test_job_completes(batch, core):
    batch.create_namespaced_job("default", _job("ok", "print('done')"))
    complete = wait_for(lambda: _conditions(batch, "ok").get("Complete"))
    assert complete.status == "True"
    job = batch.read_namespaced_job("ok", "default")
    assert job.status.succeeded == 1 and job.status.completion_time is not None
    (pod,) = core.list_namespaced_pod("default", label_selector="job-name=ok").items
    assert pod.metadata.owner_references[0].kind == "Job"


def test_indexed_job_with_parallelism(batch, core):
    code = "import os; print('index', os.environ['JOB_COMPLETION_INDEX'])"
    batch.create_namespaced_job(
        "default", _job("idx", code, completions=3, parallelism=2, completionMode="Indexed")
    )
    wait_for(lambda: _conditions(batch, "idx").get("Complete"))
    job = batch.read_namespaced_job("idx", "default")
    assert job.status.completed_indexes == "0-2" and job.status.succeeded == 3
    logs = sorted(
        core.read_namespaced_pod_log(p.metadata.name, "default")
        for p in core.list_namespaced_pod("default", label_selector="job-name=idx").items
    )
    assert logs == ["index 0\n", "index 1\n", "index 2\n"]


def test_backoff_limit_fails_the_job(batch, core):
    batch.create_namespaced_job("default", _job("bad", "raise SystemExit(1)", backoffLimit=1))
    failed = wait_for(lambda: _conditions(batch, "bad").get("Failed"))
    assert failed.reason == "BackoffLimitExceeded"
    assert batch.read_namespaced_job("bad", "default").status.failed == 2
    assert _conditions(batch, "bad").get("Complete") is None


def test_active_deadline_kills_the_job(sandbox, batch):
    batch.create_namespaced_job(
        "default", _job("slow", "import time; time.sleep(600)", activeDeadlineSeconds=1)
    )
    failed = wait_for(lambda: _conditions(batch, "slow").get("Failed"))
    assert failed.reason == "DeadlineExceeded"
    wait_for(lambda: not sandbox.live_pids())


def test_deployment_keeps_its_replicas(api, core):
    import kubernetes

    apps = kubernetes.client.AppsV1Api(api)
    labels = {"app": "engine"}
    apps.create_namespaced_deployment(
        "default",
        {
            "metadata": {"name": "engine"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "main",
                                "image": "ignored",
                                "command": ["python", "-c", "import time; time.sleep(600)"],
                            }
                        ]
                    },
                },
            },
        },
    )

    def running():
        pods = core.list_namespaced_pod("default", label_selector="app=engine").items
        return sorted(p.metadata.name for p in pods if p.status.phase == "Running")

    first = wait_for(lambda: len(running()) == 2 and running())
    assert all(name.startswith("engine-") for name in first)
    wait_for(
        lambda: apps.read_namespaced_deployment("engine", "default").status.ready_replicas == 2
    )
    core.delete_namespaced_pod(first[0], "default")
    again = wait_for(lambda: len(running()) == 2 and first[0] not in running() and running())
    assert first[1] in again
    apps.patch_namespaced_deployment("engine", "default", {"spec": {"replicas": 1}})
    wait_for(lambda: len(running()) == 1)


def test_finished_jobs_expire_after_their_ttl(batch, core):
    batch.create_namespaced_job("default", _job("brief", "print('hi')", ttlSecondsAfterFinished=1))
    wait_for(lambda: _conditions(batch, "brief").get("Complete"))
    wait_for(lambda: not batch.list_namespaced_job("default").items)
    wait_for(lambda: not core.list_namespaced_pod("default").items)  # its pods go with it


def test_pod_failure_policy_fails_the_job_at_once(batch):
    policy = {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]},
            }
        ]
    }
    batch.create_namespaced_job(
        "default", _job("fatal", "raise SystemExit(42)", backoffLimit=5, podFailurePolicy=policy)
    )
    failed = wait_for(lambda: _conditions(batch, "fatal").get("Failed"))
    assert failed.reason == "PodFailurePolicy" and "exit code 42" in failed.message
    assert batch.read_namespaced_job("fatal", "default").status.failed == 1  # no retries burnt


def test_an_owner_is_not_reconciled_for_what_it_never_reads():
    """An agent's annotation reports do not reconcile its Deployment (each reconcile lists the
    namespace's pods); any change an owner reads does, and a Job (which reads its pods'
    completion-index annotation) is reconciled for annotations too."""
    from deltaroll_sandbox.apiserver.store import PODS, WatchEvent
    from deltaroll_sandbox.controllers import informers

    owner = {"metadata": {"name": "web", "namespace": "default", "uid": "u-1"}}

    class Owners:
        def peek_objects(self, rtype, namespace):
            return [owner]

    def pod(annotations=None, labels=None, ready="True"):
        return {
            "metadata": {
                "name": "web-1",
                "namespace": "default",
                "resourceVersion": "7",
                "ownerReferences": [{"uid": "u-1", "controller": True}],
                "annotations": annotations or {},
                "labels": labels or {"app": "web"},
            },
            "status": {"conditions": [{"type": "Ready", "status": ready}]},
        }

    def reconciled(new, old, unread=informers.NOT_READ_BY_OWNERS):
        calls = []
        event = WatchEvent(8, PODS, "MODIFIED", new, old)
        informers.reconcile_owner(
            Owners(), event, ("apps", "deployments"), None, lambda *a: calls.append(a),
            unread=unread,
        )  # fmt: skip
        return calls

    before = pod()
    reported = pod(annotations={"deltaroll.dev/agent-state": "Pulling"})
    reported["metadata"]["resourceVersion"] = "8"
    assert reconciled(reported, before) == []
    assert reconciled(pod(ready="False"), before) == [("default", "web")]
    assert reconciled(pod(labels={"app": "other"}), before) == [("default", "web")]
    assert reconciled(reported, before, unread=frozenset()) == [("default", "web")]
