"""Kopf's bookkeeping stays out of the state it diffs, and the requests of ``kubectl deltaroll``
stay in it: a promote, abort or retry is a change Kopf hands to the update handler at once.

Driven through Kopf's own storages as the operator configures them: the object is stored as
Kopf stores it after handling (its diff-base and marker annotations), then a request arrives."""

from __future__ import annotations

import copy
from typing import Any

import kopf
import pytest
from kopf._cogs.structs.diffs import diff

from deltaroll.api.annotations import ABORT, PROMOTE, RETRY


def _configured() -> kopf.OperatorSettings:
    """Settings as the operator's startup handler leaves them. Its module is imported into a
    registry of its own: Kopf runs elsewhere in this test process (the sandbox's Kopf e2e
    tests) use the default one, and would take Deltaroll's finalizer and storages from it."""
    default = kopf.get_default_registry()
    kopf.set_default_registry(kopf.OperatorRegistry())
    try:
        from deltaroll.controllers.settings import configure
    finally:
        kopf.set_default_registry(default)
    settings = kopf.OperatorSettings()
    configure(settings=settings)
    return settings


def _handled(storage: kopf.DiffBaseStorage, raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with the annotations Kopf's diff-base storage writes once it handled it."""
    body = kopf.Body(raw)
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    handled = copy.deepcopy(raw)
    handled["metadata"]["annotations"].update(patch["metadata"]["annotations"])
    return handled


@pytest.mark.parametrize("request_key", [PROMOTE, ABORT, RETRY])
def test_a_request_annotation_is_a_change_kopf_hands_to_the_update_handler(
    request_key: str,
) -> None:
    storage = _configured().persistence.diffbase_storage
    raw = {
        "apiVersion": "deltaroll.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "chat", "namespace": "team", "annotations": {}},
        "spec": {"version": "v2"},
    }
    handled = _handled(storage, raw)
    handled["metadata"]["annotations"][request_key] = "step"
    requested = kopf.Body(handled)
    essence = storage.build(body=requested)
    # The request is in the state Kopf diffs; Kopf's own annotations are not.
    assert essence["metadata"]["annotations"] == {request_key: "step"}
    assert diff(storage.fetch(body=requested), essence)  # a change: the update handler runs


def test_kopf_waits_for_its_own_patch_longer_than_a_loaded_watch_lags() -> None:
    """Kopf's 5 s default is shorter than the watch lagged with 1000 ModelDeployments starting
    together (benchmarks/operator_load.py): each one's handler and diff-base patch then ran twice
    (1.58 patches per object instead of 1), and the extra requests lagged the watch further. Not
    much longer: each object's worker lives until the wait ends (30 s showed as idle CPU)."""
    assert 5 < _configured().persistence.consistency_timeout <= 15
