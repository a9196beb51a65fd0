"""The admin policy of an operator run on the sandbox: file:// stores below the given roots.

The operator's built-in policy allows no file:// store (it would read the operator's own file
system); the demo, the benchmarks and local walk-throughs keep their stores and checkpoints in a
work directory, so they pass ``deltaroll operator run --policy`` a file this module writes.
"""

from __future__ import annotations

import json
from pathlib import Path


def write_local_policy(path: Path, *roots: Path) -> Path:
    """Write a policy allowing ``file://`` URIs below ``roots`` (and s3://, hf://); its path."""
    prefixes = [f"file://{root.resolve()}/" for root in roots] + ["s3://", "hf://"]
    path.write_text(json.dumps({"default": {"storePrefixes": prefixes}}))
    return path
