"""The ``trio-ingest`` command (needs the ``cli`` extra: click and rich)."""

from __future__ import annotations

import sys

__all__ = ("main",)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``trio-ingest`` console script."""
    try:
        import click  # noqa: F401 -- only checking it is there
        import rich  # noqa: F401
    except ImportError:
        sys.stderr.write(
            "error: the trio-ingest command needs the 'cli' extra: pip install 'trio-ingest[cli]'\n"
        )
        raise SystemExit(2) from None
    from ._app import cli

    cli.main(args=argv, prog_name="trio-ingest")
