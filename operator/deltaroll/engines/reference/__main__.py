"""``python -m deltaroll.engines.reference --model-path DIR --port N``: serve a checkpoint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deltaroll.engines.errors import ModelLoadError


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m deltaroll.engines.reference", description=__doc__
    )
    parser.add_argument("--model-path", type=Path, required=True, help="checkpoint directory")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="inference port")
    parser.add_argument("--admin-port", type=int, default=8001, help="admin port (127.0.0.1)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    args = parser.parse_args(argv)

    from deltaroll.engines.reference.loading import checkpoint_files

    try:
        checkpoint_files(args.model_path.resolve())  # fail before importing torch
        from deltaroll.engines.reference.server import serve

        serve(
            args.model_path,
            host=args.host,
            port=args.port,
            admin_port=args.admin_port,
            device=args.device,
        )
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
