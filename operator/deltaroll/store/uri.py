"""Parsing and validation of store URIs.

    file:///abs/path                         a directory (a ReadWriteMany volume in a cluster)
    s3://bucket/optional/prefix              any S3-compatible endpoint, configured from AWS_* env
    hf://buckets/<namespace>/<bucket>/prefix a Hugging Face Storage Bucket

Credentials never belong in a URI (they would end up in logs and status): a URI with a user-info
part is refused and the message says where credentials go instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from deltaroll.store.errors import InvalidStoreUriError

Scheme = Literal["file", "s3", "hf"]

_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# The Hub's characters for a namespace or bucket name; huggingface_hub leaves bucket ids to the
# Hub (it validates only repo ids), so any other rule of the Hub's is the Hub's to answer.
_HF_PART = re.compile(r"[A-Za-z0-9._-]{1,96}")
_PREFIX_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=-]{0,127}")


@dataclass(frozen=True)
class StoreUri:
    """A validated store location. ``prefix`` has no leading or trailing slash ('' for none)."""

    scheme: Scheme
    location: str  # file: absolute directory; s3: bucket; hf: "<namespace>/<bucket>"
    prefix: str = ""

    def __str__(self) -> str:
        if self.scheme == "file":
            return f"file://{self.location}"
        tail = f"/{self.prefix}" if self.prefix else ""
        if self.scheme == "s3":
            return f"s3://{self.location}{tail}"
        return f"hf://buckets/{self.location}{tail}"


def parse_store_uri(text: str) -> StoreUri:
    """Parse and validate ``text``; raise :class:`InvalidStoreUriError` saying what is wrong."""
    parts = urlsplit(text)
    if parts.username or parts.password or "@" in parts.netloc:
        raise InvalidStoreUriError(
            "store URIs must not carry credentials; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
            "(S3) or HF_TOKEN (Hugging Face) in the environment instead"
        )
    if parts.query or parts.fragment:
        raise InvalidStoreUriError(f"store URI {text!r} must not have a query or fragment")
    if parts.scheme == "file":
        return _parse_file(text, parts.netloc, parts.path)
    if parts.scheme == "s3":
        return _parse_s3(text, parts.netloc, parts.path)
    if parts.scheme == "hf":
        return _parse_hf(text, parts.netloc, parts.path)
    raise InvalidStoreUriError(
        f"store URI {text!r} has an unknown scheme; use file:///path, s3://bucket/prefix or "
        "hf://buckets/<namespace>/<bucket>/prefix"
    )


def _parse_file(text: str, netloc: str, path: str) -> StoreUri:
    if netloc not in ("", "localhost") or not path.startswith("/"):
        raise InvalidStoreUriError(
            f"store URI {text!r} must be an absolute path: file:///absolute/path"
        )
    return StoreUri("file", str(Path(path).resolve()))


def _parse_s3(text: str, bucket: str, path: str) -> StoreUri:
    if not _S3_BUCKET.fullmatch(bucket):
        raise InvalidStoreUriError(
            f"store URI {text!r} needs a valid bucket name: s3://bucket/prefix (3-63 characters "
            "from a-z 0-9 . -)"
        )
    return StoreUri("s3", bucket, _parse_prefix(text, path))


def _parse_hf(text: str, netloc: str, path: str) -> StoreUri:
    segments = [s for s in path.split("/") if s]
    if netloc != "buckets" or len(segments) < 2:
        raise InvalidStoreUriError(
            f"store URI {text!r} must look like hf://buckets/<namespace>/<bucket>/optional/prefix"
        )
    namespace, bucket = segments[0], segments[1]
    for part in (namespace, bucket):
        if not _HF_PART.fullmatch(part) or part in (".", ".."):
            raise InvalidStoreUriError(f"store URI {text!r}: {part!r} is not a valid Hub name")
    return StoreUri("hf", f"{namespace}/{bucket}", _parse_prefix(text, "/".join(segments[2:])))


def _parse_prefix(text: str, path: str) -> str:
    segments = [s for s in path.split("/") if s]
    for segment in segments:
        if not _PREFIX_PART.fullmatch(segment) or ".." in segment:
            raise InvalidStoreUriError(
                f"store URI {text!r}: prefix segment {segment!r} must use A-Z a-z 0-9 . _ = - "
                "and must not be '..'"
            )
    return "/".join(segments)
