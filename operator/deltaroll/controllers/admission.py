"""Whether a ModelDelta or ModelDeployment asks only for what the admin's policy allows. Pure.

Each check returns the refusals, one actionable sentence per field, naming what the namespace
may use instead; an empty list admits the resource. Handlers check before they open a store or
create a Job, so a refused resource costs nothing and learns nothing about stores it may not
use.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from deltaroll.api import ModelDelta, ModelDeployment
from deltaroll.api.common import PodTemplateKnobs
from deltaroll.api.policy import JobPolicy, NamespacePolicy, allowed

REASON = "PolicyDenied"


def modeldelta_refusals(
    delta: ModelDelta, policy: NamespacePolicy, *, default_image: str
) -> list[str]:
    """What ``delta`` asks for that ``policy`` does not allow."""
    spec = delta.spec
    refusals = _uri("spec.store.uri", spec.store.uri, policy)
    source = spec.source.checkpoint or spec.source.trl_patch
    field = "spec.source.checkpoint.uri" if spec.source.checkpoint else "spec.source.trlPatch.uri"
    if source is not None and source.volume is None:  # on a volume: the tenant's own claim
        refusals += _uri(field, source.uri, policy)
    refusals += _job("spec.job", spec.job, policy.worker, default_image)
    return refusals


def modeldeployment_refusals(
    deployment: ModelDeployment, policy: NamespacePolicy, *, default_image: str
) -> list[str]:
    """What ``deployment`` asks for that ``policy`` does not allow."""
    spec = deployment.spec
    refusals = _uri("spec.store.uri", spec.store.uri, policy)
    for index, template in enumerate(spec.analysis_templates or ()):
        where = f"spec.analysisTemplates[{index}].provider"
        provider = template.provider
        if provider.job is not None:
            refusals += _job(f"{where}.job", provider.job, policy.analysis, default_image)
        address = provider.prometheus.address if provider.prometheus else None
        if address is not None and not allowed(address, policy.prometheus_addresses):
            refusals.append(
                f"{where}.prometheus.address {address} is not allowed"
                + _instead(policy.prometheus_addresses)
            )
    return refusals


def http_target_refusal(url: str, policy: NamespacePolicy) -> str | None:
    """Why an HTTP analysis probe may not call ``url`` (a selected pod's engine), if it may not."""
    if allowed(url, policy.http_targets):
        return None
    return f"HTTP analysis target {url} is not allowed" + _instead(policy.http_targets)


def _opened(uri: str) -> str:
    """``uri`` as the path a ``file://`` store will open (links resolved: a link under an allowed
    prefix may point anywhere); other schemes as written (the API types refuse ``..``)."""
    parts = urlsplit(uri)
    if parts.scheme != "file" or not parts.path.startswith("/"):
        return uri
    resolved = str(Path(parts.path).resolve())
    if parts.path.endswith("/") and not resolved.endswith("/"):
        resolved += "/"
    return f"file://{resolved}"


def _uri(field: str, uri: str, policy: NamespacePolicy) -> list[str]:
    if allowed(_opened(uri), [_opened(prefix) for prefix in policy.store_prefixes]):
        return []
    return [f"{field} {uri} is not allowed" + _instead(policy.store_prefixes)]


def _job(field: str, knobs: PodTemplateKnobs, policy: JobPolicy, default_image: str) -> list[str]:
    refusals = []
    images = [policy.image or default_image, *policy.allowed_images]
    if knobs.image is not None and not allowed(knobs.image, images):
        refusals.append(f"{field}.image {knobs.image} is not allowed" + _instead(images))
    accounts = [a for a in (policy.service_account_name, *policy.allowed_service_accounts) if a]
    account = knobs.service_account_name
    if account is not None and account not in accounts:
        refusals.append(f"{field}.serviceAccountName {account} is not allowed" + _instead(accounts))
    priority = knobs.priority_class_name
    if priority is not None and priority not in policy.allowed_priority_classes:
        refusals.append(
            f"{field}.priorityClassName {priority} is not allowed"
            + _instead(policy.allowed_priority_classes)
        )
    return refusals


def _instead(choices: Iterable[str]) -> str:
    listed = ", ".join(choices)
    return (
        f" in this namespace (allowed: {listed}); use one of those or ask the cluster admin"
        if listed
        else " in this namespace (the admin's policy allows none); ask the cluster admin"
    )
