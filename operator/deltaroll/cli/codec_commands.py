"""``deltaroll diff | apply | verify | inspect | import-trl``: deltas between checkpoints on disk.

A checkpoint is a ``.safetensors`` file or a Hugging Face directory (``model.safetensors`` or
shards with ``model.safetensors.index.json``, plus config and tokenizer files). A delta is a
directory: ``manifest.json.zst`` and ``objects/<sha256>``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from deltaroll.cli.aux_options import AllowAutoMapOpt, AllowAuxOpt, aux_policy
from deltaroll.cli.output import JsonOpt, emit, progress_bar
from deltaroll.cli.store_commands import VerifyKeyOpt

if TYPE_CHECKING:
    from deltaroll.checkpoint import DeltaManifest

DeltaArg = Annotated[Path, typer.Argument(help="Delta directory (manifest.json.zst + objects/).")]
LevelOpt = Annotated[int, typer.Option("--level", min=1, max=22, help="zstd compression level.")]


def register(app: typer.Typer) -> None:
    """Add the codec commands."""
    for name, command in (
        ("diff", diff),
        ("apply", apply),
        ("verify", verify),
        ("inspect", inspect),
        ("import-trl", import_trl),
    ):
        app.command(name)(_filesystem_errors_as_user_errors(command))


def _filesystem_errors_as_user_errors(command: Callable[..., None]) -> Callable[..., None]:
    """A full disk or a read-only directory is the user's to fix: one error line, no traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        from deltaroll.checkpoint.errors import CheckpointError

        try:
            command(*args, **kwargs)
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise CheckpointError(f"{where}{exc.strerror or exc}") from exc

    return wrapper


def _side_bytes(manifest: DeltaManifest, side: Literal["base", "target"]) -> int:
    """Tensor bytes of one side of a delta (for progress totals)."""
    return sum(s.nbytes for e in manifest.tensors if (s := e.side(side)) is not None)


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def diff(
    base: Annotated[Path, typer.Argument(help="The checkpoint the delta starts from.")],
    target: Annotated[Path, typer.Argument(help="The checkpoint the delta leads to.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Delta directory to create.")],
    level: LevelOpt = 3,
    device: Annotated[
        str | None,
        typer.Option("--device", help="Compare tensors on this torch device, e.g. cuda."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Compute the lossless delta from BASE to TARGET."""
    from deltaroll.checkpoint import open_checkpoint
    from deltaroll.checkpoint.diff import write_delta
    from deltaroll.checkpoint.staging import check_output_free

    check_output_free(out)
    base_checkpoint, target_checkpoint = open_checkpoint(base), open_checkpoint(target)
    total = base_checkpoint.tensor_bytes + target_checkpoint.tensor_bytes
    with progress_bar("diff", total) as on_bytes:
        summary = write_delta(
            base_checkpoint, target_checkpoint, out, level=level, on_bytes=on_bytes, device=device
        )
    ratio = summary.delta_bytes / summary.target_bytes if summary.target_bytes else 0.0
    changed = summary.changed_elements / summary.total_elements if summary.total_elements else 0.0
    emit(
        summary.to_dict(),
        as_json=as_json,
        human=(
            f"{summary.base_version} -> {summary.target_version}\n"
            f"tensors: {summary.tensors}, changed elements: {summary.changed_elements} of "
            f"{summary.total_elements} ({changed:.2%})\n"
            f"delta: {_mib(summary.delta_bytes)} ({ratio:.2%} of the target's "
            f"{_mib(summary.target_bytes)}) in {out}"
        ),
    )


def apply(
    base: Annotated[Path, typer.Argument(help="The checkpoint to apply the delta to.")],
    delta: DeltaArg,
    out: Annotated[
        Path | None, typer.Option("-o", "--out", help="Write the result to this new directory.")
    ] = None,
    in_place: Annotated[
        bool, typer.Option("--in-place", help="Patch BASE's files (journaled, crash-safe).")
    ] = False,
    reverse: Annotated[
        bool, typer.Option("--reverse", help="BASE is the delta's target; produce its base.")
    ] = False,
    verify_key: VerifyKeyOpt = None,
    allow_aux_file: AllowAuxOpt = None,
    allow_auto_map: AllowAutoMapOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Apply DELTA to BASE: into a new directory (-o) or in place (--in-place)."""
    from deltaroll.checkpoint import apply_delta, read_delta_manifest
    from deltaroll.checkpoint.errors import CheckpointError

    if (out is None) == (not in_place):
        raise CheckpointError("choose exactly one of -o OUT_DIR or --in-place")
    manifest = read_delta_manifest(delta)
    if verify_key:  # before anything is read from BASE or written
        from deltaroll.store.delta_signatures import signed_delta
        from deltaroll.store.signing import load_public_keys

        signed_delta(delta, manifest, load_public_keys(verify_key), "base" if reverse else "target")
    # The base is read once to check its version, then the result is written (or patched).
    total = _side_bytes(manifest, "base") + _side_bytes(manifest, "target")
    policy = aux_policy(allow_aux_file, allow_auto_map)
    with progress_bar("apply", total) as on_bytes:
        summary = apply_delta(
            base, delta, out_dir=out, in_place=in_place, reverse=reverse, on_bytes=on_bytes,
            aux_policy=policy, manifest=manifest,
        )  # fmt: skip
    human = f"{summary.output} is {summary.to_version}" + (
        "" if summary.changed else " already; nothing changed"
    )
    emit(summary.to_dict(), as_json=as_json, human=human)


def verify(
    checkpoint: Annotated[Path, typer.Argument(help="The checkpoint to check.")],
    delta: DeltaArg,
    side: Annotated[
        str, typer.Option("--side", help="Which side of the delta it should be: base or target.")
    ] = "target",
    as_json: JsonOpt = False,
) -> None:
    """Exit 0 only if CHECKPOINT is exactly the given side of DELTA."""
    from deltaroll.checkpoint import read_delta_manifest, verify_checkpoint
    from deltaroll.checkpoint.errors import CheckpointError, CheckpointMismatchError

    if side not in ("base", "target"):
        raise CheckpointError(f"--side must be base or target, not {side!r}")
    chosen: Literal["base", "target"] = "base" if side == "base" else "target"
    with progress_bar("verify", _side_bytes(read_delta_manifest(delta), chosen)) as on_bytes:
        report = verify_checkpoint(checkpoint, delta, side=chosen, on_bytes=on_bytes)
    emit(
        report.to_dict(),
        as_json=as_json,
        human=f"{checkpoint} matches the {side} of {delta} ({report.actual_version})"
        if report.matches
        else None,
    )
    if not report.matches:
        raise CheckpointMismatchError(
            f"{checkpoint} is not the {side} of {delta} (it is {report.actual_version}, expected "
            f"{report.expected_version}): {'; '.join(report.problems[:3])}"
        )


def inspect(delta: DeltaArg, as_json: JsonOpt = False) -> None:
    """Summarize a delta directory: versions, tensor kinds, sizes."""
    from deltaroll.checkpoint import describe_delta

    summary = describe_delta(delta)
    kinds = ", ".join(f"{kind} {count}" for kind, count in summary["kinds"].items())
    lines = [
        f"{summary['base_version'] or '(anchor)'} -> {summary['target_version']}",
        f"tensors: {summary['tensors']} ({kinds})",
        f"changed elements: {summary['changed_elements']} of {summary['total_elements']} "
        f"({summary['changed_fraction']:.2%})",
        f"delta: {_mib(summary['delta_bytes'])} in {summary['objects']} objects; target "
        f"{_mib(summary['target_bytes'])}",
    ]
    if summary["added"]:
        lines.append(f"added: {', '.join(summary['added'])}")
    if summary["removed"]:
        lines.append(f"removed: {', '.join(summary['removed'])}")
    emit(summary, as_json=as_json, human="\n".join(lines))


def import_trl(
    base: Annotated[Path, typer.Argument(help="The checkpoint the TRL patch applies to.")],
    patch: Annotated[Path, typer.Argument(help="TRL sparse patch (.safetensors).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Delta directory to create.")],
    level: LevelOpt = 3,
    as_json: JsonOpt = False,
) -> None:
    """Turn a TRL sparse safetensors patch of BASE into a Deltaroll delta."""
    from deltaroll.checkpoint import import_trl_patch

    with progress_bar("import", None) as on_bytes:
        summary = import_trl_patch(base, patch, out, level=level, on_bytes=on_bytes)
    emit(
        summary.to_dict(),
        as_json=as_json,
        human=f"{summary.base_version} -> {summary.target_version}: "
        f"{summary.changed_elements} changed elements, delta {_mib(summary.delta_bytes)} in {out}",
    )
