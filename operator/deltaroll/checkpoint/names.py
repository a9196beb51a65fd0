"""File names read from manifests and index files are data, not paths.

Every name that becomes a path is checked here before it touches a filesystem, so a manifest
naming ``../../x``, an absolute path or a name with control characters cannot write outside the
directory it belongs to.
"""

from __future__ import annotations

import re
from pathlib import Path

from deltaroll.checkpoint.errors import UnsafeNameError

_MAX_NAME_BYTES = 255
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f/\\]")


def check_file_name(name: str) -> str:
    """Return ``name`` if it is a plain, visible file name of one path component, else raise."""
    if (
        not name
        or name in (".", "..")
        or name.startswith(".")
        or _FORBIDDEN.search(name)
        or len(name.encode("utf-8", "surrogatepass")) > _MAX_NAME_BYTES
    ):
        raise UnsafeNameError(
            f"refusing file name {name!r}: only plain file names (no paths, no leading dot, no "
            "control characters) are allowed in a checkpoint; the delta or index is corrupt or "
            "malicious"
        )
    return name


def child_path(directory: Path, name: str) -> Path:
    """``directory / name`` after checking that ``name`` is a safe single component."""
    path = directory / check_file_name(name)
    if path.parent != directory:
        raise UnsafeNameError(f"refusing file name {name!r}: it leaves {directory}")
    return path
