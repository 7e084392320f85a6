"""Rows/s into PostgreSQL, Parquet and SQLite through trio_ingest, against hand-written scripts.

``python -m benchmarks.bench_sinks_db [--quick] [--repeat N] [--dsn DSN] [--out FILE]``

PostgreSQL (200k rows; quick: 20k), each into a fresh table, same events, same run:

- ``executemany``: psycopg ``executemany(INSERT ... ON CONFLICT (id) DO NOTHING)``,
  one transaction per 5000 rows, one thread (the usual idempotent writer), and the
  same per 1000 rows (``executemany_1000``);
- ``hand-written``: psycopg, one thread, per 5000 rows: binary COPY into a temp
  staging table + ``INSERT ... SELECT ... ON CONFLICT (id) DO NOTHING``, one
  transaction (the method ``sinks.Postgres`` uses, with no framework around it);
- ``trio_ingest``: ``Pipeline(from_iterable(events), sink=sinks.Postgres(workers=2,
  max_batch=5000))`` on Trio;
- ``trio_ingest_defaults``: ``Pipeline(from_iterable(events), sink=sinks.Postgres(dsn,
  table))``, every setting left to the pipeline and the sink.

Goals: trio_ingest >= 2x executemany and >= 0.8x the hand-written script (issue 5);
trio_ingest_defaults >= 2x executemany per 1000 rows (issue 11).

Parquet (200k rows; quick: 20k), files of 100k rows (quick: 10k):

- ``plain pyarrow``: ``pa.Table.from_pylist`` + ``pq.write_table`` per file (the
  idiom), and a faster hand-tuned variant (payloads as one struct array);
- ``trio_ingest``: ``sinks.Parquet(root, flush_every=file_rows)`` with the sink's
  and the pipeline's defaults otherwise (schema inferred, validation, atomic commit
  with fsync), and the same with ``fsync=False``;
- ``sink_only``: the same sink driven by hand (``write_batch`` of 10,000, ``flush``
  per file), no pipeline: what the sink costs apart from the runtime feeding it.

Goal: trio_ingest >= 0.8x the plain pyarrow script (the faster of the two).

SQLite (200k rows; quick: 20k): ``sinks.SQLite(path, table)`` with its defaults
against plain sqlite3 (``json.dumps`` + ``executemany`` per 1000 rows, same pragmas).

Every contender starts from the same list of prebuilt ``Event`` objects and
does its own row building (JSON encoding, column extraction) inside the timed
region. Figures go to ``benchmarks/results/sinks_db.json``; the exit status is 1
when a contender failed (a skipped PostgreSQL is not a failure).

From the suite: ``from benchmarks.bench_sinks_db import run_all`` then
``figures = run_all(quick=cfg.quick, repeat=cfg.repeat)`` returns the same dict
that is written to the JSON file.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import trio

import trio_ingest as ti

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "sinks_db.json"
BATCH = 5_000
TABLE = "bench_sinks_db"
TABLE_DDL = (
    "CREATE TABLE {t} (id text PRIMARY KEY, key text, event_time timestamptz, "
    "payload jsonb, ingested_at timestamptz NOT NULL DEFAULT now())"
)
INSERT_SELECT = (
    "INSERT INTO {t} (id, key, event_time, payload) "
    "SELECT id, key, to_timestamp(event_time), payload::jsonb FROM pg_temp.bench_stage "
    'ORDER BY id COLLATE "C" ON CONFLICT (id) DO NOTHING'
)


def make_events(n: int) -> list[ti.Event]:
    """The input every contender writes: unique ids, a small JSON payload, a key on half."""
    t0 = 1_795_000_000.0
    return [
        ti.Event(
            id=f"ev-{i:08d}",
            payload={"seq": i, "value": i * 0.25, "name": f"sensor-{i % 97}", "ok": i % 5 != 0},
            key=f"k{i % 16}" if i % 2 else None,
            event_time=t0 + i / 1000,
        )
        for i in range(n)
    ]


# -- PostgreSQL contenders -------------------------------------------------------------------


def _fresh_table(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.execute(TABLE_DDL.format(t=TABLE))


def _count(dsn: str) -> int:
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()
        return int(row[0]) if row else 0


def pg_executemany(dsn: str, events: list[ti.Event], batch: int = BATCH) -> None:
    """One thread: executemany INSERT ... ON CONFLICT DO NOTHING, a transaction per batch."""
    import psycopg

    query = (
        f"INSERT INTO {TABLE} (id, key, event_time, payload) "
        "VALUES (%s, %s, to_timestamp(%s), %s::jsonb) ON CONFLICT (id) DO NOTHING"
    )
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    with psycopg.connect(dsn) as conn:
        for start in range(0, len(events), batch):
            rows = [
                (e.id, e.key, e.event_time, dumps(e.payload)) for e in events[start : start + batch]
            ]
            with conn.cursor() as cur:
                cur.executemany(query, rows)
            conn.commit()


def pg_hand_written(dsn: str, events: list[ti.Event]) -> None:
    """One thread: binary COPY into a temp staging table + INSERT ... ON CONFLICT, per 5000 rows."""
    import psycopg

    dumps = json.JSONEncoder(separators=(",", ":")).encode
    insert = INSERT_SELECT.format(t=TABLE)
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "CREATE TEMP TABLE bench_stage (id text, key text, event_time float8, payload text) "
            "ON COMMIT DELETE ROWS"
        )
        conn.commit()
        for start in range(0, len(events), BATCH):
            with conn.cursor() as cur:
                with cur.copy(
                    "COPY pg_temp.bench_stage (id, key, event_time, payload) "
                    "FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(["text", "text", "float8", "text"])
                    for e in events[start : start + BATCH]:
                        copy.write_row((e.id, e.key, e.event_time, dumps(e.payload)))
                cur.execute(insert)
            conn.commit()


def pg_trio_ingest_defaults(dsn: str, events: list[ti.Event]) -> None:
    """trio_ingest, every default: Pipeline(from_iterable(events), sink=Postgres(dsn, table))."""
    pipeline = ti.Pipeline(
        ti.sources.from_iterable(events), sink=ti.sinks.Postgres(dsn, TABLE, create_table=False)
    )
    report = trio.run(pipeline.run)
    if report.delivered != len(events):
        raise RuntimeError(f"trio_ingest delivered {report.delivered} of {len(events)}")


def pg_trio_ingest(dsn: str, events: list[ti.Event], workers: int = 2) -> None:
    """trio_ingest: from_iterable -> sinks.Postgres(workers=2, max_batch=5000), on Trio."""
    sink = ti.sinks.Postgres(dsn, TABLE, workers=workers, max_batch=BATCH, create_table=False)
    pipeline = ti.Pipeline(
        ti.sources.from_iterable(events), sink=sink, max_batch=BATCH, capacity=4 * BATCH
    )
    report = trio.run(pipeline.run)
    if report.delivered != len(events):
        raise RuntimeError(f"trio_ingest delivered {report.delivered} of {len(events)}")


# -- Parquet contenders ---------------------------------------------------------------------


def pq_plain(root: Path, events: list[ti.Event], file_rows: int) -> None:
    """Plain pyarrow: Table.from_pylist + pq.write_table per file of ``file_rows`` rows."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    root.mkdir(parents=True, exist_ok=True)
    for n, start in enumerate(range(0, len(events), file_rows)):
        records = [
            {"event_id": e.id, "event_key": e.key, "event_time": e.event_time, **e.payload}
            for e in events[start : start + file_rows]
        ]
        table = pa.Table.from_pylist(records)
        table = table.set_column(
            2,
            "event_time",
            pc.cast(pc.multiply(table.column("event_time"), 1_000_000), pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
        )
        pq.write_table(table, root / f"part-{n:05d}.parquet")


def pq_plain_columnar(root: Path, events: list[ti.Event], file_rows: int) -> None:
    """Plain pyarrow, the fast way: payloads converted as one struct array, then flattened."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    root.mkdir(parents=True, exist_ok=True)
    for n, start in enumerate(range(0, len(events), file_rows)):
        chunk = events[start : start + file_rows]
        payloads = pa.array([e.payload for e in chunk])
        times = pc.cast(
            pc.multiply(pa.array([e.event_time for e in chunk], pa.float64()), 1_000_000),
            pa.int64(),
        ).cast(pa.timestamp("us", tz="UTC"))
        columns = {
            "event_id": pa.array([e.id for e in chunk], pa.string()),
            "event_key": pa.array([e.key for e in chunk], pa.string()),
            "event_time": times,
        }
        for i, child in enumerate(payloads.flatten()):
            columns[payloads.type.field(i).name] = child
        pq.write_table(pa.table(columns), root / f"part-{n:05d}.parquet")


def pq_trio_ingest(root: Path, events: list[ti.Event], file_rows: int, fsync: bool) -> None:
    """trio_ingest: from_iterable -> sinks.Parquet(flush_every=file_rows), defaults, on Trio."""
    sink = ti.sinks.Parquet(root, flush_every=file_rows, flush_interval=3600, fsync=fsync)
    pipeline = ti.Pipeline(ti.sources.from_iterable(events), sink=sink)
    report = trio.run(pipeline.run)
    if report.delivered != len(events) or sink.rows_written != len(events):
        raise RuntimeError(f"trio_ingest wrote {sink.rows_written} of {len(events)}")


def pq_sink_only(root: Path, events: list[ti.Event], file_rows: int) -> None:
    """sinks.Parquet driven by hand (no pipeline): write_batch per 10,000 events, flush per file.

    What the sink itself costs, apart from the runtime that feeds it.
    """
    sink = ti.sinks.Parquet(root, flush_every=file_rows, flush_interval=3600)
    step = sink.max_batch or 10_000

    async def drive() -> None:
        await sink.open()
        try:
            held = 0
            for start in range(0, len(events), step):
                batch = events[start : start + step]
                await sink.write_batch(batch)
                held += len(batch)
                if held >= file_rows:
                    await sink.flush()
                    held = 0
            await sink.flush()
        finally:
            await sink.aclose()

    trio.run(drive)


def _rows_in(root: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.read_table(root).num_rows)


# -- SQLite contenders ----------------------------------------------------------------------

SQLITE_TABLE = "events"


def sqlite_plain(path: Path, events: list[ti.Event], batch: int = 1_000) -> None:
    """Plain sqlite3: json.dumps + executemany INSERT OR IGNORE, a transaction per 1000 rows.

    The same table, pragmas (WAL, synchronous=FULL) and columns as ``sinks.SQLite``.
    """
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL").fetchone()
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {SQLITE_TABLE} (id TEXT PRIMARY KEY NOT NULL, key, "
            "event_time REAL, payload TEXT, ingested_at REAL)"
        )
        insert = (
            f"INSERT OR IGNORE INTO {SQLITE_TABLE} (id, key, event_time, payload, ingested_at) "
            "VALUES (?, ?, ?, ?, ?)"
        )
        dumps = json.dumps
        for start in range(0, len(events), batch):
            now = time.time()
            rows = [
                (e.id, e.key, e.event_time, dumps(e.payload), now)
                for e in events[start : start + batch]
            ]
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(insert, rows)
            conn.execute("COMMIT")
    finally:
        conn.close()


def sqlite_trio_ingest(path: Path, events: list[ti.Event]) -> None:
    """trio_ingest: from_iterable -> sinks.SQLite(path, table) with default settings, on Trio."""
    pipeline = ti.Pipeline(
        ti.sources.from_iterable(events), sink=ti.sinks.SQLite(path, SQLITE_TABLE)
    )
    report = trio.run(pipeline.run)
    if report.delivered != len(events):
        raise RuntimeError(f"trio_ingest delivered {report.delivered} of {len(events)}")


def bench_sqlite(n: int, repeat: int) -> dict[str, Any]:
    """Rows/s into SQLite: sinks.SQLite with its defaults vs a plain sqlite3 script."""
    import sqlite3

    events = make_events(n)
    base = Path(tempfile.mkdtemp(prefix="bench_sinks_sqlite_"))
    path = base / "bench.sqlite"

    def setup() -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)

    def count() -> int:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            return int(conn.execute(f"SELECT count(*) FROM {SQLITE_TABLE}").fetchone()[0])

    try:
        results = _race(
            [
                (
                    "plain_sqlite3",
                    "sqlite3 json.dumps + executemany INSERT OR IGNORE per 1000 rows",
                    lambda: sqlite_plain(path, events),
                ),
                (
                    "trio_ingest",
                    "trio_ingest sinks.SQLite(path, table) (defaults)",
                    lambda: sqlite_trio_ingest(path, events),
                ),
            ],
            n, repeat, setup, count,
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return {
        "status": "ok",
        "rows": n,
        "contenders": results,
        "trio_ingest_vs_plain": _ratio(results["trio_ingest"], results["plain_sqlite3"]),
    }


# -- timing ---------------------------------------------------------------------------------


def _race(
    contenders: list[tuple[str, str, Callable[[], None]]],
    n: int,
    repeat: int,
    setup: Callable[[], None],
    check: Callable[[], int],
) -> dict[str, dict[str, Any]]:
    """Median of ``repeat`` timed runs of each contender, interleaved round by round.

    Interleaving (a, b, c, a, b, c, ...) spreads a busy machine's noise over
    every contender instead of penalising whichever ran during a burst.
    ``setup`` (untimed) runs before each run, ``check`` after it must count ``n``.
    """
    runs: dict[str, list[float]] = {key: [] for key, _, _ in contenders}
    errors: dict[str, str] = {}
    for _ in range(repeat):
        for key, label, call in contenders:
            if key in errors:
                continue
            try:
                setup()
                gc.collect()
                started = time.perf_counter()
                call()
                runs[key].append(time.perf_counter() - started)
                stored = check()
                if stored != n:
                    raise RuntimeError(f"{label}: {stored} rows stored, expected {n}")
            except Exception as exc:  # noqa: BLE001 -- a failed contender is reported, not fatal
                errors[key] = f"error: {type(exc).__name__}: {exc}"
    results = {}
    for key, label, _ in contenders:
        if key in errors:
            results[key] = {"label": label, "rows": n, "status": errors[key]}
            print(f"  {label:<62} {errors[key]}", flush=True)
            continue
        elapsed = statistics.median(runs[key])
        print(f"  {label:<62} {n / elapsed:>10,.0f} rows/s  (median of {len(runs[key])})")
        results[key] = {
            "label": label,
            "rows": n,
            "status": "ok",
            "elapsed_s": elapsed,
            "rows_per_s": n / elapsed,
            "runs_s": runs[key],
        }
    return results


def _ratio(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    if a.get("status") == "ok" and b.get("status") == "ok":
        return float(a["rows_per_s"] / b["rows_per_s"])
    return None


def _postgres_reachable(dsn: str) -> str | None:
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'trio-ingest[postgres]')"
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
    except psycopg.Error as exc:
        return f"PostgreSQL is not reachable: {exc}".splitlines()[0]
    return None if row else "no server version"


def bench_postgres(dsn: str, n: int, repeat: int) -> dict[str, Any]:
    """Rows/s into PostgreSQL: trio_ingest vs executemany and vs the hand-written COPY script."""
    skipped = _postgres_reachable(dsn)
    if skipped is not None:
        print(f"  skipped: {skipped}")
        return {"status": f"skipped: {skipped}", "rows": n}
    events = make_events(n)
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute("SHOW server_version").fetchone()

    def setup() -> None:
        _fresh_table(dsn)

    def count() -> int:
        return _count(dsn)

    results = _race(
        [
            (
                "executemany",
                "psycopg executemany INSERT ON CONFLICT (1 thread)",
                lambda: pg_executemany(dsn, events),
            ),
            (
                "executemany_1000",
                "psycopg executemany INSERT ON CONFLICT per 1000 rows (1 thread)",
                lambda: pg_executemany(dsn, events, 1_000),
            ),
            (
                "hand_written",
                "psycopg binary COPY -> staging + INSERT ON CONFLICT (1 thread)",
                lambda: pg_hand_written(dsn, events),
            ),
            (
                "trio_ingest",
                "trio_ingest sinks.Postgres (workers=2, max_batch=5000)",
                lambda: pg_trio_ingest(dsn, events),
            ),
            (
                "trio_ingest_defaults",
                "trio_ingest sinks.Postgres(dsn, table) (defaults)",
                lambda: pg_trio_ingest_defaults(dsn, events),
            ),
            (
                "trio_ingest_1_worker",
                "trio_ingest sinks.Postgres (workers=1, max_batch=5000)",
                lambda: pg_trio_ingest(dsn, events, workers=1),
            ),
        ],
        n, repeat, setup, count,
    )
    import psycopg as _pg

    with _pg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
    ours = results["trio_ingest"]
    vs_many = _ratio(ours, results["executemany"])
    vs_hand = _ratio(ours, results["hand_written"])
    defaults_vs_1000 = _ratio(results["trio_ingest_defaults"], results["executemany_1000"])
    return {
        "status": "ok",
        "rows": n,
        "batch": BATCH,
        "server_version": row[0] if row else None,
        "contenders": results,
        "trio_ingest_vs_executemany": vs_many,
        "trio_ingest_vs_hand_written": vs_hand,
        "goal_2x_executemany": None if vs_many is None else vs_many >= 2.0,
        "goal_0_8x_hand_written": None if vs_hand is None else vs_hand >= 0.8,
        "trio_ingest_defaults_vs_executemany_1000": defaults_vs_1000,
        "goal_defaults_2x_executemany_1000": (
            None if defaults_vs_1000 is None else defaults_vs_1000 >= 2.0
        ),
    }


def bench_parquet(n: int, file_rows: int, repeat: int) -> dict[str, Any]:
    """Rows/s into Parquet files: trio_ingest sinks.Parquet vs a plain pyarrow writer."""
    events = make_events(n)
    base = Path(tempfile.mkdtemp(prefix="bench_sinks_db_"))
    root = base / "lake"

    def setup() -> None:
        shutil.rmtree(root, ignore_errors=True)

    def count() -> int:
        return _rows_in(root)

    try:
        results = _race(
            [
                (
                    "plain_pyarrow",
                    f"pyarrow Table.from_pylist + pq.write_table per {file_rows} rows",
                    lambda: pq_plain(root, events, file_rows),
                ),
                (
                    "plain_pyarrow_columnar",
                    f"pyarrow struct array + pq.write_table per {file_rows} rows",
                    lambda: pq_plain_columnar(root, events, file_rows),
                ),
                (
                    "trio_ingest",
                    f"trio_ingest sinks.Parquet (flush_every={file_rows}, defaults, fsync)",
                    lambda: pq_trio_ingest(root, events, file_rows, True),
                ),
                (
                    "sink_only",
                    f"sinks.Parquet alone, no pipeline (flush_every={file_rows}, fsync)",
                    lambda: pq_sink_only(root, events, file_rows),
                ),
                (
                    "trio_ingest_no_fsync",
                    f"trio_ingest sinks.Parquet (flush_every={file_rows}, defaults, no fsync)",
                    lambda: pq_trio_ingest(root, events, file_rows, False),
                ),
            ],
            n, repeat, setup, count,
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    # held against the faster of the two plain scripts
    plain = max(
        (results["plain_pyarrow"], results["plain_pyarrow_columnar"]),
        key=lambda r: r.get("rows_per_s", 0.0),
    )
    ratio = _ratio(results["trio_ingest"], plain)
    return {
        "status": "ok",
        "rows": n,
        "file_rows": file_rows,
        "contenders": results,
        "baseline": plain["label"],
        "trio_ingest_vs_plain": ratio,
        "trio_ingest_no_fsync_vs_plain": _ratio(results["trio_ingest_no_fsync"], plain),
        "sink_only_vs_plain": _ratio(results["sink_only"], plain),
        "trio_ingest_vs_from_pylist": _ratio(results["trio_ingest"], results["plain_pyarrow"]),
        "goal_0_8x_plain": None if ratio is None else ratio >= 0.8,
    }


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in ("trio", "anyio", "psycopg", "psycopg-binary", "psycopg-pool", "pyarrow"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def run_all(
    *, quick: bool = False, repeat: int | None = None, dsn: str | None = None
) -> dict[str, Any]:
    """Run the three benchmarks; return the figures (what ``main`` writes to the JSON file)."""
    n = 20_000 if quick else 200_000
    file_rows = 10_000 if quick else 100_000
    repeat = repeat or (1 if quick else 3)
    dsn = dsn or os.environ.get("TRIO_INGEST_PG_DSN") or DEFAULT_DSN
    started = datetime.datetime.now(datetime.UTC)
    print(f"[postgres] {n} rows, batches of {BATCH}, {repeat} round(s)", flush=True)
    postgres = bench_postgres(dsn, n, repeat)
    print(f"[parquet] {n} rows, files of {file_rows}, {repeat} round(s)", flush=True)
    parquet = bench_parquet(n, file_rows, repeat)
    print(f"[sqlite] {n} rows, {repeat} round(s)", flush=True)
    sqlite = bench_sqlite(n, repeat)
    return {
        "benchmark": "sinks_db",
        "measures": __doc__.splitlines()[0] if __doc__ else "",
        "mode": "quick" if quick else "full",
        "repeat": repeat,
        "started": started.isoformat(timespec="seconds"),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "python": platform.python_version(),
        "packages": _versions(),
        "postgres": postgres,
        "parquet": parquet,
        "sqlite": sqlite,
    }


def _failed(figures: dict[str, Any]) -> list[str]:
    failed = []
    for part in ("postgres", "parquet", "sqlite"):
        for name, result in figures[part].get("contenders", {}).items():
            if str(result.get("status", "")).startswith("error"):
                failed.append(f"{part}.{name}: {result['status']}")
    return failed


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run, write the JSON file; 1 when a contender failed."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_sinks_db",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="20k rows, 1 run (smoke mode)")
    parser.add_argument("--repeat", type=int, help="timed runs per contender (3; quick 1)")
    parser.add_argument("--dsn", help=f"PostgreSQL DSN (TRIO_INGEST_PG_DSN or {DEFAULT_DSN})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output ({DEFAULT_OUT})")
    args = parser.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        parser.error(f"--repeat must be >= 1: {args.repeat}")
    figures = run_all(quick=args.quick, repeat=args.repeat, dsn=args.dsn)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    pg, pq_ = figures["postgres"], figures["parquet"]
    if pg.get("status") == "ok":
        print(
            f"postgres: trio_ingest = {pg['trio_ingest_vs_executemany']:.2f}x executemany "
            f"(goal 2x), {pg['trio_ingest_vs_hand_written']:.2f}x hand-written (goal 0.8x); "
            f"defaults = {pg['trio_ingest_defaults_vs_executemany_1000']:.2f}x executemany "
            "per 1000 rows (goal 2x)"
        )
    if pq_.get("trio_ingest_vs_plain") is not None:
        ratio = pq_["trio_ingest_vs_plain"]
        print(
            f"parquet: trio_ingest = {ratio:.2f}x the faster plain pyarrow script (goal 0.8x); "
            f"the sink alone {pq_['sink_only_vs_plain']:.2f}x"
        )
    sq = figures["sqlite"]
    if sq.get("trio_ingest_vs_plain") is not None:
        print(f"sqlite: trio_ingest = {sq['trio_ingest_vs_plain']:.2f}x plain sqlite3")
    print(f"wrote {args.out}")
    failed = _failed(figures)
    for line in failed:
        print(f"error: {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
