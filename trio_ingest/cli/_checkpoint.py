"""``trio-ingest checkpoint show|reset FILE``: the checkpoints of an input file.

A file source keeps one checkpoint per (file, destination) pair, next to the
file: ``FILE.<kind>-<hash>.checkpoint``. ``show`` lists them with the
destination each belongs to and how far it got; ``reset`` deletes them (all,
or those whose destination contains ``--destination``), so the next run loads
the file from the start (idempotent sinks store nothing twice).
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

import click

from .._errors import SourceError
from ..sources._files import read_checkpoint
from ._common import Command, Group, fail

__all__ = ("checkpoint",)


def _checkpoints(file: Path) -> list[Path]:
    if file.name.endswith(".checkpoint"):
        if not file.exists():
            fail(f"{os.fspath(file)}: no such checkpoint")
        return [file]
    if not file.exists() and not file.parent.is_dir():
        fail(f"{os.fspath(file)}: no such file")
    found = sorted(file.parent.glob(f"{file.name}.*.checkpoint"))
    legacy = file.with_name(file.name + ".checkpoint")
    return found + ([legacy] if legacy.exists() else [])


def _describe(path: Path) -> dict[str, Any]:
    try:
        data = read_checkpoint(path)
    except SourceError as exc:
        return {"checkpoint": os.fspath(path), "error": str(exc)}
    data = data or {}
    moment = data.get("time")
    written = (datetime.datetime.fromtimestamp(moment, datetime.UTC).isoformat(timespec="seconds")
               if isinstance(moment, int | float) else None)
    return {
        "checkpoint": os.fspath(path),
        "destination": data.get("destination"),
        "file": data.get("file"),
        "offset": data.get("offset"),
        "line": data.get("line"),
        "written": written,
        "trusted": isinstance(data.get("fingerprint"), str) or not data.get("offset"),
    }


@click.group(cls=Group)
def checkpoint() -> None:
    """Show or reset the checkpoints of an input file (one per destination)."""


@checkpoint.command(cls=Command)
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print them as JSON.")
def show(file: Path, as_json: bool) -> None:
    """List the checkpoints of FILE: destination, line and byte reached, when written."""
    entries = [_describe(p) for p in _checkpoints(file)]
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    if not entries:
        click.echo(f"{os.fspath(file)}: no checkpoint (the next run loads it from the start)")
        return
    for e in entries:
        if "error" in e:
            click.echo(f"{e['checkpoint']}: unreadable: {e['error']}")
            continue
        note = "" if e["trusted"] else "  (no fingerprint: refused until reset)"
        click.echo(f"{e['checkpoint']}: {e['destination'] or '(no destination named)'}: "
                   f"line {e['line']:,}, byte {e['offset']:,}, written {e['written']}{note}")


@checkpoint.command(cls=Command)
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--destination", default=None, metavar="TEXT",
              help="Only the checkpoints whose destination contains TEXT.")
def reset(file: Path, destination: str | None) -> None:
    """Delete the checkpoints of FILE: the next run loads it from the start."""
    removed = 0
    for path in _checkpoints(file):
        entry = _describe(path)
        if destination is not None and destination not in str(entry.get("destination")):
            continue
        path.unlink(missing_ok=True)
        removed += 1
        click.echo(f"removed {os.fspath(path)} ({entry.get('destination') or 'no destination'})")
    if not removed:
        click.echo(f"{os.fspath(file)}: no checkpoint to remove")
