"""The Kubernetes reads and writes of the ModelDeployment controller, on the official client.

Shares the process's ApiClient and client helpers with :mod:`deltaroll.controllers.kube`.
Everything is plain dicts in the API server's camelCase form. Pods are only ever changed
through the annotations that tell them what to serve
(:data:`~deltaroll.api.annotations.POD_VERSION`, when it was set, who seeds it, the keys to check
it with); the ModelDeployment only through its status and the removal of handled request
annotations, never its spec.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Final

from deltaroll.api.modeldeployment import LabelSelector
from deltaroll.api.parse import list_items
from deltaroll.controllers.kube import (
    MODELDEPLOYMENTS,
    Body,
    batch_api,
    core_api,
    get_custom_object,
    patch_custom_annotations,
    patch_custom_status,
    plain,
)

POD_PATCHES_IN_FLIGHT: Final = 8
"""Pod patches sent at once: a step over a large fleet costs a few round trips, not one per pod
(at 0.05-0.4 s a patch, 64 pods one after another told the last pod seconds after the first).
Within the client's connection pool (5 connections per CPU the process sees)."""


def label_selector(selector: LabelSelector) -> str:
    """A metav1.LabelSelector as the ``labelSelector`` query parameter."""
    parts = [f"{key}={value}" for key, value in sorted((selector.match_labels or {}).items())]
    for requirement in selector.match_expressions or []:
        values = ",".join(requirement.values or [])
        parts.append(
            {
                "In": f"{requirement.key} in ({values})",
                "NotIn": f"{requirement.key} notin ({values})",
                "Exists": requirement.key,
                "DoesNotExist": f"!{requirement.key}",
            }[requirement.operator]
        )
    return ",".join(parts)


def get_modeldeployment(namespace: str, name: str) -> Body | None:
    return get_custom_object(namespace, MODELDEPLOYMENTS, name)


def list_pods(namespace: str, selector: LabelSelector) -> list[Body]:
    """The selected pods as the API server's JSON, as Kopf's events carry them."""
    response = core_api().list_namespaced_pod(
        namespace, label_selector=label_selector(selector), _preload_content=False
    )
    try:
        return list_items(response.data)
    finally:
        response.release_conn()


def annotate_pod(namespace: str, name: str, annotations: Mapping[str, str | None]) -> None:
    """Merge-patch annotations onto a pod; a pod that is already gone is not an error."""
    from kubernetes.client.exceptions import ApiException

    try:
        core_api().patch_namespaced_pod(name, namespace, {"metadata": {"annotations": annotations}})
    except ApiException as exc:
        if exc.status != 404:
            raise


def annotate_pods(namespace: str, patches: Mapping[str, Mapping[str, str | None]]) -> None:
    """:func:`annotate_pod` for each pod, up to :data:`POD_PATCHES_IN_FLIGHT` at once. Every
    patch is tried; the first error (in ``patches``' order) is raised once all have returned."""
    if len(patches) <= 1:
        for pod, annotations in patches.items():
            annotate_pod(namespace, pod, annotations)
        return
    workers = min(POD_PATCHES_IN_FLIGHT, len(patches))
    with ThreadPoolExecutor(workers, thread_name_prefix="pod-patch") as pool:
        sent = [pool.submit(annotate_pod, namespace, pod, a) for pod, a in patches.items()]
    for patch in sent:
        patch.result()


def patch_status(namespace: str, name: str, status: Body) -> None:
    patch_custom_status(namespace, MODELDEPLOYMENTS, name, status)


def remove_annotations(namespace: str, name: str, keys: Sequence[str]) -> None:
    """Remove handled request annotations (promote, abort, retry) from the ModelDeployment."""
    patch_custom_annotations(namespace, MODELDEPLOYMENTS, name, dict.fromkeys(keys))


def ensure_job(manifest: Body) -> Body:
    """Create the Job unless it exists; the Job as the API server has it."""
    from kubernetes.client.exceptions import ApiException

    meta = manifest["metadata"]
    try:
        return plain(batch_api().create_namespaced_job(meta["namespace"], manifest))
    except ApiException as exc:
        if exc.status != 409:
            raise
    return plain(batch_api().read_namespaced_job(meta["name"], meta["namespace"]))
