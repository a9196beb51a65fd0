"""``deltaroll worker compute | import | materialize | squash``: what the operator's Jobs run.

Every command writes a short JSON report to the termination message path (``--termination-log``,
else ``$DELTAROLL_TERMINATION_LOG``, else /dev/termination-log) where the controller reads it.
Exit codes: 0 done, 3 a permanent failure (bad input: retrying cannot help; the Job's
podFailurePolicy fails at once), 1 anything a retry may fix. Store credentials come from the
environment (the ModelDelta's Secret) and never appear in output.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from deltaroll.cli.output import JsonOpt, emit

if TYPE_CHECKING:
    from deltaroll.store import Store
    from deltaroll.worker.compute import Publication

worker_app = typer.Typer(
    name="worker",
    help="Entry points of the operator's Jobs: compute, import, materialize, squash versions.",
    no_args_is_help=True,
)

StoreOpt = Annotated[
    str,
    typer.Option("--store", help="Store URI: file:///path, s3://bucket/prefix, hf://buckets/..."),
]
ModelOpt = Annotated[str, typer.Option("--model", help="Model name in the store.")]
NameOpt = Annotated[
    str | None, typer.Option("--name", help="Human name to give the version, e.g. step-120.")
]
LevelOpt = Annotated[int, typer.Option("--level", min=1, max=22, help="zstd level, 1 to 22.")]
AnchorOpt = Annotated[
    bool, typer.Option("--anchor", help="Also publish a full snapshot of the new version.")
]
CacheOpt = Annotated[
    Path | None,
    typer.Option("--parent-cache", help="Directory of parent checkpoints kept between Jobs."),
]
WorkOpt = Annotated[
    Path | None,
    typer.Option(
        "--work-dir",
        envvar="DELTAROLL_WORK_DIR",
        help="Scratch space (the parent, downloads, the delta); a temporary folder by default.",
    ),
]
TerminationOpt = Annotated[
    Path | None,
    typer.Option("--termination-log", help="Where to write the JSON report for the controller."),
]


def register(app: typer.Typer) -> None:
    """Add the ``worker`` command group."""
    app.add_typer(worker_app, name="worker")


@worker_app.command("compute")
def compute(
    store: StoreOpt,
    model: ModelOpt,
    target: Annotated[str, typer.Option("--target", help="URI of the target checkpoint.")],
    parent: Annotated[
        str | None, typer.Option("--parent", help="Parent version (name or id); omit: anchor.")
    ] = None,
    name: NameOpt = None,
    anchor: AnchorOpt = False,
    level: LevelOpt = 3,
    parent_cache: CacheOpt = None,
    shards: Annotated[
        int,
        typer.Option(
            "--shards", min=1, max=64, help="Split the diff across this many Job indexes."
        ),
    ] = 1,
    index: Annotated[
        int,
        typer.Option(
            "--index",
            envvar="JOB_COMPLETION_INDEX",
            min=0,
            help="This worker's index with --shards (an Indexed Job sets it).",
        ),
    ] = 0,
    work_dir: WorkOpt = None,
    termination_log: TerminationOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Diff TARGET against PARENT and publish the new version."""
    if index >= shards:
        raise typer.BadParameter(f"--index {index} must be below --shards {shards}")

    def work(opened: Store, scratch: Path) -> dict[str, Any]:
        from deltaroll.worker.compute import compute_version

        if shards > 1 and parent is not None:
            return _compute_share(opened, scratch)

        publication = compute_version(
            opened,
            model,
            target_uri=target,
            parent=parent,
            name=name,
            anchor=anchor,
            level=level,
            work_dir=scratch,
            parent_cache=parent_cache,
        )
        return _reported(publication, name)

    def _compute_share(opened: Store, scratch: Path) -> dict[str, Any]:
        from deltaroll.worker.shards import compute_share

        assert parent is not None  # checked by the caller
        outcome = compute_share(
            opened,
            model,
            target_uri=target,
            parent=parent,
            name=name,
            anchor=anchor,
            index=index,
            shares=shards,
            level=level,
            work_dir=scratch,
            parent_cache=parent_cache,
        )
        share = {"index": index, "shards": shards, "files": outcome.files}
        if outcome.published is None:
            return {**share, "published_by_this_index": False}
        return {**_reported(outcome.published, name), **share, "published_by_this_index": True}

    _run("compute", store, work, work_dir, termination_log, as_json)


@worker_app.command("import")
def import_patch(
    store: StoreOpt,
    model: ModelOpt,
    patch: Annotated[str, typer.Option("--patch", help="URI of the TRL patch (.safetensors).")],
    parent: Annotated[str, typer.Option("--parent", help="Version the patch applies to.")],
    name: NameOpt = None,
    anchor: AnchorOpt = False,
    level: LevelOpt = 3,
    parent_cache: CacheOpt = None,
    work_dir: WorkOpt = None,
    termination_log: TerminationOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import a trainer's TRL sparse patch onto PARENT as a new version."""

    def work(opened: Store, scratch: Path) -> dict[str, Any]:
        from deltaroll.worker.compute import import_version

        publication = import_version(
            opened,
            model,
            patch_uri=patch,
            parent=parent,
            name=name,
            anchor=anchor,
            level=level,
            work_dir=scratch,
            parent_cache=parent_cache,
        )
        return _reported(publication, name)

    _run("import", store, work, work_dir, termination_log, as_json)


@worker_app.command("materialize")
def materialize(
    store: StoreOpt,
    model: ModelOpt,
    version: Annotated[str, typer.Option("--version", help="Version (name or id) to snapshot.")],
    level: LevelOpt = 3,
    work_dir: WorkOpt = None,
    termination_log: TerminationOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Publish a full snapshot (an anchor) of VERSION."""

    def work(opened: Store, scratch: Path) -> dict[str, Any]:
        from deltaroll.worker.snapshots import materialize_version

        facts = materialize_version(opened, model, version, level=level, work_dir=scratch)
        return facts.to_dict()

    _run("materialize", store, work, work_dir, termination_log, as_json)


@worker_app.command("squash")
def squash(
    store: StoreOpt,
    model: ModelOpt,
    from_ref: Annotated[str, typer.Option("--from", help="The older version (name or id).")],
    to_ref: Annotated[str, typer.Option("--to", help="The version to re-parent onto FROM.")],
    work_dir: WorkOpt = None,
    termination_log: TerminationOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Publish a direct delta FROM -> TO (TO's parent becomes FROM)."""

    def work(opened: Store, scratch: Path) -> dict[str, Any]:
        from dataclasses import asdict

        from deltaroll.worker.snapshots import squash_versions

        return asdict(squash_versions(opened, model, from_ref, to_ref))

    _run("squash", store, work, work_dir, termination_log, as_json)


def _reported(publication: Publication, name: str | None) -> dict[str, Any]:
    """A success report's fields: the version's facts, its name, and whether this run created
    it (the store's own answer to the publish; the operator checks it against the store)."""
    from deltaroll.api.job_result import CREATED_FIELD

    return {**publication.facts.to_dict(), "name": name, CREATED_FIELD: publication.created}


def _run(
    command: str,
    store_uri: str,
    work: Callable[[Store, Path], dict[str, Any]],
    work_dir: Path | None,
    termination_log: Path | None,
    as_json: bool,
) -> None:
    """Run ``work`` in a scratch directory; report success or failure where the controller
    looks, and exit with the code that tells the Job whether a retry can help."""
    import structlog

    from deltaroll.api.job_result import JobReport
    from deltaroll.logs import configure_logging
    from deltaroll.redact import hide_environment_endpoints
    from deltaroll.worker.result import termination_path, write_report

    configure_logging()
    hide_environment_endpoints()  # the Job's environment is the operator's choice
    report_path = termination_path(termination_log)
    log = structlog.get_logger("deltaroll.worker").bind(command=command, store=store_uri)
    try:
        with _scratch(work_dir) as scratch:
            from deltaroll.store import Store

            result = work(Store(store_uri, cache_dir=scratch / "object-cache"), scratch)
    except Exception as exc:
        reason, message, code = _describe_failure(exc)
        log.error("worker.failed", reason=reason, message=message)
        write_report(report_path, JobReport.failure(command, reason, message))
        print(f"error: {message}", file=sys.stderr)
        raise typer.Exit(code) from None
    report = JobReport.success(command, result)
    write_report(report_path, report)
    emit(report.to_dict(), as_json=as_json, human=_human(report.to_dict()))


def _describe_failure(exc: Exception) -> tuple[str, str, int]:
    from deltaroll.api.job_result import EXIT_PERMANENT, EXIT_RETRYABLE
    from deltaroll.errors import DeltarollError
    from deltaroll.redact import reason as scrubbed
    from deltaroll.redact import scrub
    from deltaroll.worker.errors import reason_for

    reason, permanent = reason_for(exc)
    message = scrub(str(exc)) if isinstance(exc, DeltarollError) else scrubbed(exc)
    return reason, message, EXIT_PERMANENT if permanent else EXIT_RETRYABLE


def _human(report: dict[str, Any]) -> str:
    fields = ("version", "parent", "name", "changed_fraction", "delta_bytes", "full_bytes")
    return "  ".join(f"{key}={report[key]}" for key in fields if report.get(key) is not None)


@contextmanager
def _scratch(work_dir: Path | None) -> Iterator[Path]:
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
    path = Path(
        tempfile.mkdtemp(prefix="deltaroll-worker-", dir=work_dir or os.environ.get("TMPDIR"))
    )
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
