"""sinks.Postgres against the real server: COPY + ON CONFLICT, lost connections, dead letters."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.to_thread
import psycopg
import pytest

import trio_ingest as ti
from trio_ingest.sinks._postgres import ENV_DSN
from trio_ingest.testing import assert_accounted

pytestmark = pytest.mark.anyio

FAST_RETRY = ti.RetryPolicy(max_attempts=10, backoff=ti.ConstantBackoff(0.05))


def sql(dsn: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement on a fresh autocommit connection (blocking: test setup only)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


async def asql(dsn: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    return await anyio.to_thread.run_sync(sql, dsn, query, params)


async def count_rows(dsn: str, table: str) -> list[tuple[Any, ...]]:
    """(rows, distinct ids) of ``table``."""
    return await asql(dsn, f"SELECT count(*), count(DISTINCT id) FROM {table}")


@pytest.fixture
def table(postgres_dsn: str) -> Iterator[str]:
    """A unique table name, dropped (with anything hanging off it) after the test."""
    name = f"ti_test_{uuid.uuid4().hex[:12]}"
    yield name
    sql(postgres_dsn, f"DROP TABLE IF EXISTS {name} CASCADE")
    sql(postgres_dsn, f"DROP FUNCTION IF EXISTS {name}_slow() CASCADE")


def events_with_duplicates(n: int, fraction: float, seed: int) -> list[ti.Event]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ident = i if i == 0 or rng.random() >= fraction else rng.randrange(i)
        out.append(ti.Event(id=f"e{ident}", payload={"seq": i, "value": rng.random()}))
    return out


# -- configuration ---------------------------------------------------------------------


def test_missing_dsn_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_DSN, raising=False)
    with pytest.raises(ti.ConfigError, match=r"'dsn' is required.*TRIO_INGEST_PG_DSN"):
        ti.sinks.Postgres(table="t")


def test_dsn_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_DSN, "postgresql://example/db")
    sink = ti.sinks.Postgres(table="t")
    assert sink._dsn == "postgresql://example/db"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"table": None}, "'table'"),
        ({"table": "a.b.c"}, "'table'"),
        ({"table": "t", "columns": {"id": "text"}}, "'columns' cannot map 'id'"),
        ({"table": "t", "columns": {"x": "int; DROP TABLE t"}}, "'columns' type of 'x'"),
        ({"table": "t", "columns": ["x"]}, "'columns'"),
        ({"table": "t", "pool_size": 0}, "'pool_size'"),
        ({"table": "t", "copy_format": "csv"}, "'copy_format'"),
        ({"table": "t", "workers": 0}, "'workers'"),
    ],
)
def test_bad_options_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ti.ConfigError, match=field):
        ti.sinks.Postgres("postgresql://example/db", **kwargs)


# -- idempotent bulk writes ------------------------------------------------------------


async def test_100k_events_with_10_percent_duplicates_land_once(
    postgres_dsn: str, table: str
) -> None:
    events = events_with_duplicates(100_000, 0.10, seed=5)
    unique = {e.id for e in events}
    assert 85_000 < len(unique) < 95_000
    sink = ti.sinks.Postgres(postgres_dsn, table, workers=2, max_batch=5_000)
    report = await ti.Pipeline(
        ti.sources.from_iterable(events), sink=sink, max_batch=5_000, capacity=20_000
    ).run()
    assert_accounted(report)
    assert report.delivered == 100_000 and report.dead_lettered == 0
    [(rows, distinct)] = await count_rows(postgres_dsn, table)
    assert rows == distinct == len(unique)
    assert sink.rows_inserted == len(unique)
    assert sink.duplicates_skipped == 100_000 - len(unique)

    # a second run (a replay) adds nothing
    again = ti.sinks.Postgres(postgres_dsn, table, max_batch=5_000)
    await ti.Pipeline(ti.sources.from_iterable(events[:20_000]), sink=again, max_batch=5_000).run()
    assert again.rows_inserted == 0 and again.duplicates_skipped == 20_000
    [(rows,)] = await asql(postgres_dsn, f"SELECT count(*) FROM {table}")
    assert rows == len(unique)


async def test_default_columns_round_trip(postgres_dsn: str, table: str) -> None:
    events = [
        ti.Event(
            id="a", payload={"x": [1, "two"], "s": "é\n\\"}, key="k1", event_time=1_700_000_000.25
        ),
        ti.Event(id="b", payload=7, key=42, event_time=1.5),
        ti.Event(id="c", payload=None),
    ]
    await ti.Pipeline(
        ti.sources.from_iterable(events), sink=ti.sinks.Postgres(postgres_dsn, table)
    ).run()
    rows = await asql(
        postgres_dsn,
        f"SELECT id, key, extract(epoch FROM event_time)::float8, payload, "
        f"ingested_at IS NOT NULL FROM {table} ORDER BY id",
    )
    assert rows[0] == ("a", "k1", 1_700_000_000.25, {"x": [1, "two"], "s": "é\n\\"}, True)
    assert rows[1] == ("b", "42", 1.5, 7, True)
    assert rows[2][0] == "c" and rows[2][3] is None


@pytest.mark.parametrize("copy_format", ["binary", "text"])
async def test_typed_column_mapping(postgres_dsn: str, table: str, copy_format: str) -> None:
    columns = {
        "temperature": "double precision",
        "city": "text",
        "count": "integer",
        "tags": "jsonb",
        "seen": "timestamptz",
        "ok": "boolean",
    }
    events = [
        ti.Event(
            id="1",
            payload={
                "temperature": 21.5,
                "city": "Oslo",
                "count": 3,
                "tags": {"a": [1]},
                "seen": "2026-01-02T03:04:05+00:00",
                "ok": True,
            },
        ),
        ti.Event(id="2", payload={"temperature": -3, "city": "Tromsø"}),  # missing -> NULL
    ]
    sink = ti.sinks.Postgres(
        postgres_dsn, table, columns=columns, store_payload=False, copy_format=copy_format
    )
    await ti.Pipeline(ti.sources.from_iterable(events), sink=sink).run()
    types = dict(
        await asql(
            postgres_dsn,
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = %s",
            (table,),
        )
    )
    assert "payload" not in types
    assert types["temperature"] == "double precision" and types["count"] == "integer"
    rows = await asql(
        postgres_dsn,
        f"SELECT id, temperature, city, count, tags, extract(epoch FROM seen)::bigint, ok "
        f"FROM {table} ORDER BY id",
    )
    assert rows == [
        ("1", 21.5, "Oslo", 3, {"a": [1]}, 1767323045, True),
        ("2", -3.0, "Tromsø", None, None, None, None),
    ]


async def test_create_table_adds_missing_mapped_columns(postgres_dsn: str, table: str) -> None:
    first = [ti.Event(id="1", payload={"t": 1.0})]
    sink = ti.sinks.Postgres(postgres_dsn, table)
    await ti.Pipeline(ti.sources.from_iterable(first), sink=sink).run()
    second = [ti.Event(id="2", payload={"t": 2.5})]
    sink = ti.sinks.Postgres(postgres_dsn, table, columns={"t": "float8"})
    await ti.Pipeline(ti.sources.from_iterable(second), sink=sink).run()
    rows = await asql(postgres_dsn, f"SELECT id, t FROM {table} ORDER BY id")
    assert rows == [("1", None), ("2", 2.5)]


# -- bad configuration fails at open, before data moves -----------------------------------


async def _run_expecting_config_error(sink: ti.sinks.Postgres) -> tuple[ti.ConfigError, Any]:
    source = ti.sources.from_iterable([ti.Event(id=str(i), payload={}) for i in range(10)])
    with pytest.raises(ti.ConfigError) as info:
        await ti.Pipeline(source, sink=sink).run()
    return info.value, source


@pytest.mark.parametrize(
    ("ddl", "message"),
    [
        (
            "CREATE TABLE {t} (id text PRIMARY KEY, key text, event_time float8, payload jsonb)",
            "column 'event_time' is double precision, expected timestamp with time zone",
        ),
        (
            "CREATE TABLE {t} (id text PRIMARY KEY, key text, event_time timestamptz)",
            "column 'payload' is missing",
        ),
        (
            "CREATE TABLE {t} (id text, key text, event_time timestamptz, payload jsonb)",
            "no primary key or unique index on \\(id\\)",
        ),
        (
            "CREATE TABLE {t} (id text PRIMARY KEY, key text, event_time timestamptz, "
            "payload jsonb, owner text NOT NULL)",
            "column 'owner' is NOT NULL without a default",
        ),
    ],
)
async def test_mismatching_table_is_a_config_error_before_data_moves(
    postgres_dsn: str, table: str, ddl: str, message: str
) -> None:
    await asql(postgres_dsn, ddl.format(t=table))
    sink = ti.sinks.Postgres(postgres_dsn, table, create_table=False)
    error, source = await _run_expecting_config_error(sink)
    assert f"table {table!r} does not match the sink" in str(error)
    assert error.args and message.replace("\\", "") in str(error)
    assert source._position == 0  # the source never read
    [(rows,)] = await asql(postgres_dsn, f"SELECT count(*) FROM {table}")
    assert rows == 0


async def test_missing_table_without_create_table(postgres_dsn: str, table: str) -> None:
    sink = ti.sinks.Postgres(postgres_dsn, table, create_table=False)
    error, source = await _run_expecting_config_error(sink)
    assert f"table {table!r} does not exist" in str(error)
    assert source._position == 0
    assert await asql(postgres_dsn, "SELECT to_regclass(%s)::text", (table,)) == [(None,)]


async def test_unknown_column_type_is_a_config_error(postgres_dsn: str, table: str) -> None:
    sink = ti.sinks.Postgres(postgres_dsn, table, columns={"x": "no_such_type"})
    error, _ = await _run_expecting_config_error(sink)
    assert "'columns'" in str(error) and "no_such_type" in str(error)


async def test_existing_matching_table_with_type_aliases_is_accepted(
    postgres_dsn: str, table: str
) -> None:
    await asql(
        postgres_dsn,
        f"CREATE TABLE {table} (id text PRIMARY KEY, key text, event_time timestamptz, "
        f"payload jsonb, t double precision, extra text)",
    )
    sink = ti.sinks.Postgres(postgres_dsn, table, columns={"t": "float8"}, create_table=False)
    await ti.Pipeline(
        ti.sources.from_iterable([ti.Event(id="1", payload={"t": 1})]), sink=sink
    ).run()
    assert await asql(postgres_dsn, f"SELECT id, t, extra FROM {table}") == [("1", 1.0, None)]


# -- errors: permanent ones dead-letter only the bad rows, transient ones retry ----------


async def test_rows_the_server_rejects_are_dead_lettered_with_its_message(
    postgres_dsn: str, table: str
) -> None:
    await asql(
        postgres_dsn,
        f"CREATE TABLE {table} (id text PRIMARY KEY, key text, event_time timestamptz, "
        f"payload jsonb, temperature double precision CHECK (temperature < 100))",
    )
    events = [ti.Event(id=f"r{i}", payload={"temperature": i % 90}) for i in range(1_000)]
    events[17] = ti.Event(id="hot", payload={"temperature": 150})
    events[500] = ti.Event(id="text", payload={"temperature": "warm"})
    events[901] = ti.Event(id="nan-json", payload={"temperature": 1, "bad": float("nan")})
    events[902] = ti.Event(id="nul", payload={"temperature": 1}, key="a\x00b")
    bad = {"hot", "text", "nan-json", "nul"}
    sink = ti.sinks.Postgres(
        postgres_dsn, table, columns={"temperature": "double precision"}, create_table=False,
        max_batch=256,
    )
    dead = ti.sinks.Memory()
    report = await ti.Pipeline(ti.sources.from_iterable(events), sink=sink, dead_letter=dead).run()
    assert_accounted(report)
    assert report.delivered == 996 and report.dead_lettered == 4
    letters = {e.id: e.payload for e in dead.events}
    assert set(letters) == bad
    assert 'violates check constraint "' in letters["hot"].error
    assert "invalid input syntax for type double precision" in letters["text"].error
    assert "field 'bad' is nan (JSON has no NaN or infinity)" in letters["nan-json"].error
    assert "0x00" in letters["nul"].error
    assert letters["hot"].error_type == "trio_ingest._errors.PermanentError"
    assert all(lt.node == "postgres" for lt in letters.values())
    [(rows,)] = await asql(postgres_dsn, f"SELECT count(*) FROM {table}")
    assert rows == 996
    stored = {r[0] for r in await asql(postgres_dsn, f"SELECT id FROM {table}")}
    assert stored == {e.id for e in events} - bad


async def test_as_the_dead_letter_sink_it_stores_the_records(
    postgres_dsn: str, table: str
) -> None:
    events = [ti.Event(id=str(i), payload={"n": i}) for i in range(10)]
    events[7] = ti.Event(id="7", payload={"n": 7}, key="nul\x00key")
    dead_table = f"{table}_dead"
    sink = ti.sinks.Postgres(postgres_dsn, table, max_batch=4)
    dead = ti.sinks.Postgres(postgres_dsn, dead_table, name="dead_pg")
    try:
        report = await ti.Pipeline(
            ti.sources.from_iterable(events),
            ti.map(lambda p: p if p["n"] != 3 else {"n": float("inf")}),
            sink=sink,
            dead_letter=dead,
        ).run()
        assert report.delivered == 8 and report.dead_lettered == 2
        rows = await asql(
            postgres_dsn, f"SELECT id, key, payload FROM {dead_table} ORDER BY id"
        )
    finally:
        await asql(postgres_dsn, f"DROP TABLE IF EXISTS {dead_table}")
    # the records are stored although the events hold what PostgreSQL cannot take
    [(inf_id, _, inf_letter), (nul_id, nul_key, nul_letter)] = rows
    assert (inf_id, nul_id) == ("3", "7")
    assert inf_letter["node"] == "postgres" and inf_letter["attempts"] == 1
    assert "field 'n' is inf (JSON has no NaN or infinity)" in inf_letter["error"]
    assert inf_letter["event"]["payload"] == {"n": "inf"}
    assert "0x00" in nul_letter["error"] and nul_key == "nul\\x00key"
    assert nul_letter["event"]["key"] == "nul\\x00key"


async def test_killed_backend_connections_are_retried_and_nothing_doubles(
    postgres_dsn: str, table: str
) -> None:
    app = f"ti_kill_{uuid.uuid4().hex[:8]}"
    events = [ti.Event(id=f"k{i}", payload={"i": i, "pad": "x" * 200}) for i in range(60_000)]
    sink = ti.sinks.Postgres(
        postgres_dsn, table, workers=2, max_batch=2_000, application_name=app, retry=FAST_RETRY
    )
    pipeline = ti.Pipeline(
        ti.sources.from_iterable(events), sink=sink, max_batch=2_000, capacity=8_000
    )
    kills = 0

    async def killer() -> None:
        nonlocal kills
        # once data flows, kill backends mid-statement until a write has had to retry
        while pipeline.report().delivered == 0:  # noqa: ASYNC110 -- polling a counter
            await anyio.sleep(0.001)
        while pipeline.report().retries == 0:
            killed = await asql(
                postgres_dsn,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s AND state = 'active'",
                (app,),
            )
            kills += sum(1 for (ok,) in killed if ok)
            await anyio.sleep(0.002)

    async with anyio.create_task_group() as tg:
        tg.start_soon(killer)
        report = await pipeline.run()
        tg.cancel_scope.cancel()
    assert kills >= 1 and report.retries >= 1
    assert_accounted(report)
    assert report.delivered == 60_000 and report.dead_lettered == 0
    [(rows, distinct)] = await count_rows(postgres_dsn, table)
    assert rows == distinct == 60_000


async def test_cancel_during_a_write_commits_or_rolls_back_whole_batches(
    postgres_dsn: str, table: str
) -> None:
    # a statement trigger makes each batch's INSERT take 0.4 s: time to cancel mid-write
    await asql(
        postgres_dsn,
        f"CREATE TABLE {table} (id text PRIMARY KEY, key text, event_time timestamptz, "
        f"payload jsonb, ingested_at timestamptz DEFAULT now())",
    )
    await asql(
        postgres_dsn,
        f"CREATE FUNCTION {table}_slow() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN PERFORM pg_sleep(0.4); RETURN NULL; END $$",
    )
    await asql(
        postgres_dsn,
        f"CREATE TRIGGER slow AFTER INSERT ON {table} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {table}_slow()",
    )
    app = f"ti_cancel_{uuid.uuid4().hex[:8]}"
    events = [ti.Event(id=f"c{i:05d}", payload={"i": i}) for i in range(5_000)]
    source = ti.sources.from_iterable(events)
    # one worker: one batch in flight at a time, so "the second batch" is well defined
    sink = ti.sinks.Postgres(
        postgres_dsn, table, max_batch=1_000, workers=1, application_name=app
    )
    pipeline = ti.Pipeline(source, sink=sink, max_batch=1_000, capacity=1_000)

    async with anyio.create_task_group() as tg:
        tg.start_soon(pipeline.run)
        # wait until the second batch's transaction is inside the slow statement
        while True:
            inside = await asql(
                postgres_dsn,
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name = %s AND wait_event = 'PgSleep'",
                (app,),
            )
            if inside[0][0] and sink.rows_inserted == 1_000:
                break
            await anyio.sleep(0.01)
        tg.cancel_scope.cancel()

    # the cancel abandoned the write's thread (stop() stays bounded): its transaction
    # finishes on its own, whole; wait for the server to be done with it
    active = (
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND state = 'active'"
    )
    while (await asql(postgres_dsn, active, (app,)))[0][0]:  # noqa: ASYNC110 -- polling
        await anyio.sleep(0.01)
    stored = {r[0] for r in await asql(postgres_dsn, f"SELECT id FROM {table}")}
    blocks = [{e.id for e in events[i : i + 1_000]} for i in range(0, 5_000, 1_000)]
    for block in blocks:
        assert block <= stored or not (block & stored), "a batch landed in part"
    # the batch in flight committed (2 batches stored), but it was never acknowledged,
    # so the source did not commit past it
    assert len(stored) == 2_000
    assert source.committed == 1_000

    # a rerun from the committed offset delivers the rest; the redelivered batch is a no-op
    await asql(postgres_dsn, f"DROP TRIGGER slow ON {table}")
    rerun = ti.sinks.Postgres(postgres_dsn, table, max_batch=1_000)
    report = await ti.Pipeline(
        ti.sources.from_iterable(events[source.committed :]), sink=rerun, max_batch=1_000
    ).run()
    assert report.delivered == 4_000
    assert rerun.rows_inserted == 3_000 and rerun.duplicates_skipped == 1_000
    [(rows, distinct)] = await count_rows(postgres_dsn, table)
    assert rows == distinct == 5_000


async def test_unreachable_server_fails_at_open(table: str) -> None:
    sink = ti.sinks.Postgres("postgresql://postgres@127.0.0.1:1/test", table, connect_timeout=2)
    with pytest.raises(ti.SinkError, match="cannot connect to PostgreSQL"):
        await ti.Pipeline(ti.sources.from_iterable([1]), sink=sink).run()


async def test_aclose_is_idempotent_and_write_after_close_fails(
    postgres_dsn: str, table: str
) -> None:
    sink = ti.sinks.Postgres(postgres_dsn, table)
    await sink.open()
    await sink.write_batch([ti.Event(id="1", payload={})])
    await sink.aclose()
    await sink.aclose()
    with pytest.raises(ti.SinkError, match="not open"):
        await sink.write_batch([ti.Event(id="2", payload={})])
