"""``trio-ingest ingest FILE --sqlite DB --table T``: the everyday job in one line.

Loads a JSON Lines or CSV file (plain, gzip or zstd, or stdin) into a SQLite
or PostgreSQL table, a JSON Lines file or a Parquet directory, with a
checkpoint per (file, destination) pair (a rerun resumes where the last one
stopped), a dead-letter file for the lines that cannot be loaded (each with its
line number and reason) and a dead-letter budget that stops a run whose input
is plainly wrong.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any, Literal

import click

from .. import sinks
from .._budget import DeadLetterBudget
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
from ._spec import (
    DEFAULT_BUDGET,
    check_dsn,
    check_table,
    default_checkpoint,
    destination_of,
    make_sink,
)

__all__ = ("ingest",)

_POSITIVE = click.FloatRange(min=0, min_open=True)


_COMPRESSED = (".gz", ".gzip", ".zst", ".zstd")


def _format_of(path: Path, fmt: str) -> Literal["jsonl", "csv", "tsv"]:
    if fmt != "auto":
        return fmt  # type: ignore[return-value]
    name = path.name.lower()
    for ext in _COMPRESSED:  # in.csv.gz is CSV (the content says it is compressed)
        name = name.removesuffix(ext)
    suffix = Path(name).suffix
    return "csv" if suffix == ".csv" else "tsv" if suffix == ".tsv" else "jsonl"


def _budget(ctx: click.Context, param: click.Parameter, value: str) -> DeadLetterBudget | None:
    try:
        return DeadLetterBudget.parse(value)
    except ConfigError as exc:
        fail(f"--dead-letter-budget: {exc}")


@click.command(cls=Command)
@click.argument("file", type=click.Path(dir_okay=True, allow_dash=True, path_type=Path))
@click.option("--sqlite", "db", default=None, type=click.Path(path_type=Path),
              help="SQLite database to load into (created if missing).")
@click.option("--postgres", "dsn", default=None, metavar="DSN",
              help="PostgreSQL to load into instead (a libpq DSN or URL; needs the "
                   "'postgres' extra). Empty: TRIO_INGEST_PG_DSN.")
@click.option("--jsonl", "out_jsonl", default=None, type=click.Path(path_type=Path),
              help="Write events to this JSON Lines file instead.")
@click.option("--parquet", "out_parquet", default=None, type=click.Path(path_type=Path),
              help="Write events as Parquet files into this directory instead "
                   "(needs the 'parquet' extra).")
@click.option("--table", default=None,
              help="Table to load into (created if missing); --sqlite and --postgres.")
@click.option("--format", "fmt", type=click.Choice(["auto", "jsonl", "csv", "tsv"]),
              default="auto", show_default=True,
              help="Input format; auto: .csv is CSV, .tsv tab-separated, anything else JSONL "
                   "(.gz and .zst are looked through; compression is read from the content).")
@click.option("--schema", default=None, metavar="NAME:TYPE,...|infer",
              help="CSV column types (str, int, float, bool, json), or 'infer'.")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Checkpoint file [default: FILE.<destination>.checkpoint, one per "
                   "destination].")
@click.option("--reset", is_flag=True,
              help="Forget the checkpoint of this (file, destination) pair: load from the start.")
@click.option("--dead-letters", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Dead-letter file, JSON Lines [default: FILE.dead-letters.jsonl].")
@click.option("--dead-letter-budget", "budget", default=DEFAULT_BUDGET.describe(),
              show_default=True, callback=_budget, metavar="KEY=VALUE,...|off",
              help="Stop the run (exit 1, nothing committed past it) when more than RATIO of "
                   "the last WINDOW events, or more than CONSECUTIVE in a row, are "
                   "dead-lettered.")
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
    out_jsonl: Path | None,
    out_parquet: Path | None,
    table: str | None,
    fmt: str,
    schema: str | None,
    checkpoint: Path | None,
    reset: bool,
    dead_letters: Path | None,
    budget: DeadLetterBudget | None,
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
    """Load FILE (JSON Lines or CSV, plain, gzip or zstd; '-' for stdin) into a store.

    Into a SQLite or PostgreSQL table (id, key, event_time, payload as JSON,
    ingested_at, written once however often the file is loaded), a JSON
    Lines file or a Parquet directory. Progress is checkpointed per (file,
    destination): run the same command again after an interruption (or a
    crash) and it resumes where it stopped; into another destination it
    loads everything; --reset starts over. Lines that cannot be loaded go to
    the dead-letter file with their line number and reason; when most of
    them fail (--dead-letter-budget) the run stops with exit code 1 and
    commits nothing past that point. SIGINT or SIGTERM stops gracefully; a
    second signal forces. Exit code 0 when the file was loaded (within the
    budget) or a graceful stop drained what was read, 1 when the run failed,
    2 for bad usage, 128+signal when the stop was forced or cut short.
    """
    output = make_output(quiet, as_json, log_level)
    targets = [t for t in (db, dsn, out_jsonl, out_parquet) if t is not None]
    if len(targets) != 1:
        fail("give exactly one of --sqlite DB, --postgres DSN, --jsonl FILE, --parquet DIR")
    kind = "sqlite" if db is not None else "postgres" if dsn is not None else (
        "jsonl" if out_jsonl is not None else "parquet")
    if kind in ("sqlite", "postgres"):
        if table is None:
            fail(f"--{kind} needs --table NAME")
        problem = check_table(table)
        if problem:
            fail(problem)
    elif table is not None:
        fail("--table applies to --sqlite and --postgres only")
    if dsn is not None:
        problem = check_dsn(dsn or os.environ.get("TRIO_INGEST_PG_DSN", ""))
        if problem:
            fail(problem)
    stdin = os.fspath(file) == "-"
    if not stdin:
        if not file.exists():
            fail(f"{os.fspath(file)}: no such file")
        if not file.is_file():
            fail(f"{os.fspath(file)}: not a regular file")
    if stdin and follow:
        fail("--follow needs a file, not stdin")
    if stdin and (checkpoint is not None or reset):
        fail("stdin cannot be resumed: --checkpoint and --reset need a file")
    source_kind = _format_of(file, fmt)
    if delimiter is not None and source_kind == "jsonl":
        fail("--delimiter applies to CSV input only")
    if schema is not None and source_kind == "jsonl":
        fail("--schema applies to CSV input only")
    sink_options: dict[str, Any]
    if kind == "sqlite":
        sink_options = {"path": db, "table": table, "synchronous": synchronous.upper(),
                        "max_batch": batch_size}
    elif kind == "postgres":
        sink_options = {"dsn": dsn or None, "table": table, "max_batch": batch_size}
    elif kind == "jsonl":
        sink_options = {"path": out_jsonl, "max_batch": batch_size}
    else:
        sink_options = {"path": out_parquet}
    destination = destination_of(kind, sink_options)
    base = Path("stdin") if stdin else file
    if not stdin:
        checkpoint = checkpoint or default_checkpoint(file, destination)
    dead_letters = dead_letters or base.with_name(base.name + ".dead-letters.jsonl")
    if reset and checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    common: dict[str, Any] = {
        "checkpoint": checkpoint,
        "destination": None if stdin else destination,
        "follow": follow,
        "id_field": id_field,
        "key_field": key_field,
        "time_field": time_field,
        "max_line_bytes": max_line_bytes,
        "rate": rate,
        "name": base.name,
    }
    try:
        source: JsonLines | CSV
        if source_kind == "jsonl":
            source = JsonLines(file, **common)
        else:
            sep = delimiter if delimiter is not None else ("\t" if source_kind == "tsv" else ",")
            source = CSV(file, delimiter=sep.replace("\\t", "\t"), schema=schema, **common)
        try:
            store: Any = make_sink(kind, sink_options)
        except ImportError:
            needed = "postgres" if kind == "postgres" else "parquet"
            fail(f"--{kind} needs the '{needed}' extra: pip install 'trio-ingest[{needed}]'")
        dead = sinks.JsonLines(dead_letters, name="dead_letters")
        pipeline = Pipeline(source, sink=store, dead_letter=dead, capacity=capacity,
                            max_batch=batch_size, shutdown_timeout=shutdown_timeout,
                            dead_letter_budget=budget)
    except ConfigError as exc:
        fail(str(exc))

    err = output.stderr()
    view = None
    if not output.quiet and err.is_terminal:
        size = None if stdin or follow else file.stat().st_size
        view = ProgressView(err, title=base.name, total=size,
                            completed=lambda _report: source.position, unit="bytes")

    outcome = run_command(output, pipeline, view=view)
    rows, inserted, target = _written(kind, store, sink_options)
    extra: list[tuple[str, str, str]] = [
        ("rows inserted", f"{inserted:,}", "new this run (repeats are skipped)"),
        ("rows in table" if kind in ("sqlite", "postgres") else "written", f"{rows:,}", target),
        ("dead letters", f"{dead.lines:,}", os.fspath(dead_letters)),
    ]
    if checkpoint is not None:
        extra.append(("checkpoint", f"byte {source.committed or 0:,}", os.fspath(checkpoint)))
    finish(output, outcome, title=f"trio-ingest ingest {base.name}", extra=extra, data={
        "file": os.fspath(file),
        "table": table,
        "db": os.fspath(db) if db is not None else kind,
        "destination": destination,
        "rows_inserted": inserted,
        "table_rows": rows,
        "dead_letter_lines": dead.lines,
        "dead_letters": os.fspath(dead_letters),
        "checkpoint": os.fspath(checkpoint) if checkpoint is not None else None,
        "checkpoint_offset": source.committed or 0,
        "compression": source.compression,
    })


def _written(kind: str, store: Any, options: dict[str, Any]) -> tuple[int, int, str]:
    """(rows at the destination, rows new this run, where) for the summary."""
    if kind == "sqlite":
        rows = _count_rows(options["path"], options["table"])
        return rows, store.inserted, f"{os.fspath(options['path'])}:{options['table']}"
    if kind == "postgres":
        return _count_pg_rows(store), store.rows_inserted, f"postgres:{store.table}"
    if kind == "jsonl":
        return store.lines, store.lines, os.fspath(options["path"])
    written = int(getattr(store, "rows_written", 0) or 0)
    return written, written, os.fspath(options["path"])


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
