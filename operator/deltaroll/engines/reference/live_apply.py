"""The reference engine's in-memory weight change: a verified delta scattered into the served
model while the request gate holds new requests and the ones in flight have drained.

The delta is read and checked against the live values (:func:`prepare_patch`) while requests
are still served, on a thread of low CPU priority so that they keep their cores (see
:mod:`.low_priority`); only the writes happen behind the closed gate. The model keeps its identity:
the changed tensors' digests come from the delta's to-side (whose change digests were checked
against the live values), and the new version id is recomputed from them and must be the one
the agent asked for before anything is written. Any failure leaves the old weights served (the
patch undoes its writes) and raises :class:`~deltaroll.engines.errors.LivePatchError`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

from deltaroll.api.weight_change import LiveApplyRequest, LiveApplyResult
from deltaroll.engines.errors import LivePatchError, LiveWeightsMismatchError
from deltaroll.engines.live_patch import LivePatch, prepare_patch
from deltaroll.engines.reference.gate import DrainTimeoutError, RequestGate
from deltaroll.engines.reference.loading import LoadedModel
from deltaroll.engines.reference.low_priority import run_at_low_priority
from deltaroll.engines.weights_identity import version_id

#: How long a change waits for the requests in flight before it gives up (then: a reload).
DRAIN_TIMEOUT_S = 30.0


def patched_identity(loaded: LoadedModel, patch: LivePatch) -> LoadedModel:
    """``loaded`` as it will be once ``patch`` is written: same model object, the changed
    tensors' to-side digests, and a version id recomputed from them."""
    tensors = tuple(
        dataclasses.replace(t, digest=patch.to_digests.get(t.name, t.digest))
        for t in loaded.tensors
    )
    version = version_id(tensors, loaded.files)
    if version != patch.to_version:
        raise LivePatchError(
            f"the engine's tensors with the delta's digests make version {version}, not "
            f"{patch.to_version}: the engine holds tensors the checkpoint does not list; reload"
        )
    return dataclasses.replace(loaded, tensors=tensors, version=version)


def apply_live(
    loaded: LoadedModel,
    request: LiveApplyRequest,
    gate: RequestGate,
    serve: Callable[[LoadedModel], None],
) -> LiveApplyResult:
    """Patch ``loaded``'s model in memory and ``serve`` the patched model before the gate
    reopens (so no request admitted afterwards is told the old version)."""
    if loaded.version != request.from_version:
        raise LiveWeightsMismatchError(
            f"the engine serves {loaded.version}, not the delta's from-version "
            f"{request.from_version}: reload"
        )
    path = Path(request.delta_path)
    if not path.is_absolute():
        raise LivePatchError(f"delta_path {request.delta_path!r} must be an absolute path")
    held = loaded.model.state_dict()
    patch = run_at_low_priority(lambda: prepare_patch(path, held.get, reverse=request.reverse))
    if (patch.from_version, patch.to_version) != (request.from_version, request.to_version):
        raise LivePatchError(
            f"the delta in {path} leads from {patch.from_version} to {patch.to_version}, not "
            f"{request.from_version} -> {request.to_version}; nothing was changed"
        )
    patched = patched_identity(loaded, patch)
    try:
        with gate.closed(DRAIN_TIMEOUT_S) as timing:
            started = time.perf_counter()
            patch.commit()
            write_s = time.perf_counter() - started
            serve(patched)
    except DrainTimeoutError as exc:
        raise LivePatchError(f"{exc}; nothing was changed") from exc
    costs = {"write_s": write_s, "prepare_s": patch.prepare_seconds, **dataclasses.asdict(timing)}
    return LiveApplyResult(
        version=patched.version,
        bytes_applied=patch.bytes_applied,
        changed_elements=patch.changed_elements,
        **costs,
    )
