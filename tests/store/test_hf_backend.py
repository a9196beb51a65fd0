"""The hf:// backend against a fake of HfApi's bucket methods: path mapping, batching, paging,
error mapping, conditional-create emulation, and a whole push/pull through the Store facade."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from huggingface_hub.errors import BucketNotFoundError

from deltaroll.store import (
    ObjectNotFoundError,
    Store,
    StoreAccessError,
    StoreError,
    TransientStoreError,
    keys,
    parse_store_uri,
)
from deltaroll.store.backends import hf
from deltaroll.store.backends.hf import HfBackend
from deltaroll.store.manifests import ObjectRef
from deltaroll.store.transfer import upload_objects
from store.fake_hub import FakeHubApi, http_error
from store.support import FAST_RETRY


@pytest.fixture
def api() -> FakeHubApi:
    return FakeHubApi()


@pytest.fixture
def backend(api: FakeHubApi) -> HfBackend:
    return HfBackend(parse_store_uri("hf://buckets/ns/bucket/team/models"), api=api)  # type: ignore[arg-type]


def test_keys_map_under_the_prefix(backend: HfBackend, api: FakeHubApi) -> None:
    assert backend.write("m/names/a.json", b"{}", create_only=False)
    assert list(api.files) == ["team/models/m/names/a.json"]
    assert backend.path_of("m/x") == "team/models/m/x"
    assert backend.key_of("team/models/m/x") == "m/x"
    assert backend.key_of("team/other/m/x") is None
    assert backend.read("m/names/a.json") == b"{}"


def test_a_bucket_without_prefix_maps_keys_to_the_root(api: FakeHubApi) -> None:
    backend = HfBackend(parse_store_uri("hf://buckets/ns/bucket"), api=api)  # type: ignore[arg-type]
    backend.write("m/versions/v.json", b"1", create_only=False)
    assert list(api.files) == ["m/versions/v.json"]
    assert [i.key for i in backend.list("m/")] == ["m/versions/v.json"]


def test_create_only_never_overwrites(backend: HfBackend, api: FakeHubApi) -> None:
    assert backend.write("m/versions/v.json", b"first", create_only=True)
    assert not backend.write("m/versions/v.json", b"second", create_only=True)
    assert api.files["team/models/m/versions/v.json"] == b"first"


def test_uploads_and_downloads_are_batched(
    backend: HfBackend, api: FakeHubApi, tmp_path: Path
) -> None:
    count = 2 * hf.BATCH_SIZE + 3
    sources = []
    for index in range(count):
        source = tmp_path / f"src-{index}"
        source.write_bytes(f"object {index}".encode())
        sources.append((source, f"m/objects/{index:04d}"))
    reported: list[int] = []
    backend.upload_files(sources, progress=reported.append)
    uploads = [n for method, n in api.calls if method == "batch_bucket_files"]
    assert uploads == [hf.BATCH_SIZE, hf.BATCH_SIZE, 3]
    assert sum(reported) == sum(p.stat().st_size for p, _ in sources)

    api.calls.clear()
    (tmp_path / "out").mkdir()
    backend.download_files([(key, tmp_path / "out" / key.rsplit("/", 1)[1]) for _, key in sources])
    downloads = [n for method, n in api.calls if method == "download_bucket_files"]
    lookups = [n for method, n in api.calls if method == "get_bucket_paths_info"]
    assert downloads == lookups == [hf.BATCH_SIZE, hf.BATCH_SIZE, 3]
    assert (tmp_path / "out" / "0007").read_bytes() == b"object 7"


def test_listing_follows_every_page_and_skips_folders(backend: HfBackend, api: FakeHubApi) -> None:
    for index in range(3 * FakeHubApi.PAGE):
        api.files[f"team/models/m/objects/{index:04d}"] = b"x" * index
    api.files["team/models/other/objects/zzz"] = b"foreign model"
    api.files["team/elsewhere/m/objects/zzz"] = b"outside the prefix"
    listed = list(backend.list("m/objects/"))
    assert api.pages_served > 3
    assert [i.key for i in listed] == [f"m/objects/{i:04d}" for i in range(3 * FakeHubApi.PAGE)]
    assert [i.size for i in listed][:3] == [0, 1, 2]
    assert all(i.modified is not None for i in listed)


def test_listing_a_prefix_nothing_is_under_is_empty(backend: HfBackend, api: FakeHubApi) -> None:
    api.files["team/models/m/versions-old/v.json"] = b"a sibling the Hub's lexical match returns"
    assert list(backend.list("m/versions/")) == []


def test_a_404_on_listing_is_reported_not_taken_for_empty(
    backend: HfBackend, api: FakeHubApi
) -> None:
    # The Hub answers a prefix nothing is under with an empty listing: a 404 means another fault.
    api.fail["list_bucket_tree"] = [http_error(404, "404 Client Error")]
    with pytest.raises(StoreError, match="hf://buckets/ns/bucket/team/models"):
        list(backend.list("m/versions/"))


def _objects(tmp_path: Path, count: int) -> tuple[Path, list[ObjectRef]]:
    objects_dir = tmp_path / "objects"
    objects_dir.mkdir()
    refs = []
    for index in range(count):
        data = f"object {index}".encode()
        digest = hashlib.sha256(data).hexdigest()
        (objects_dir / digest).write_bytes(data)
        refs.append(ObjectRef(digest=digest, size=len(data)))
    return objects_dir, refs


def test_a_file_the_hub_refuses_for_good_is_not_retried_forever(
    backend: HfBackend, api: FakeHubApi, tmp_path: Path
) -> None:
    objects_dir, refs = _objects(tmp_path, 3)
    refused = "team/models/" + keys.object_key("m", refs[1].digest)
    api.refuse[refused] = 1_000
    with pytest.raises(StoreError) as caught:
        upload_objects(backend, "m", objects_dir, refs, policy=FAST_RETRY)
    assert not isinstance(caught.value, TransientStoreError)  # nothing would retry it again
    assert refused in str(caught.value)
    sent = [n for method, n in api.calls if method == "batch_bucket_files"]
    assert sent == [3, 1]  # the partial failure is sent again alone, then refused whole
    assert len(api.files) == 2


def test_a_file_the_hub_fails_once_is_sent_again(
    backend: HfBackend, api: FakeHubApi, tmp_path: Path
) -> None:
    objects_dir, refs = _objects(tmp_path, 3)
    api.refuse["team/models/" + keys.object_key("m", refs[0].digest)] = 1
    upload_objects(backend, "m", objects_dir, refs, policy=FAST_RETRY)
    assert len(api.files) == 3


def test_existing_reports_only_present_keys(backend: HfBackend, api: FakeHubApi) -> None:
    api.files["team/models/m/objects/a"] = b"a"
    assert backend.existing(["m/objects/a", "m/objects/b"]) == {"m/objects/a"}


def test_a_missing_object_is_named(backend: HfBackend, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFoundError, match="m/objects/nope"):
        backend.download_files([("m/objects/nope", tmp_path / "x")])
    with pytest.raises(ObjectNotFoundError, match="m/versions/v.json"):
        backend.read("m/versions/v.json")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (http_error(429), TransientStoreError),
        (http_error(503), TransientStoreError),
        (http_error(401), StoreAccessError),
        (http_error(403), StoreAccessError),
        (http_error(400), StoreError),
        (BucketNotFoundError("nope", response=http_error(404).response), StoreAccessError),
        (ConnectionResetError("reset by peer"), TransientStoreError),
    ],
)
def test_library_errors_become_named_store_errors(
    backend: HfBackend, api: FakeHubApi, error: BaseException, expected: type[StoreError]
) -> None:
    api.fail["batch_bucket_files"] = [error]
    with pytest.raises(expected) as caught:
        backend.write("m/names/a.json", b"{}", create_only=False)
    assert "hf://buckets/ns/bucket/team/models" in str(caught.value)
    assert "m/names/a.json" in str(caught.value) or expected is StoreAccessError


def test_a_hub_token_never_reaches_an_error(
    backend: HfBackend, api: FakeHubApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_SENTINELtoken123456")
    api.fail["batch_bucket_files"] = [http_error(400, "bad request with hf_SENTINELtoken123456")]
    with pytest.raises(StoreError) as caught:
        backend.write("m/names/a.json", b"{}", create_only=False)
    assert "hf_SENTINELtoken123456" not in str(caught.value)


def test_push_and_pull_through_the_store(
    api: FakeHubApi, checkpoints: list[Path], tmp_path: Path
) -> None:
    uri = "hf://buckets/ns/bucket/team/models"
    backend = HfBackend(parse_store_uri(uri), api=api)  # type: ignore[arg-type]
    store = Store(uri, backend=backend, cache_dir=tmp_path / "cache", retry=FAST_RETRY)
    store.push("tiny", checkpoints[0])
    api.fail["download_bucket_files"] = [http_error(503)]  # one transient failure, retried
    pushed = store.push("tiny", checkpoints[1], base=checkpoints[0], name="step-1")
    result = store.pull("tiny", "step-1", tmp_path / "out", base=checkpoints[0])
    assert result.path == [pushed.parent, pushed.version]
    assert api.fail["download_bucket_files"] == []  # the injected failure happened and was retried
    assert all(path.startswith("team/models/tiny/") for path in api.files)
