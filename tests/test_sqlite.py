"""The SQLite sink: idempotent batches, table creation, errors that fail early or retry."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import anyio
import pytest

import trio_ingest as ti
from trio_ingest.sinks._sqlite import COLUMNS

pytestmark = pytest.mark.anyio


def rows(db: Path, table: str = "events") -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(f'SELECT id, key, event_time, payload FROM "{table}" '
                            "ORDER BY id").fetchall()
    finally:
        conn.close()


async def test_creates_the_table_and_writes_every_column(tmp_path: Path) -> None:
    db = tmp_path / "out.sqlite"
    sink = ti.sinks.SQLite(db, "events")
    events = [ti.Event(id="a", payload={"n": 1, "s": "é"}, key="k1", event_time=10.5),
              ti.Event(id="b", payload=[1, 2], key=7, event_time=11.0),
              ti.Event(id="c", payload=None, key=("x", 1), event_time=12.0)]
    await sink.open()
    try:
        await sink.write_batch(events)
    finally:
        await sink.aclose()
    await sink.aclose()  # idempotent
    # compact UTF-8 JSON (orjson), the same encoder as every sink
    assert rows(db) == [("a", "k1", 10.5, '{"n":1,"s":"é"}'),
                        ("b", 7, 11.0, "[1,2]"),
                        ("c", '["x",1]', 12.0, "null")]
    conn = sqlite3.connect(db)
    try:
        columns = [r[1] for r in conn.execute('PRAGMA table_info("events")')]
        assert tuple(columns) == COLUMNS
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        ingested = conn.execute("SELECT min(ingested_at) FROM events").fetchone()[0]
        assert ingested > 1_600_000_000
    finally:
        conn.close()
    assert sink.inserted == 3


async def test_duplicate_ids_make_one_row_each(tmp_path: Path) -> None:
    """Within a batch, across batches and across runs: an id is stored once."""
    db = tmp_path / "out.sqlite"
    sink = ti.sinks.SQLite(db, "events")
    first = [ti.Event(id=str(i % 5), payload={"v": i}) for i in range(20)]
    await sink.open()
    try:
        await sink.write_batch(first)
        await sink.write_batch(first[:7])
    finally:
        await sink.aclose()
    assert [r[0] for r in rows(db)] == ["0", "1", "2", "3", "4"]
    assert [json.loads(str(r[3]))["v"] for r in rows(db)] == [0, 1, 2, 3, 4]  # first write wins
    assert sink.inserted == 5
    # a second run (a redelivery after a crash) adds nothing either
    report = await ti.Pipeline(ti.sources.from_iterable(first),
                               sink=ti.sinks.SQLite(db, "events")).run()
    assert report.delivered == 20
    assert len(rows(db)) == 5


async def test_through_a_pipeline_with_duplicates(tmp_path: Path) -> None:
    db = tmp_path / "out.sqlite"
    source = ti.sources.synthetic(3000, duplicates=0.2, seed=3)
    sink = ti.sinks.SQLite(db, "synth", max_batch=500, workers=3)
    report = await ti.Pipeline(source, sink=sink).run()
    ti.testing.assert_accounted(report)
    assert report.delivered == 3000
    stored = rows(db, "synth")
    assert len(stored) == sink.inserted < 3000
    assert len({r[0] for r in stored}) == len(stored)


async def test_unwritable_path_fails_at_open(tmp_path: Path) -> None:
    with pytest.raises(ti.SinkError, match=r"cannot open SQLite database .*unable to open"):
        await ti.Pipeline(ti.sources.from_iterable([1]),
                          sink=ti.sinks.SQLite(tmp_path / "no" / "such" / "dir.db", "t")).run()
    not_a_db = tmp_path / "text.db"
    not_a_db.write_text("hello, I am not a database " * 100)
    with pytest.raises(ti.SinkError, match="not a database"):
        await ti.Pipeline(ti.sources.from_iterable([1]),
                          sink=ti.sinks.SQLite(not_a_db, "t")).run()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files")
async def test_read_only_database_fails_at_open(tmp_path: Path) -> None:
    db = tmp_path / "ro.db"
    sqlite3.connect(db).close()
    db.chmod(0o444)
    with pytest.raises(ti.SinkError, match="readonly"):
        await ti.Pipeline(ti.sources.from_iterable([1]), sink=ti.sinks.SQLite(db, "t")).run()


async def test_missing_or_foreign_table(tmp_path: Path) -> None:
    db = tmp_path / "out.sqlite"
    with pytest.raises(ti.SinkError, match=r"table 'nope' does not exist .*\(create=False\)"):
        await ti.Pipeline(ti.sources.from_iterable([1]),
                          sink=ti.sinks.SQLite(db, "nope", create=False)).run()
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE other (id TEXT PRIMARY KEY, body TEXT)")
    conn.close()
    with pytest.raises(ti.SinkError, match=r"lacks the column.*key, event_time, payload"):
        await ti.Pipeline(ti.sources.from_iterable([1]),
                          sink=ti.sinks.SQLite(db, "other")).run()


def test_bad_arguments_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ti.ConfigError, match="'table' must be letters, digits and '_': 'a; b'"):
        ti.sinks.SQLite(tmp_path / "x.db", "a; b")
    with pytest.raises(ti.ConfigError, match="'synchronous' must be one of"):
        ti.sinks.SQLite(tmp_path / "x.db", "t", synchronous="SOMETIMES")
    with pytest.raises(ti.ConfigError, match="'workers' must be >= 1: 0"):
        ti.sinks.SQLite(tmp_path / "x.db", "t", workers=0)


async def test_locked_database_is_a_transient_error(tmp_path: Path) -> None:
    db = tmp_path / "out.sqlite"
    sink = ti.sinks.SQLite(db, "events", busy_timeout=0.05)
    await sink.open()
    blocker = sqlite3.connect(db, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # holds the write lock
        with pytest.raises(ti.TransientError, match="database is locked"):
            await sink.write_batch([ti.Event(id="a", payload=1)])
        blocker.execute("ROLLBACK")
        await sink.write_batch([ti.Event(id="a", payload=1)])  # the connection still works
    finally:
        blocker.close()
        await sink.aclose()
    assert [r[0] for r in rows(db)] == ["a"]


async def test_a_lock_that_clears_is_retried_and_nothing_is_lost(tmp_path: Path) -> None:
    db = tmp_path / "out.sqlite"
    sink = ti.sinks.SQLite(db, "events", busy_timeout=0.01)
    await sink.open()  # creates the table before the lock is taken
    await sink.aclose()
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    policy = ti.RetryPolicy(max_attempts=50, backoff=ti.ConstantBackoff(0.02))
    pipeline = ti.Pipeline(ti.sources.from_iterable(range(100)), sink=sink, retry=policy)

    async def release() -> None:
        await anyio.sleep(0.2)
        blocker.execute("ROLLBACK")

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(release)
            report = await pipeline.run()
    finally:
        blocker.close()
    assert report.retries > 0
    assert report.delivered == 100
    assert len(rows(db)) == 100


async def test_a_payload_that_is_not_json_dead_letters_only_its_event(tmp_path: Path) -> None:
    db = tmp_path / "out.sqlite"
    events = [ti.Event(id=str(i), payload={"n": i}) for i in range(50)]
    events[17] = ti.Event(id="17", payload={"n": {1, 2}})
    events[33] = ti.Event(id="33", payload={"n": float("nan")})
    dead = ti.sinks.Memory()
    report = await ti.Pipeline(ti.sources.from_iterable(events),
                               sink=ti.sinks.SQLite(db, "events"), dead_letter=dead).run()
    ti.testing.assert_accounted(report)
    assert report.delivered == 48
    assert sorted(e.payload.event.id for e in dead.events) == ["17", "33"]
    assert "payload of event '17' is not JSON-serialisable" in dead.events[0].payload.error
    assert len(rows(db)) == 48


async def test_memory_database(tmp_path: Path) -> None:
    sink = ti.sinks.SQLite(":memory:", "events")
    report = await ti.Pipeline(ti.sources.from_iterable(range(10)), sink=sink).run()
    assert report.delivered == 10
    assert sink.inserted == 10
