"""A tiny Kopf operator for the sandbox's end-to-end test (run with ``kopf run`` / KopfRunner).

On a Widget: a Job that really runs (a local python process), owned by the Widget; a timer that
copies the Job's outcome into the Widget's status; a delete handler (so Kopf keeps a finalizer)
that leaves a trace in a ConfigMap.
"""

import kopf
import kubernetes

GROUP, VERSION, PLURAL = "sandbox.deltaroll.dev", "v1", "widgets"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_):
    settings.posting.level = 0
    settings.watching.server_timeout = 10
    kubernetes.config.load_kube_config()


@kopf.on.create(GROUP, VERSION, PLURAL)
def create_job(name, namespace, spec, body, **_):
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"{name}-work"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "work",
                            "image": "ignored",
                            "command": [
                                "python",
                                "-c",
                                "import os; print('size', os.environ['SIZE'])",
                            ],
                            "env": [{"name": "SIZE", "value": str(spec["size"])}],
                        }
                    ],
                }
            },
        },
    }
    kopf.adopt(job, owner=body)
    kubernetes.client.BatchV1Api().create_namespaced_job(namespace, job)
    return {"job": job["metadata"]["name"]}  # Kopf stores it as status.create_job


@kopf.timer(GROUP, VERSION, PLURAL, interval=0.3)
def follow_job(name, namespace, status, patch, **_):
    try:
        job = kubernetes.client.BatchV1Api().read_namespaced_job(f"{name}-work", namespace)
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:  # the create handler has not made it yet
            return
        raise
    done = any(c.type == "Complete" and c.status == "True" for c in job.status.conditions or [])
    patch.status["jobComplete"] = done
    patch.status["ticks"] = int(status.get("ticks", 0)) + 1


@kopf.on.delete(GROUP, VERSION, PLURAL)
def record_deletion(name, namespace, **_):
    kubernetes.client.CoreV1Api().create_namespaced_config_map(
        namespace, {"metadata": {"name": f"{name}-deleted"}}
    )
