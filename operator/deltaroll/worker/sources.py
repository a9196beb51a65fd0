"""A checkpoint or patch URI from a ModelDelta, made into a local path the checkpoint layer reads.

    file:///path                      a path on a mounted volume: used where it is, never copied
    s3://bucket/prefix                every file directly under the prefix (AWS_* environment)
    hf://buckets/<ns>/<bucket>/prefix a Hugging Face Storage Bucket (HF_TOKEN)
    hf://<org>/<repo>[@rev][/subdir]  a Hub model repository (snapshot_download)

Remote checkpoints are downloaded into the Job's work directory; only the top-level files of the
prefix are taken (a Hugging Face checkpoint folder is flat), so nothing from a manifest's URI can
write outside that directory. A URI ending in ``.safetensors`` names one file (a TRL patch or a
bare checkpoint file).
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import structlog

from deltaroll.worker.errors import SourceNotFoundError, UnsupportedSourceError

log = structlog.get_logger(__name__)
_HF_REPO = re.compile(
    r"^hf://(?P<repo>[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)"
    r"(@(?P<rev>[A-Za-z0-9._-]+))?(/(?P<sub>[^\s]*))?$"
)
_SAFE_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]*$")


def fetch_source(uri: str, work_dir: Path) -> Path:
    """A local path holding the checkpoint (or patch file) at ``uri``."""
    if ".." in PurePosixPath(urlsplit(uri).path).parts:
        raise UnsupportedSourceError(f"{uri}: '..' path segments are not allowed in a source URI")
    if uri.startswith("file://"):
        return _local(uri)
    if uri.startswith(("s3://", "hf://buckets/")):
        return _from_bucket(uri, work_dir)
    if uri.startswith("hf://"):
        return _from_hub_repo(uri, work_dir)
    raise UnsupportedSourceError(
        f"{uri}: unsupported source; use file:///path, s3://bucket/prefix, "
        "hf://buckets/<ns>/<bucket>/prefix or hf://<org>/<repo>[@revision][/subdir]"
    )


def _local(uri: str) -> Path:
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        raise UnsupportedSourceError(f"{uri}: a file URI must be absolute: file:///path")
    path = Path(parts.path)
    if not path.exists():
        raise SourceNotFoundError(
            f"{uri}: nothing exists at {path}; check the URI and that the volume is mounted "
            "(spec.source.*.volume)"
        )
    return path


def _from_bucket(uri: str, work_dir: Path) -> Path:
    from deltaroll.store import parse_store_uri
    from deltaroll.store.backends import open_backend

    single = uri.endswith(".safetensors")
    folder_uri, _, file_name = uri.rpartition("/") if single else (uri, "", "")
    backend = open_backend(parse_store_uri(folder_uri))
    if single:
        keys = [file_name] if backend.existing([file_name]) else []
    else:
        keys = [info.key for info in backend.list("") if "/" not in info.key]
    keys = [key for key in keys if _SAFE_FILE.match(key)]
    if not keys:
        raise SourceNotFoundError(f"{uri}: no files there; check the URI and the credentials")
    local_dir = work_dir / "source"
    local_dir.mkdir(parents=True, exist_ok=True)
    backend.download_files([(key, local_dir / key) for key in keys])
    log.info("worker.source_downloaded", uri=uri, files=len(keys))
    return local_dir / file_name if single else local_dir


def _from_hub_repo(uri: str, work_dir: Path) -> Path:
    from huggingface_hub import snapshot_download

    match = _HF_REPO.match(uri)
    if match is None:
        raise UnsupportedSourceError(f"{uri}: expected hf://<org>/<repo>[@revision][/subdir]")
    sub = (match["sub"] or "").strip("/")
    pattern = f"{sub}/*" if sub and not sub.endswith(".safetensors") else (sub or "*")
    local = snapshot_download(
        match["repo"],
        revision=match["rev"],
        allow_patterns=[pattern],
        local_dir=work_dir / "source",
    )
    path = Path(local) / sub if sub else Path(local)
    if not path.exists():
        raise SourceNotFoundError(f"{uri}: the repository has no {sub or 'files'}")
    return path
