"""``deltaroll keys generate``: a publisher's Ed25519 key pair, as two PEM files.

The private key signs versions (``deltaroll push --sign-key``, ``deltaroll sign``, or the
operator's signing key Secret); the public key is what pullers and agents accept
(``--verify-key``, a ModelDeployment's ``spec.verification.publicKeys``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deltaroll.cli.output import JsonOpt, emit


def register(app: typer.Typer) -> None:
    """Add the ``keys`` group."""
    keys = typer.Typer(help="Publisher keys that sign versions.", no_args_is_help=True)
    keys.command("generate")(generate)
    app.add_typer(keys, name="keys")


def generate(
    private: Annotated[Path, typer.Argument(help="Where to write the private key (mode 0600).")],
    public: Annotated[Path, typer.Argument(help="Where to write the public key.")],
    as_json: JsonOpt = False,
) -> None:
    """Write a new Ed25519 key pair: PRIVATE (PKCS#8 PEM) and PUBLIC (PEM)."""
    from deltaroll.store.signing import generate_key_pair

    key = generate_key_pair(private, public)
    emit(
        {"private": str(private), "public": str(public), "key_id": key.key_id},
        as_json=as_json,
        human=f"wrote {private} and {public}; key id {key.key_id}",
    )
