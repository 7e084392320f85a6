"""``trio-ingest ingest FILE --sqlite DB --table T``: the everyday job in one line.

Loads a JSON Lines or CSV file into a SQLite (or, with ``--postgres DSN``, a
PostgreSQL) table with a checkpoint (a rerun
resumes where the last one stopped) and a dead-letter file for the lines that
cannot be loaded (each with its line number and reason).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any, Literal

import click

from .. import sinks
from .._errors import ConfigError
from .._pipeline import Pipeline
from ..sources._files import CSV, JsonLines
from ._common import (
    Command,
    ProgressView,
    fail,
    finish,
    make_output,
    output_options,
    run_command,
)

__all__ = ("ingest",)

_POSITIVE = click.FloatRange(min=0, min_open=True)


def _format_of(path: Path, fmt: str) -> Literal["jsonl", "csv", "tsv"]:
    if fmt != "auto":
        return fmt  # type: ignore[return-value]
    suffix = path.suffix.lower()
    return "csv" if suffix == ".csv" else "tsv" if suffix == ".tsv" else "jsonl"


@click.command(cls=Command)
@click.argument("file", type=click.Path(dir_okay=True, path_type=Path))
@click.option("--sqlite", "db", default=None, type=click.Path(path_type=Path),
              help="SQLite database to load into (created if missing).")
@click.option("--postgres", "dsn", default=None, metavar="DSN",
              help="PostgreSQL to load into instead (a libpq DSN or URL; needs the "
                   "'postgres' extra). Empty: TRIO_INGEST_PG_DSN.")
@click.option("--table", required=True, help="Table to load into (created if missing).")
@click.option("--format", "fmt", type=click.Choice(["auto", "jsonl", "csv", "tsv"]),
              default="auto", show_default=True,
              help="Input format; auto: .csv is CSV, .tsv tab-separated, anything else JSONL.")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Checkpoint file [default: FILE.checkpoint].")
@click.option("--dead-letters", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Dead-letter file, JSON Lines [default: FILE.dead-letters.jsonl].")
@click.option("--id-field", default="id", show_default=True, help="Field holding the id.")
@click.option("--key-field", default=None, help="Field holding the key.")
@click.option("--time-field", default=None,
              help="Field holding the event time (epoch seconds or ISO 8601).")
@click.option("--delimiter", default=None, help="CSV field separator [default: , or tab].")
@click.option("--follow", is_flag=True,
              help="Keep tailing the file for new lines until interrupted.")
@click.option("--max-line-bytes", type=click.IntRange(min=1), default=1_000_000,
              show_default=True, help="Longer lines are dead-lettered.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1_000, show_default=True,
              help="Lines per read and rows per transaction.")
@click.option("--capacity", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Events queued between the file and the database.")
@click.option("--rate", type=_POSITIVE, default=None,
              help="Most lines per second (default: unlimited).")
@click.option("--synchronous", type=click.Choice(["FULL", "NORMAL"], case_sensitive=False),
              default="FULL", show_default=True,
              help="SQLite durability: FULL survives power loss, NORMAL a process crash.")
@click.option("--shutdown-timeout", type=_POSITIVE, default=30.0, show_default=True,
              help="Seconds a graceful stop (Ctrl-C, SIGTERM) may take to drain.")
@output_options
def ingest(
    file: Path,
    db: Path | None,
    dsn: str | None,
    table: str,
    fmt: str,
    checkpoint: Path | None,
    dead_letters: Path | None,
    id_field: str,
    key_field: str | None,
    time_field: str | None,
    delimiter: str | None,
    follow: bool,
    max_line_bytes: int,
    batch_size: int,
    capacity: int,
    rate: float | None,
    synchronous: str,
    shutdown_timeout: float,
    quiet: bool,
    as_json: bool,
    log_level: str,
) -> None:
    """Load FILE (JSON Lines or CSV) into a SQLite table, resumably.

    Every line becomes a row (id, key, event_time, payload as JSON,
    ingested_at), written once however often the file is loaded. Progress is
    checkpointed: run the same command again after an interruption (or a
    crash) and it resumes where it stopped. Lines that cannot be loaded go
    to the dead-letter file with their line number and reason. SIGINT or
    SIGTERM stops gracefully (what was read is written and checkpointed); a
    second signal forces. Exit code 0 when the file was loaded (dead letters
    included) or a graceful stop drained what was read, 1 when the run
    failed, 2 for bad usage, 128+signal when the stop was forced or cut short.
    """
    output = make_output(quiet, as_json, log_level)
    if (db is None) == (dsn is None):
        fail("give exactly one of --sqlite DB and --postgres DSN")
    if not file.exists():
        fail(f"{os.fspath(file)}: no such file")
    if not file.is_file():
        fail(f"{os.fspath(file)}: not a regular file")
    kind = _format_of(file, fmt)
    checkpoint = checkpoint or file.with_name(file.name + ".checkpoint")
    dead_letters = dead_letters or file.with_name(file.name + ".dead-letters.jsonl")
    if delimiter is not None and kind == "jsonl":
        fail("--delimiter applies to CSV input only")
    common: dict[str, Any] = {
        "checkpoint": checkpoint,
        "follow": follow,
        "id_field": id_field,
        "key_field": key_field,
        "time_field": time_field,
        "max_line_bytes": max_line_bytes,
        "rate": rate,
        "name": file.name,
    }
    try:
        source: JsonLines | CSV
        if kind == "jsonl":
            source = JsonLines(file, **common)
        else:
            sep = delimiter if delimiter is not None else ("\t" if kind == "tsv" else ",")
            source = CSV(file, delimiter=sep.replace("\\t", "\t"), **common)
        store: Any
        if db is not None:
            store = sinks.SQLite(db, table, synchronous=synchronous.upper(), max_batch=batch_size)
        else:
            try:
                store = sinks.Postgres(dsn or None, table, max_batch=batch_size)
            except ImportError as exc:
                fail(f"--postgres needs the 'postgres' extra: pip install 'trio-ingest[postgres]' "
                     f"({exc})")
        dead = sinks.JsonLines(dead_letters, name="dead_letters")
        pipeline = Pipeline(source, sink=store, dead_letter=dead, capacity=capacity,
                            max_batch=batch_size, shutdown_timeout=shutdown_timeout)
    except ConfigError as exc:
        fail(str(exc))

    err = output.stderr()
    view = None
    if not output.quiet and err.is_terminal:
        size = file.stat().st_size
        view = ProgressView(err, title=file.name, total=None if follow else size,
                            completed=lambda _report: source.position, unit="bytes")

    outcome = run_command(output, pipeline, view=view)
    if db is not None:
        rows = _count_rows(db, table)
        inserted = store.inserted
        target = f"{os.fspath(db)}:{table}"
    else:
        rows = _count_pg_rows(store)
        inserted = store.rows_inserted
        target = f"postgres:{store.table}"
    extra = [
        ("rows inserted", f"{inserted:,}", "new this run (repeats are skipped)"),
        ("rows in table", f"{rows:,}", target),
        ("dead letters", f"{dead.lines:,}", os.fspath(dead_letters)),
        ("checkpoint", f"byte {source.committed or 0:,}", os.fspath(checkpoint)),
    ]
    finish(output, outcome, title=f"trio-ingest ingest {file.name}", extra=extra, data={
        "file": os.fspath(file),
        "table": table,
        "db": os.fspath(db) if db is not None else "postgres",
        "rows_inserted": inserted,
        "table_rows": rows,
        "dead_letter_lines": dead.lines,
        "dead_letters": os.fspath(dead_letters),
        "checkpoint": os.fspath(checkpoint),
        "checkpoint_offset": source.committed or 0,
    })


def _count_pg_rows(store: Any) -> int:
    try:
        import psycopg
        from psycopg import sql

        with psycopg.connect(store._dsn, connect_timeout=5) as conn:
            query = sql.SQL("SELECT count(*) FROM {}").format(
                sql.Identifier(*store.table.split("."))
            )
            row = conn.execute(query).fetchone()
            return int(row[0]) if row else 0
    except Exception:  # noqa: BLE001 -- a summary figure only; the run's result stands
        return 0


def _count_rows(db: Path, table: str) -> int:
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    except sqlite3.Error:
        return 0
    try:
        return int(conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        conn.close()
