"""The manifest's file form: columns in one checked zstd frame, identified by its bytes, and
every contradiction between a tensor's fields refused before anything trusts them."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import blake3
import pytest

from deltaroll.checkpoint import diff_checkpoints, read_delta_manifest
from deltaroll.checkpoint.errors import CorruptDeltaError
from deltaroll.checkpoint.manifest import (
    MANIFEST_NAME,
    decode_document,
    encode_document,
    encode_manifest,
    parse_delta_manifest,
)
from deltaroll.checkpoint.manifest_tensors import TensorTable, pack_digests


@pytest.fixture
def delta(steps: dict[str, list[Path]], tmp_path: Path) -> Path:
    diff_checkpoints(steps["sharded"][0], steps["sharded"][1], tmp_path / "delta")
    return tmp_path / "delta"


def test_a_manifest_reads_back_as_written_and_is_named_by_its_bytes(delta: Path) -> None:
    data = (delta / MANIFEST_NAME).read_bytes()
    manifest = read_delta_manifest(delta)
    assert manifest.manifest_digest == blake3.blake3(data).hexdigest()
    again = parse_delta_manifest(encode_manifest(manifest), "again")
    assert list(again.tensors) == list(manifest.tensors)
    rebuilt = TensorTable.from_entries(manifest.tensors)
    assert rebuilt.columns == manifest.columns
    kinds = {entry.kind for entry in manifest.tensors}
    assert {"sparse", "unchanged"} <= kinds


def _first(document: dict[str, Any], kind: str) -> int:
    return document["tensors"]["kind"].index(kind)


def _set(column: str, kind: str, value: object) -> Callable[[dict[str, Any]], None]:
    def edit(document: dict[str, Any]) -> None:
        document["tensors"][column][_first(document, kind)] = value

    return edit


def _drop_target_digest(document: dict[str, Any]) -> None:
    target = document["tensors"]["target"]
    present = sum(d is not None for d in target["dtype"])
    target["digests"] = pack_digests(["ab" * 32] * (present - 1))


def _duplicate_name(document: dict[str, Any]) -> None:
    names = document["tensors"]["name"]
    names[1] = names[0]


def _short_column(document: dict[str, Any]) -> None:
    document["tensors"]["changed_elements"].pop()


def _retarget_unchanged(document: dict[str, Any]) -> None:
    """Give the first unchanged tensor another target digest (in the packed column)."""
    target = document["tensors"]["target"]
    rank = sum(d is not None for d in target["dtype"][: _first(document, "unchanged")])
    packed = bytearray(base64.b64decode(target["digests"]))
    packed[32 * rank] ^= 1
    target["digests"] = base64.b64encode(packed).decode()


def _edit_rows(edit: Callable[[list[int]], None]) -> Callable[[dict[str, Any]], None]:
    """Change the rows the target layout's first file lists (each names a tensor by its row)."""

    def change(document: dict[str, Any]) -> None:
        edit(document["target_layout"]["files"][0]["rows"])

    return change


def _row_twice(rows: list[int]) -> None:
    rows[1] = rows[0]


def _row_beyond(rows: list[int]) -> None:
    rows[0] = 10**6


def _row_negative(rows: list[int]) -> None:
    rows[0] = -1


def _reshape_one_side(document: dict[str, Any]) -> None:
    index = _first(document, "sparse")
    document["tensors"]["target"]["shape"][index] = [1, 2, 3]


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (_set("payload", "unchanged", [0, 0, 1]), "exactly sparse and dense tensors have a"),
        (_set("payload", "sparse", None), "exactly sparse and dense tensors have a"),
        (_set("kind", "unchanged", "carried"), "carried only when"),
        (_set("changed_elements", "sparse", 10**12), "more changed elements than elements"),
        (_set("total_elements", "sparse", 10**12), "total_elements is not its shape's"),
        (_set("base_chunks", "sparse", [[0, 0, 1]]), "only carried tensors have whole-data"),
        (_drop_target_digest, "digests holds"),
        (_duplicate_name, "appears twice"),
        (_short_column, "differ in length"),
        (_reshape_one_side, "only a carried tensor may change shape"),
        (_retarget_unchanged, "unchanged with two different digests"),
        (_edit_rows(_row_twice), "the target layout does not list exactly the target tensors"),
        (_edit_rows(_row_beyond), "the target layout does not list exactly the target tensors"),
        (_edit_rows(_row_negative), "target_layout.files.0.rows.0"),
    ],
)
def test_a_manifest_whose_columns_contradict_themselves_is_refused(
    delta: Path, edit: Callable[[dict[str, Any]], None], says: str
) -> None:
    """Each rule a tensor's fields must keep, broken in a well-formed file (as a forger, not a
    flipped bit, would): refused by name, with the rule."""
    path = delta / MANIFEST_NAME
    document = decode_document(path.read_bytes(), str(path))
    edit(document)
    path.write_bytes(encode_document(document))
    with pytest.raises(CorruptDeltaError, match=re.escape(says)):
        read_delta_manifest(delta)


def test_digests_must_be_base64_of_whole_digests() -> None:
    with pytest.raises(ValueError, match="not 64 hex"):
        pack_digests(["ab" * 31])
    with pytest.raises(ValueError, match="not hex"):
        pack_digests(["zz" * 32])
