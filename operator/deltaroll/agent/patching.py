"""Applying a fetched plan to the weights volume, and finishing an apply a crash interrupted.

Steps between versions patch ``weights`` in place through the checkpoint layer's journaled
apply (killed at any moment, the same apply run again finishes it; nothing is ever a mix). A
plan that starts from nothing builds a fresh copy beside ``weights`` and swaps it in once it
verified. Every apply checks object digests, and the values it changes against each tensor's
change digest, before writing (see the checkpoint layer's trusted state).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import structlog

from deltaroll.agent.errors import AgentError
from deltaroll.agent.volume import WeightsVolume
from deltaroll.checkpoint import apply_delta
from deltaroll.checkpoint.aux_policy import DEFAULT_AUX_POLICY, AuxPolicy
from deltaroll.checkpoint.journal import JournalState
from deltaroll.store import Store
from deltaroll.store.graph import Plan, Step
from deltaroll.store.pull import check_signed_step, materialize_delta, read_delta
from deltaroll.store.signatures import SignedTarget

log = structlog.get_logger(__name__)


class OrphanedApplyError(AgentError):
    """The weights hold an unfinished apply whose delta the store no longer has."""


def check_plan(store: Store, plan: Plan, signed: SignedTarget | None = None) -> None:
    """Refuse a plan with a delta this agent cannot apply (a format it does not read, a
    manifest that does not check out or disagrees with the store's record, a last delta that
    does not produce the ``signed`` content) before anything touches the weights volume; the
    plan's objects are in the cache."""
    for step in plan.steps:
        manifest, _ = read_delta(step, store.cache)
    if signed is not None and plan.steps:
        check_signed_step(signed, plan.steps[-1], manifest)  # the last manifest, read once


#: Told of each step applied in place, while its verified delta directory is still there.
OnStep = Callable[[Step, Path], None]


def apply_plan(
    store: Store,
    plan: Plan,
    volume: WeightsVolume,
    aux_policy: AuxPolicy = DEFAULT_AUX_POLICY,
    on_step: OnStep | None = None,
) -> None:
    """Bring ``weights`` to ``plan.target``; every object must already be in the cache.
    ``on_step`` hears of each step applied in place (the engine applies it in memory)."""
    try:
        if plan.start is None:
            _build_and_swap(store, plan, volume, aux_policy)
        else:
            for index, step in enumerate(plan.steps):
                delta_dir = _apply_in_place(store, step, volume, index, aux_policy, durable=False)
                if on_step is not None:
                    on_step(step, delta_dir)
    finally:
        shutil.rmtree(volume.deltas, ignore_errors=True)


def finish_apply(
    store: Store, step: Step, volume: WeightsVolume, aux_policy: AuxPolicy = DEFAULT_AUX_POLICY
) -> None:
    """Run the interrupted in-place apply of ``step`` again: the journal makes it resume. Made
    durable before it returns: a restart is no pause to keep short (the engine reloads anyway)."""
    try:
        _apply_in_place(store, step, volume, 0, aux_policy, durable=True)
    finally:
        shutil.rmtree(volume.deltas, ignore_errors=True)


def _apply_in_place(
    store: Store,
    step: Step,
    volume: WeightsVolume,
    index: int,
    aux_policy: AuxPolicy,
    *,
    durable: bool,
) -> Path:
    """``durable=False`` on the way to a new version: fsynced once the engine serves it
    (:meth:`WeightsVolume.make_durable`), its journal kept until then."""
    delta_dir = volume.fresh_delta_dir(index)
    manifest = materialize_delta(step, store.cache, delta_dir)
    apply_delta(
        volume.weights,
        delta_dir,
        manifest,
        in_place=True,
        reverse=step.reverse,
        aux_policy=aux_policy,
        durable=durable,
    )
    log.info("agent.applied", kind=step.kind, source=step.source, target=step.target)
    return delta_dir


def _build_and_swap(store: Store, plan: Plan, volume: WeightsVolume, aux_policy: AuxPolicy) -> None:
    shutil.rmtree(volume.building, ignore_errors=True)
    shutil.rmtree(volume.built, ignore_errors=True)
    for index, step in enumerate(plan.steps):
        delta_dir = volume.fresh_delta_dir(index)
        manifest = materialize_delta(step, store.cache, delta_dir)
        if index == 0:
            apply_delta(None, delta_dir, manifest, out_dir=volume.building, aux_policy=aux_policy)
        else:
            apply_delta(
                volume.building,
                delta_dir,
                manifest,
                in_place=True,
                reverse=step.reverse,
                aux_policy=aux_policy,
            )
        log.info("agent.applied", kind=step.kind, source=step.source, target=step.target)
    volume.building.rename(volume.built)
    volume.install_built()


def interrupted_step(store: Store, model: str, state: JournalState) -> Step:
    """The delta an unfinished in-place apply was applying, looked up in the store."""
    graph = store.graph(model)
    forward = state.direction == "forward"
    child, parent = (
        (state.to_version, state.from_version)
        if forward
        else (state.from_version, state.to_version)
    )
    manifest = graph.versions.get(child)
    if manifest is None or manifest.parent != parent or manifest.delta is None:
        raise OrphanedApplyError(
            f"the weights hold an unfinished apply {state.from_version} -> {state.to_version} "
            "whose delta is no longer in the store; the agent rebuilds the weights from an anchor"
        )
    return Step(
        "forward" if forward else "reverse", state.from_version, state.to_version, manifest.delta
    )
