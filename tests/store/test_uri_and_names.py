"""Store URIs and names are validated before they become keys or paths."""

from __future__ import annotations

import pytest

from deltaroll.store import InvalidNameError, InvalidStoreUriError, keys, parse_store_uri
from deltaroll.store.names import validate_name


@pytest.mark.parametrize(
    ("text", "scheme", "location", "prefix"),
    [
        ("file:///srv/models", "file", "/srv/models", ""),
        ("s3://my-bucket", "s3", "my-bucket", ""),
        ("s3://my-bucket/team/llm/", "s3", "my-bucket", "team/llm"),
        ("hf://buckets/acme/weights", "hf", "acme/weights", ""),
        ("hf://buckets/acme/weights/rl/run-7", "hf", "acme/weights", "rl/run-7"),
        # Any of the Hub's characters, anywhere in the name.
        ("hf://buckets/acme/_scratch", "hf", "acme/_scratch", ""),
        ("hf://buckets/acme/.cache", "hf", "acme/.cache", ""),
        ("hf://buckets/-team/weights-", "hf", "-team/weights-", ""),
        ("hf://buckets/Acme.AI/v1..v2_runs/p", "hf", "Acme.AI/v1..v2_runs", "p"),
    ],
)
def test_valid_uris(text: str, scheme: str, location: str, prefix: str) -> None:
    uri = parse_store_uri(text)
    assert (uri.scheme, uri.location, uri.prefix) == (scheme, location, prefix)
    assert parse_store_uri(str(uri)) == uri


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("s3://AKIA:secret@bucket/p", "credentials"),
        ("gs://bucket", "unknown scheme"),
        ("file://relative/path", "absolute"),
        ("s3://B", "bucket name"),
        ("s3://bucket/../escape", "prefix segment"),
        ("hf://buckets/only-namespace", "hf://buckets/<namespace>/<bucket>"),
        ("hf://models/acme/x", "hf://buckets/<namespace>/<bucket>"),
        ("hf://buckets/acme/wei~ghts", "not a valid Hub name"),
        (f"hf://buckets/acme/{'b' * 97}", "not a valid Hub name"),
        ("s3://bucket/p?x=1", "query"),
    ],
)
def test_invalid_uris_say_what_to_do(text: str, says: str) -> None:
    with pytest.raises(InvalidStoreUriError, match=says.replace("?", r"\?")) as caught:
        parse_store_uri(text)
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize("name", ["llama-8b", "step-120", "v1.2_rc", "a" * 128])
def test_valid_names(name: str) -> None:
    assert validate_name(name, what="model") == name


@pytest.mark.parametrize(
    "name", ["", "..", "a..b", "a/b", "/abs", ".hidden", "-flag", "a b", "é", "a" * 129, "a\\b"]
)
def test_unsafe_names_never_become_keys(name: str) -> None:
    with pytest.raises(InvalidNameError):
        keys.version_key("model", name)
    with pytest.raises(InvalidNameError):
        keys.version_key(name, "v1")


def test_object_keys_need_a_sha256() -> None:
    digest = "ab" * 32
    assert keys.object_key("m", digest) == f"m/objects/{digest}"
    with pytest.raises(InvalidNameError):
        keys.object_key("m", "../../etc/passwd")
