"""What every built-in sink shares: one JSON encoder, dead letters stored, columns read.

- NaN and infinity are a data error in every sink that writes JSON (dead-lettered,
  the reason naming the field), never a bare ``NaN`` nor a silent ``null``;
- every built-in sink works as the dead-letter sink, storing each record's dict form,
  even when the failed event holds what JSON cannot;
- ``sinks.columns()`` hands sinks parallel lists, from events or from a batch that
  has them already.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import psycopg
import pyarrow.parquet as pq
import pytest
from redis_factory import redis_command

import trio_ingest as ti
from trio_ingest import _json
from trio_ingest.sinks import Columns, columns

pytestmark = pytest.mark.anyio

NAN_REASON = "is nan (JSON has no NaN or infinity)"


# -- the encoder ---------------------------------------------------------------------------


def test_plain_values_encode_compactly_as_utf8() -> None:
    assert _json.dumps({"a": [1, 2.5, None, True], "é": "ü"}) == (
        '{"a":[1,2.5,null,true],"é":"ü"}'.encode()
    )
    assert _json.dumps({1: "x"}) == b'{"1":"x"}'  # as json.dumps
    assert _json.dumps(2**70) == b"1180591620717411303424"  # past orjson's 64 bits
    assert json.loads(_json.dumps("\udc80")) == "\udc80"  # a lone surrogate, escaped
    assert _json.dumps({"b": 1, "a": 2}, sort_keys=True) == b'{"a":2,"b":1}'
    assert _json.dumps_text({"m": ti.Event(id="e", payload=1, event_time=2.0)}) == (
        '{"m":{"id":"e","key":null,"event_time":2.0,"headers":{},"payload":1}}'
    )


@pytest.mark.parametrize(
    ("value", "where"),
    [
        (float("nan"), "the value is nan"),
        ({"a": math.inf}, "field 'a' is inf"),
        ({"a": {"b": [1, 2, -math.inf]}}, "field 'a.b[2]' is -inf"),
        ([0, {"x": math.nan}], "field '[1].x' is nan"),
        ({"ok": None, "big": 2**70, "z": math.nan}, "field 'z' is nan"),  # the stdlib path
        ({math.nan: 1}, "field 'nan' is nan"),  # a key
    ],
)
def test_nan_and_infinity_are_refused_naming_the_field(value: Any, where: str) -> None:
    with pytest.raises(ti.NotJsonError, match=r"^payload of event 'e' is not JSON: ") as info:
        _json.dumps(value, what="payload of event 'e'")
    assert where in str(info.value)
    assert isinstance(info.value, ti.PermanentError) and isinstance(info.value, ValueError)


def test_nan_inside_a_dataclass_or_a_to_dict_object_is_found() -> None:
    @dataclasses.dataclass
    class Reading:
        celsius: float

    with pytest.raises(ti.NotJsonError, match=r"field 'r\.celsius' is nan"):
        _json.dumps({"r": Reading(math.nan)})
    event = ti.Event(id="e", payload={"v": math.inf})
    with pytest.raises(ti.NotJsonError, match=r"field 'payload\.v' is inf"):
        _json.dumps(event)


def test_what_json_has_no_form_for_is_refused() -> None:
    with pytest.raises(ti.NotJsonError, match=r"is not JSON-serialisable: .*set"):
        _json.dumps({"s": {1, 2}})
    assert _json.dumps({"s": {1, 2}}, default=sorted) == b'{"s":[1,2]}'


def test_a_dead_letter_always_encodes_as_its_dict() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    event = ti.Event(id="e", payload={"v": math.nan, "s": {3}, "c": cycle, "u": "\udc80"},
                     key=("k", math.inf))
    letter = ti.DeadLetter.from_exception(event, "check", ValueError("bad"), 2)
    record = json.loads(_json.dumps(letter))
    assert {k: record[k] for k in ("node", "error_type", "error", "attempts")} == {
        "node": "check", "error_type": "ValueError", "error": "bad", "attempts": 2}
    assert record["event"]["payload"] == {
        "v": "nan", "s": [3], "c": ["<list cycle>"], "u": "\\udc80"}
    assert record["event"]["key"] == ["k", "inf"]
    plain = ti.DeadLetter.from_exception(ti.Event(id="p", payload=1), "n", ValueError("x"), 1)
    assert json.loads(_json.dumps(plain)) == json.loads(json.dumps(plain.to_dict()))


def test_keys_become_text_and_never_fail() -> None:
    assert _json.key_text(None) is None and _json.key_text("k") == "k"
    assert _json.key_text({"b": 1, "a": [2]}) == '{"a":[2],"b":1}'
    assert _json.key_text(math.nan) == '"nan"'


# -- columns -------------------------------------------------------------------------------


def test_columns_of_events_are_aligned_lists() -> None:
    events = [ti.Event(id="a", payload=1, key="k", event_time=1.0, headers={"h": "1"}),
              ti.Event(id="b", payload={"x": 2}, event_time=2.0)]
    cols = columns(events)
    assert cols.ids == ["a", "b"] and cols.payloads == [1, {"x": 2}]
    assert cols.keys == ["k", None] and cols.event_times == [1.0, 2.0]
    assert [dict(h) for h in cols.headers] == [{"h": "1"}, {}]
    assert columns([]).ids == []


def test_columns_of_a_batch_that_has_them_are_its_own() -> None:
    own = Columns(["a"], [{"p": 1}], [None], [3.0], [{}])

    class ColumnarBatch(Sequence[ti.Event]):
        def __len__(self) -> int:
            return 1

        def __getitem__(self, i: Any) -> Any:
            raise AssertionError("a sink read an Event although the batch has columns")

        def columns(self) -> Columns:
            return own

    assert columns(ColumnarBatch()) is own

    class TupleBatch(ColumnarBatch):
        def columns(self) -> Any:
            return (own.ids, own.payloads, own.keys, own.event_times, own.headers)

    as_tuple = columns(TupleBatch())
    assert as_tuple.ids is own.ids and as_tuple.payloads is own.payloads


def test_columns_must_be_aligned() -> None:
    with pytest.raises(ValueError, match="'columns' must be aligned lists: 2 ids"):
        Columns(["a", "b"], [1], [None, None], [0.0, 0.0], [{}, {}])


async def test_every_built_in_sink_reads_a_columnar_batch_without_events(
    tmp_path: Path,
) -> None:
    own = Columns(["a", "b"], [{"n": 1}, {"n": 2}], [None, "k"], [1.0, 2.0], [{}, {"h": "v"}])

    class ColumnarBatch(Sequence[ti.Event]):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: Any) -> Any:
            raise AssertionError("a sink read an Event although the batch has columns")

        def __iter__(self) -> Iterator[ti.Event]:
            raise AssertionError("a sink read an Event although the batch has columns")

        def columns(self) -> Columns:
            return own

    sinks: list[ti.Sink] = [
        ti.sinks.SQLite(tmp_path / "c.sqlite", "events"),
        ti.sinks.JsonLines(tmp_path / "c.jsonl"),
        ti.sinks.Parquet(tmp_path / "lake"),
    ]
    for sink in sinks:
        await sink.open()
        try:
            await sink.write_batch(ColumnarBatch())
            await sink.flush()
        finally:
            await sink.aclose()
    assert [r[0] for r in sqlite_rows(tmp_path / "c.sqlite")] == ["a", "b"]
    lines = [json.loads(x) for x in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert [(x["id"], x["headers"]) for x in lines] == [("a", {}), ("b", {"h": "v"})]
    assert sorted(pq.read_table(tmp_path / "lake").column("n").to_pylist()) == [1, 2]


# -- the one NaN rule, in every sink that writes JSON --------------------------------------


def nan_events() -> list[ti.Event]:
    events = [ti.Event(id=f"e{i}", payload={"n": i, "r": [{"t": 1.5}]}) for i in range(20)]
    events[4] = ti.Event(id="e4", payload={"n": 4, "r": [{"t": math.nan}]})
    events[11] = ti.Event(id="e11", payload={"n": 11, "r": [{"t": -math.inf}]})
    return events


async def run_with_nan(sink: ti.Sink) -> ti.sinks.Memory:
    dead = ti.sinks.Memory()
    report = await ti.Pipeline(
        ti.sources.from_iterable(nan_events()), sink=sink, dead_letter=dead, max_batch=8
    ).run()
    ti.testing.assert_accounted(report)
    assert report.delivered == 18 and report.dead_lettered == 2
    reasons = {e.id: e.payload.error for e in dead.events}
    assert set(reasons) == {"e4", "e11"}
    assert "payload of event 'e4' is not JSON: field 'r[0].t' is nan" in reasons["e4"]
    assert "field 'r[0].t' is -inf" in reasons["e11"]
    assert {e.payload.error_type for e in dead.events} == {"trio_ingest._errors.NotJsonError"}
    return dead


async def test_nan_rule_jsonlines(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    await run_with_nan(ti.sinks.JsonLines(out, fsync="never"))
    text = out.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert len([json.loads(line) for line in text.splitlines()]) == 18


async def test_nan_rule_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "out.sqlite"
    await run_with_nan(ti.sinks.SQLite(db, "events"))
    assert len(sqlite_rows(db)) == 18


async def test_nan_rule_postgres(postgres_dsn: str, pg_table: str) -> None:
    await run_with_nan(ti.sinks.Postgres(postgres_dsn, pg_table))
    assert await pg_rows(postgres_dsn, f"SELECT count(*) FROM {pg_table}") == [(18,)]


async def test_nan_rule_redis(redis_url: str, redis_prefix: str) -> None:
    stream = f"{redis_prefix}:nan"
    await run_with_nan(ti.sinks.RedisStreams(stream, url=redis_url))
    assert int(await anyio.to_thread.run_sync(redis_command, redis_url, "XLEN", stream)) == 18


# -- every built-in sink as the dead-letter sink -------------------------------------------


def failing_events() -> list[ti.Event]:
    """Events 3, 5 and 7 fail in a stage; 5 and 7 hold what JSON cannot (NaN, a set)."""
    events = [ti.Event(id=f"d{i}", payload={"n": i}, key=f"k{i}", event_time=1_000.0 + i)
              for i in range(10)]
    events[5] = ti.Event(id="d5", payload={"n": 5, "x": math.nan}, key="k5", event_time=1_005.0)
    events[7] = ti.Event(id="d7", payload={"n": 7, "s": {1}}, key=("k", 7), event_time=1_007.0)
    return events


def reject(payload: dict[str, Any]) -> dict[str, Any]:
    if payload["n"] in (3, 5, 7):
        raise ValueError(f"n={payload['n']} is not allowed")
    return payload


async def run_into_dead_letter_sink(dead: ti.Sink) -> None:
    report = await ti.Pipeline(
        ti.sources.from_iterable(failing_events()),
        ti.map(reject, name="check"),
        sink=ti.sinks.Memory(),
        dead_letter=dead,
    ).run()
    ti.testing.assert_accounted(report)
    assert report.delivered == 7 and report.dead_lettered == 3


def check_records(records: dict[str, dict[str, Any]], *, encoded: bool = True) -> None:
    """``records``: event id -> the stored dict form of its dead letter.

    ``encoded``: stored as JSON, so what JSON cannot hold became text.
    """
    assert set(records) == {"d3", "d5", "d7"}
    for ident, record in records.items():
        n = int(ident[1:])
        assert record["node"] == "check"
        assert record["error_type"] == "ValueError"
        assert record["error"] == f"n={n} is not allowed"
        assert record["attempts"] == 1
        assert record["event"]["id"] == ident
    assert records["d3"]["event"]["payload"] == {"n": 3}
    if not encoded:
        return
    assert records["d5"]["event"]["payload"] == {"n": 5, "x": "nan"}
    assert records["d7"]["event"]["payload"] == {"n": 7, "s": [1]}


async def test_dead_letter_sink_memory() -> None:
    dead = ti.sinks.Memory()
    await run_into_dead_letter_sink(dead)
    # Memory keeps the records themselves: their dict form holds the payloads as they were
    records = {r["event"]["id"]: r for r in dead.dead_letters}
    check_records(records, encoded=False)
    assert math.isnan(records["d5"]["event"]["payload"]["x"])
    assert records["d7"]["event"]["payload"] == {"n": 7, "s": {1}}


async def test_dead_letter_sink_jsonlines(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    await run_into_dead_letter_sink(ti.sinks.JsonLines(path))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    check_records({r["event"]["id"]: r for r in lines})


async def test_dead_letter_sink_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "dead.sqlite"
    await run_into_dead_letter_sink(ti.sinks.SQLite(db, "dead_letters"))
    rows = sqlite_rows(db, "dead_letters")
    check_records({ident: json.loads(payload) for ident, _key, _time, payload in rows})
    assert {ident: key for ident, key, _, _ in rows}["d7"] == '["k",7]'


async def test_dead_letter_sink_postgres(postgres_dsn: str, pg_table: str) -> None:
    await run_into_dead_letter_sink(ti.sinks.Postgres(postgres_dsn, pg_table))
    rows = await pg_rows(postgres_dsn, f"SELECT id, payload FROM {pg_table}")
    check_records(dict(rows))


async def test_dead_letter_sink_parquet(tmp_path: Path) -> None:
    lake = tmp_path / "dead"
    await run_into_dead_letter_sink(ti.sinks.Parquet(lake, partition_by="date"))
    table = pq.read_table(lake)
    assert {"node", "error_type", "error", "attempts", "time", "event"} <= set(table.column_names)
    records = {}
    for row in table.to_pylist():
        row["event"] = json.loads(row["event"])
        records[row["event_id"]] = row
    check_records(records)


async def test_dead_letter_sink_redis(redis_url: str, redis_prefix: str) -> None:
    stream = f"{redis_prefix}:dead"
    await run_into_dead_letter_sink(ti.sinks.RedisStreams(stream, url=redis_url))
    entries = await anyio.to_thread.run_sync(redis_command, redis_url, "XRANGE", stream, "-", "+")
    records = {}
    for _entry_id, flat in entries:
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        records[fields["id"]] = json.loads(fields["payload"])
    check_records(records)


# -- helpers -------------------------------------------------------------------------------


def sqlite_rows(db: Path, table: str = "events") -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(
            f'SELECT id, key, event_time, payload FROM "{table}" ORDER BY id'
        ).fetchall()
    finally:
        conn.close()


def _pg(dsn: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query)
        return cur.fetchall() if cur.description else []


async def pg_rows(dsn: str, query: str) -> list[tuple[Any, ...]]:
    return await anyio.to_thread.run_sync(_pg, dsn, query)


@pytest.fixture
def pg_table(postgres_dsn: str) -> Iterator[str]:
    name = f"ti_test_{uuid.uuid4().hex[:12]}"
    yield name
    _pg(postgres_dsn, f"DROP TABLE IF EXISTS {name}")
