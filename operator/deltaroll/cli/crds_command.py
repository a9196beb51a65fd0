"""``deltaroll crds``: write the CustomResourceDefinitions generated from the API models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deltaroll.cli.output import emit


def register(app: typer.Typer) -> None:
    """Add the ``crds`` command."""
    app.command("crds")(crds)


def crds(
    output_dir: Annotated[
        Path | None,
        typer.Option("-o", "--output-dir", help="Write one YAML file per CRD into this folder."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Report the files written as JSON.")
    ] = False,
) -> None:
    """Print the CRDs (ModelDelta, ModelDeployment) as YAML, or write them into a folder.

    With -o, each file is written to a temporary name and renamed, so a reader (or `kubectl
    apply -f crds/`) never sees half a file.

    The files are generated from the pydantic models in deltaroll.api; `make crds` refreshes
    crds/ and charts/deltaroll/crds/ from them.
    """
    from deltaroll.api.crd import crd_files

    files = crd_files()
    if output_dir is None:
        if as_json:
            emit({"crds": files}, as_json=True)
        else:
            typer.echo("".join(files.values()), nl=False)
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        target = output_dir / name
        temporary = target.with_name(f".{name}.tmp")
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(target)
        written.append(str(target))
    emit({"files": written}, as_json=as_json, human="\n".join(f"wrote {w}" for w in written))
