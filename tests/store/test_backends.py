"""The key/bytes contract every backend keeps, on file:// and s3:// (moto): atomic conditional
create, listing, deletion, existence, large (multipart) transfers and named errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deltaroll.store import ObjectNotFoundError, StoreAccessError, parse_store_uri
from deltaroll.store.backends import Backend, open_backend
from deltaroll.store.backends.s3 import MULTIPART_CHUNK
from store.support import make_bucket


@pytest.fixture(params=["file", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "file":
        return open_backend(parse_store_uri(f"file://{tmp_path / 'store'}"))
    endpoint = request.getfixturevalue("s3_env")
    return open_backend(parse_store_uri(f"s3://{make_bucket(endpoint)}/prefix"))


def test_create_only_keeps_the_first_write(backend: Backend) -> None:
    assert backend.write("m/versions/v.json", b"first", create_only=True)
    assert not backend.write("m/versions/v.json", b"second", create_only=True)
    assert backend.read("m/versions/v.json") == b"first"
    assert backend.write("m/versions/v.json", b"third", create_only=False)
    assert backend.read("m/versions/v.json") == b"third"


def test_list_existing_and_delete(backend: Backend) -> None:
    for key in ("m/objects/a", "m/objects/b", "m/versions/v.json", "other/objects/c"):
        backend.write(key, key.encode(), create_only=False)
    listed = {info.key: info.size for info in backend.list("m/objects/")}
    assert listed == {"m/objects/a": 11, "m/objects/b": 11}
    assert backend.existing(["m/objects/a", "m/objects/zzz"]) == {"m/objects/a"}
    backend.delete(["m/objects/a", "m/objects/never-existed"])
    assert [info.key for info in backend.list("m/")] == ["m/objects/b", "m/versions/v.json"]
    assert list(backend.list("nothing-here/")) == []


def test_missing_keys_are_named(backend: Backend, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFoundError, match="m/objects/nope"):
        backend.read("m/objects/nope")
    with pytest.raises(ObjectNotFoundError, match="m/objects/nope"):
        backend.download_files([("m/objects/nope", tmp_path / "x")])


def test_large_objects_round_trip(backend: Backend, tmp_path: Path) -> None:
    """Above the multipart chunk size, S3 uploads go multipart; content must survive exactly."""
    big = tmp_path / "big"
    big.write_bytes(os.urandom(MULTIPART_CHUNK + 1234))
    small = tmp_path / "small"
    small.write_bytes(b"tiny")
    seen: list[int] = []
    backend.upload_files([(big, "m/objects/big"), (small, "m/objects/small")], progress=seen.append)
    assert sum(seen) == big.stat().st_size + 4
    out = tmp_path / "out"
    out.mkdir()
    backend.download_files([("m/objects/big", out / "big"), ("m/objects/small", out / "small")])
    assert (out / "big").read_bytes() == big.read_bytes()
    assert (out / "small").read_bytes() == b"tiny"


def test_a_missing_bucket_is_an_access_error(s3_env: str) -> None:
    backend = open_backend(parse_store_uri("s3://no-such-bucket-for-sure/p"))
    with pytest.raises(StoreAccessError, match="bucket does not exist"):
        backend.read("m/versions/v.json")


def test_file_writes_are_durable_when_they_return(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A publish writes a version's objects, then the manifests that name them: on a shared
    volume each must be on disk (bytes before the rename, the name after it) before the next
    write, or a power loss keeps a manifest whose objects were lost (recorded from the real
    ``os.fsync``)."""
    root = tmp_path / "store"
    backend = open_backend(parse_store_uri(f"file://{root}"))
    synced: list[Path] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    pack = tmp_path / "pack"
    pack.write_bytes(os.urandom(10_000))
    backend.upload_files([(pack, "m/objects/pack")])
    objects = (root / "m" / "objects").resolve()
    assert any(p.parent == objects and p.name.startswith(".tmp-") for p in synced)
    assert synced[-1] == objects  # the rename, after the bytes
    backend.write("m/versions/v.json", b"{}", create_only=True)
    assert synced[-1] == (root / "m" / "versions").resolve()
