"""The Kubernetes reads and writes the ModelDelta controller makes, on the official client.

Handlers are synchronous (Kopf runs them in its thread pool), so the blocking client is fine
here. Everything returns plain dicts in the API server's camelCase form, the shape the pure
planner and Job builder work with. A store's credentials Secret is read only to open that store
(:func:`read_secret_data`); its values go to the store client and never into logs or status.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from functools import cache
from typing import Any, Final

from deltaroll.api import modeldelta, modeldeployment
from deltaroll.api.common import GROUP, VERSION

MODELDELTAS: Final = modeldelta.PLURAL
MODELDEPLOYMENTS: Final = modeldeployment.PLURAL
Body = dict[str, Any]


@cache
def api_client() -> Any:
    """One ApiClient per process: in-cluster credentials, else $KUBECONFIG/~/.kube/config."""
    import kubernetes

    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    return kubernetes.client.ApiClient()


def core_api() -> Any:
    import kubernetes

    return kubernetes.client.CoreV1Api(api_client())


def batch_api() -> Any:
    import kubernetes

    return kubernetes.client.BatchV1Api(api_client())


def custom_api() -> Any:
    import kubernetes

    return kubernetes.client.CustomObjectsApi(api_client())


def plain(obj: Any) -> Body:
    return dict(api_client().sanitize_for_serialization(obj))


def read_secret_data(namespace: str, name: str) -> dict[str, str] | None:
    """The Secret's decoded ``data`` (key -> text value), or None when there is no such Secret.

    A value that is not base64 of UTF-8 text cannot be a store credential and is left out."""
    from kubernetes.client.exceptions import ApiException

    try:
        secret = core_api().read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    decoded = {}
    for key, value in (secret.data or {}).items():
        try:
            decoded[key] = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            continue
    return decoded


def get_custom_object(namespace: str, plural: str, name: str) -> Body | None:
    """One of the project's custom objects, or None when there is no such object."""
    from kubernetes.client.exceptions import ApiException

    try:
        return dict(
            custom_api().get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def patch_custom_status(namespace: str, plural: str, name: str, status: Body) -> None:
    custom_api().patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, plural, name, {"status": status}
    )


def patch_custom_annotations(
    namespace: str, plural: str, name: str, annotations: Mapping[str, str | None]
) -> None:
    """Merge-patch annotations onto a custom object; a None value removes that annotation."""
    custom_api().patch_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, name, {"metadata": {"annotations": annotations}}
    )


def get_modeldelta(namespace: str, name: str) -> Body | None:
    return get_custom_object(namespace, MODELDELTAS, name)


def list_custom_objects(namespace: str, plural: str) -> list[Body]:
    """The project's custom objects of one kind in ``namespace``."""
    listed = custom_api().list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
    return list(listed.get("items") or [])


def list_modeldeltas(namespace: str) -> list[Body]:
    return list_custom_objects(namespace, MODELDELTAS)


def list_visible_modeldeployments(namespace: str) -> list[Body]:
    """Every ModelDeployment the operator may see: cluster-wide, else the one namespace."""
    from kubernetes.client.exceptions import ApiException

    try:
        listed = custom_api().list_cluster_custom_object(GROUP, VERSION, MODELDEPLOYMENTS)
    except ApiException as exc:
        if exc.status != 403:
            raise
        return list_custom_objects(namespace, MODELDEPLOYMENTS)
    return list(listed.get("items") or [])


def owned_jobs(namespace: str, selector: str, owner_uid: str) -> list[tuple[Body, list[Body]]]:
    """The Jobs with the labels ``selector`` that the object ``owner_uid`` controls, each with
    its pods (found by the same labels)."""
    jobs = [
        plain(j) for j in batch_api().list_namespaced_job(namespace, label_selector=selector).items
    ]
    pods = [
        plain(p) for p in core_api().list_namespaced_pod(namespace, label_selector=selector).items
    ]
    result = []
    for job in jobs:
        if _controller_uid(job) != owner_uid:
            continue
        uid = job["metadata"]["uid"]
        result.append((job, [p for p in pods if _controller_uid(p) == uid]))
    return result


def job_names(namespace: str, selector: str) -> set[str]:
    """The names of the Jobs with the labels ``selector`` that exist in ``namespace``."""
    listed = batch_api().list_namespaced_job(namespace, label_selector=selector).items
    return {plain(j)["metadata"]["name"] for j in listed}


def create_job(manifest: Body) -> None:
    """Create the Job; one that already exists (a concurrent reconcile) is not an error."""
    from kubernetes.client.exceptions import ApiException

    try:
        batch_api().create_namespaced_job(manifest["metadata"]["namespace"], manifest)
    except ApiException as exc:
        if exc.status != 409:
            raise


def delete_job(namespace: str, name: str) -> None:
    """Delete a Job and (in the background) its pods; one already gone is not an error."""
    from kubernetes.client.exceptions import ApiException

    try:
        batch_api().delete_namespaced_job(name, namespace, propagation_policy="Background")
    except ApiException as exc:
        if exc.status != 404:
            raise


def patch_status(namespace: str, name: str, status: Body) -> None:
    patch_custom_status(namespace, MODELDELTAS, name, status)


def patch_annotations(namespace: str, name: str, annotations: dict[str, str]) -> None:
    patch_custom_annotations(namespace, MODELDELTAS, name, annotations)


def controller_owner(body: Body) -> dict[str, Any] | None:
    """The ownerReference with ``controller: true``, if any."""
    refs = (body.get("metadata") or {}).get("ownerReferences") or []
    return next((r for r in refs if r.get("controller")), None)


def _controller_uid(body: Body) -> str | None:
    owner = controller_owner(body)
    return owner.get("uid") if owner else None
