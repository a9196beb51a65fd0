"""A sharded compute leaves nothing staged in the store: its publisher discards the parts, and
what a failed cleanup or a late retry leaves behind is removed by ``deltaroll gc``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from structlog.testing import capture_logs

from deltaroll.checkpoint import checkpoint_version
from deltaroll.store import Store, StoreAccessError, keys, parse_store_uri
from deltaroll.store.backends.file import FileBackend
from deltaroll.worker.shards import compute_share
from fixtures.cli import deltaroll_json, run_deltaroll
from worker.helpers import Worker, compute_args, same_files


class RefusingStagingDeletes(FileBackend):
    """A file store that refuses to delete staged parts, as a bucket whose policy grants the
    Job's credentials no DeleteObject would."""

    def delete(self, keys: Sequence[str]) -> None:
        if any("/staging/" in key for key in keys):
            raise StoreAccessError(f"{self.uri}: access denied deleting {keys[0]!r}")
        super().delete(keys)


def staged(store_uri: str) -> list[str]:
    return [info.key for info in Store(store_uri).catalog.list_keys(keys.staging_prefix("tiny"))]


def pulls_bit_exact(store_uri: str, expected: Path, out: Path) -> bool:
    deltaroll_json("pull", store_uri, "tiny", "step-1", "-o", out)
    return same_files(out, expected)


def share_args(store_uri: str, target: Path, index: int) -> tuple[str, ...]:
    step1 = compute_args(store_uri, f"file://{target}", name="step-1", parent="step-0")
    return (*step1, "--shards", "3", "--index", str(index))


def test_a_failed_cleanup_does_not_fail_the_publish_and_gc_finishes_it(
    store_uri: str, checkpoints: list[Path], tmp_path: Path
) -> None:
    Store(store_uri, cache_dir=tmp_path / "cache").push("tiny", checkpoints[0], name="step-0")
    refusing = RefusingStagingDeletes(parse_store_uri(store_uri))
    store = Store(store_uri, backend=refusing, cache_dir=tmp_path / "cache")
    with capture_logs() as logs:
        outcomes = [
            compute_share(
                store,
                "tiny",
                target_uri=f"file://{checkpoints[1]}",
                parent="step-0",
                name="step-1",
                anchor=False,
                index=index,
                shares=3,
                level=3,
                work_dir=tmp_path / f"index-{index}",
            )
            for index in (2, 0, 1)
        ]

    publication = outcomes[-1].published
    assert [o.published is None for o in outcomes] == [True, True, False] and publication
    assert publication.created  # the store said this publish wrote the manifest
    published = publication.facts
    assert published.version == checkpoint_version(checkpoints[1])
    assert store.resolve("tiny", "step-1") == published.version  # named after the publish
    warnings = [e for e in logs if e["event"] == "worker.staging_not_discarded"]
    assert len(warnings) == 1 and warnings[0]["log_level"] == "warning"
    assert len(staged(store_uri)) == 3

    result = deltaroll_json("gc", store_uri, "tiny", "--keep", "step-1")  # default grace
    assert result["deleted_staging_parts"] == 3 and result["deleted_versions"] == []
    assert staged(store_uri) == []
    assert pulls_bit_exact(store_uri, checkpoints[1], tmp_path / "pulled")


def test_an_index_retried_after_publication_leaves_a_part_that_gc_removes(
    worker: Worker, store_uri: str, checkpoints: list[Path], tmp_path: Path
) -> None:
    anchored = worker(*compute_args(store_uri, f"file://{checkpoints[0]}", name="step-0"))
    assert anchored.code == 0, anchored.process.stderr
    runs = [worker(*share_args(store_uri, checkpoints[1], i)) for i in (2, 0, 1)]
    assert [r.code for r in runs] == [0, 0, 0], [r.process.stderr for r in runs]
    assert staged(store_uri) == []  # the publisher discarded every part

    retried = worker(*share_args(store_uri, checkpoints[1], 0))
    assert retried.code == 0, retried.process.stderr
    assert retried.report is not None and not retried.report["published_by_this_index"]
    left = staged(store_uri)
    assert len(left) == 1  # alone, it cannot prove its group published: grace decides

    kept = deltaroll_json("gc", store_uri, "tiny", "--keep", "step-1")
    dry = run_deltaroll(
        "gc", store_uri, "tiny", "--keep", "step-1", "--grace-seconds", "0", "--dry-run"
    )
    assert kept["deleted_staging_parts"] == 0
    assert (
        dry.returncode == 0 and "would delete 0 versions, 0 anchors, 1 staged parts" in dry.stdout
    )
    assert staged(store_uri) == left

    done = deltaroll_json("gc", store_uri, "tiny", "--keep", "step-1", "--grace-seconds", "0")
    assert done["deleted_staging_parts"] == 1 and done["deleted_objects"] == 0
    assert staged(store_uri) == []
    assert pulls_bit_exact(store_uri, checkpoints[1], tmp_path / "pulled")
