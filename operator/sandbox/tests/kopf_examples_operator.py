"""Kopf's example operators (02-children, 04-events, 05-handlers, 14-daemons, 99-all-at-once),
condensed, with the official client instead of pykube: the yardstick of what an operator expects.
"""

import kopf
import kubernetes
import yaml

GVR = ("kopf.dev", "v1", "kopfexamples")


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_):
    settings.watching.server_timeout = 10
    kubernetes.config.load_kube_config()


@kopf.on.create(*GVR)
def create_fn(spec, body, namespace, **_):
    doc = yaml.safe_load(f"""
        apiVersion: v1
        kind: Pod
        spec:
          containers:
          - name: the-only-one
            image: busybox
            command: ["sh", "-x", "-c"]
            args:
            - |
              echo "FIELD=$FIELD"
              sleep 1
            env:
            - name: FIELD
              value: {spec.get("field", "default-value")}
    """)
    kopf.adopt(doc, owner=body)
    kopf.label(doc, {"application": "kopf-example-10"})
    pod = kubernetes.client.CoreV1Api().create_namespaced_pod(namespace, doc)
    kopf.info(body, reason="AnyReason", message="a child pod is created")
    kopf.event(body, type="Warning", reason="SomeReason", message="Cannot do something")
    return {"children": [pod.metadata.uid], "message": "created"}


@kopf.on.create(*GVR)
def create_with_retry(retry, **_):
    if not retry:
        raise kopf.TemporaryError("Whoops!", delay=0.5)  # retried by the framework
    return {"job2-status": 100}


@kopf.on.update(*GVR)
def update(diff, patch, **_):
    patch.status["updated"] = [list(map(str, d[1])) for d in diff]


@kopf.on.field(*GVR, field="spec.field")
def update_field(old, new, patch, **_):
    patch.status["field"] = f"{old} -> {new}"


@kopf.daemon(*GVR, initial_delay=0.1)
def monitor(stopped, patch, **_):
    stopped.wait(0.2)
    return {"monitored": True}


@kopf.on.event("", "v1", "pods", labels={"application": "kopf-example-10"})
def child_pod_event(type, body, logger, **_):
    if body.get("status", {}).get("phase") == "Succeeded":
        logger.info("kopf-example child pod succeeded")


@kopf.on.delete(*GVR)
def delete(**_):
    pass
