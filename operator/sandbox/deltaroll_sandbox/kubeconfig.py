"""The kubeconfig a sandbox writes: one cluster (HTTPS, our CA), one user, one context."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import yaml

CONTEXT = "deltaroll-sandbox"
# The sandbox does not authenticate; some clients insist on a credential, so give them one.
TOKEN = "deltaroll-sandbox"  # noqa: S105 - not a secret: the sandbox checks no credentials


def write(path: Path, server_url: str, ca_cert: Path, namespace: str = "default") -> Path:
    """Write the kubeconfig atomically (temp name, then rename) and return its path."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CONTEXT,
                "cluster": {
                    "server": server_url,
                    "certificate-authority-data": base64.b64encode(ca_cert.read_bytes()).decode(),
                },
            }
        ],
        "users": [{"name": CONTEXT, "user": {"token": TOKEN}}],
        "contexts": [
            {
                "name": CONTEXT,
                "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": namespace},
            }
        ],
        "current-context": CONTEXT,
        "preferences": {},
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return path
