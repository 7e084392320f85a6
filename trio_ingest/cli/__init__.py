"""The ``trio-ingest`` command (needs the ``cli`` extra: click and rich)."""

from __future__ import annotations

import signal
import sys
from types import FrameType

__all__ = ("main",)


class _StoppedEarly(BaseException):
    """SIGTERM arrived before the run watched for it: nothing was read yet."""


def _stop_early(signum: int, frame: FrameType | None) -> None:
    raise _StoppedEarly


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``trio-ingest`` console script.

    A SIGTERM while the command starts (imports, opening, before the run
    watches for signals) stops it at once with exit code 0: nothing was read,
    so there is nothing to drain; once the run is under way SIGTERM stops it
    gracefully as documented.

    Raises:
        SystemExit: Always, with the command's exit code (0 when SIGTERM stops it
            before the run starts, 2 when the ``cli`` extra is not installed).
    """
    if argv is None and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _stop_early)
    try:
        _main(argv)
    except _StoppedEarly:
        sys.stderr.write("stopped by SIGTERM before the run started (nothing was read)\n")
        raise SystemExit(0) from None


def _main(argv: list[str] | None) -> None:
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
