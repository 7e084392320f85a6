"""sinks.Parquet: read back with pyarrow, partitions, atomic files, replays, schema misfits."""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

import trio_ingest as ti
from trio_ingest.sinks import _rolling
from trio_ingest.testing import assert_accounted

pytestmark = pytest.mark.anyio

DAY = 86_400
T0 = 1_795_000_000.0  # 2026-11-18 UTC


def visible_files(root: Path) -> list[Path]:
    """What a reader sees: the files pyarrow.dataset lists (it skips '.' and '_' names)."""
    return sorted(Path(f) for f in ds.dataset(root, format="parquet").files)


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def make_events(n: int, start: int = 0, **extra: Any) -> list[ti.Event]:
    return [
        ti.Event(
            id=f"e{i:06d}",
            payload={"seq": i, "value": i / 4, "name": f"n{i % 7}", **extra},
            key=f"k{i % 3}" if i % 2 else None,
            event_time=T0 + i,
        )
        for i in range(start, start + n)
    ]


async def run(sink: ti.sinks.Parquet, events: list[ti.Event], **kwargs: Any) -> ti.RunReport:
    options: dict[str, Any] = {"max_batch": 1_000, "capacity": 4_000, **kwargs}
    return await ti.Pipeline(ti.sources.from_iterable(events), sink=sink, **options).run()


# -- writing and reading back -----------------------------------------------------------


async def test_rows_read_back_with_pyarrow_match(tmp_path: Path) -> None:
    events = make_events(10_000)
    sink = ti.sinks.Parquet(tmp_path)
    report = await run(sink, events)
    assert_accounted(report)
    assert report.delivered == 10_000 and sink.rows_written == 10_000
    table = pq.read_table(tmp_path)
    assert table.num_rows == 10_000
    assert table.schema.names == ["event_id", "event_key", "event_time", "seq", "value", "name"]
    assert table.schema.field("event_time").type == pa.timestamp("us", tz="UTC")
    rows = sorted(table.to_pylist(), key=lambda r: r["event_id"])
    for event, row in zip(events, rows, strict=True):
        assert row["event_id"] == event.id and row["event_key"] == event.key
        assert row["event_time"].timestamp() == event.event_time
        assert {k: row[k] for k in ("seq", "value", "name")} == event.payload
    # one flush at the end: one file, named after the ids it holds
    [file] = visible_files(tmp_path)
    assert file.name == _rolling.file_name(
        "e000000", "e009999", 10_000, _rolling.ids_digest(e.id for e in events), ".parquet"
    )
    assert not [p for p in all_files(tmp_path) if p.name.endswith(".tmp")]


async def test_files_roll_by_size(tmp_path: Path) -> None:
    sink = ti.sinks.Parquet(tmp_path, flush_every=2_500, max_batch=500)
    await run(sink, make_events(10_000), max_batch=500)
    files = visible_files(tmp_path)
    assert len(files) == 4
    assert sorted(pq.read_metadata(f).num_rows for f in files) == [2_500] * 4
    assert pq.read_table(tmp_path).num_rows == 10_000


async def test_files_roll_by_age(tmp_path: Path) -> None:
    sink = ti.sinks.Parquet(tmp_path, flush_interval=0.2)
    pipeline = ti.Pipeline(ti.sources.from_iterable([]), sink=sink)
    async with anyio.create_task_group() as tg:
        handle = await tg.start(pipeline.serve)
        for part in range(3):
            await handle.send_batch(make_events(10, start=part * 10))
            await anyio.sleep(0.35)
        await handle.stop()
    # flush_every (100k) was never reached: only the age rule can cut more than one file
    # (the runtime checks the age after each write, so a file holds 1-2 sends)
    files = visible_files(tmp_path)
    assert len(files) >= 2
    assert pq.read_table(tmp_path).num_rows == 30


async def test_partition_by_date(tmp_path: Path) -> None:
    events = [
        ti.Event(id=f"d{i}", payload={"i": i}, event_time=T0 + (i % 3) * DAY) for i in range(300)
    ]
    sink = ti.sinks.Parquet(tmp_path, partition_by="date")
    await run(sink, events)
    folders = sorted(os.listdir(tmp_path))
    days = [
        datetime.datetime.fromtimestamp(T0 + k * DAY, datetime.UTC).date().isoformat()
        for k in range(3)
    ]
    assert folders == [f"date={d}" for d in days]
    for k, day in enumerate(days):
        [file] = visible_files(tmp_path / f"date={day}")
        part = pq.read_table(file)
        assert sorted(part.column("i").to_pylist()) == [i for i in range(300) if i % 3 == k]
    assert pq.read_table(tmp_path).num_rows == 300


async def test_partition_by_field_keeps_the_value_in_the_folder_name(tmp_path: Path) -> None:
    cities = ["Oslo", "Bergen/Vest", None, "Å b"]
    events = [
        ti.Event(id=f"f{i}", payload={"city": cities[i % 4], "t": float(i)}) for i in range(400)
    ]
    sink = ti.sinks.Parquet(tmp_path, partition_by="city")
    await run(sink, events)
    folders = sorted(os.listdir(tmp_path))
    assert folders == sorted(
        ["city=Oslo", "city=Bergen%2FVest", "city=__HIVE_DEFAULT_PARTITION__", "city=%C3%85%20b"]
    )
    [file] = visible_files(tmp_path / "city=Oslo")
    assert "city" not in pq.read_schema(file).names  # Hive style: only in the path
    table = ds.dataset(tmp_path, format="parquet", partitioning="hive").to_table()
    got = {(r["event_id"], r["city"]) for r in table.to_pylist()}
    assert got == {(e.id, e.payload["city"]) for e in events}


# -- schema -----------------------------------------------------------------------------


async def test_misfits_are_dead_lettered_with_the_reason_and_batch_mates_land(
    tmp_path: Path,
) -> None:
    schema = pa.schema(
        [
            pa.field("seq", pa.int64(), nullable=False),
            pa.field("value", pa.float64()),
            pa.field("name", pa.string()),
            pa.field("tags", pa.list_(pa.struct([pa.field("k", pa.string())]))),
        ]
    )
    events = make_events(2_000)
    bad = {
        "wrong-type": ti.Event(id="wrong-type", payload={"seq": "seven"}),
        "extra": ti.Event(id="extra", payload={"seq": 1, "colour": "red"}),
        "nested-extra": ti.Event(
            id="nested-extra", payload={"seq": 1, "tags": [{"k": "a", "v": 1}]}
        ),
        "not-null": ti.Event(id="not-null", payload={"value": 1.0}),
        "not-a-dict": ti.Event(id="not-a-dict", payload=[1, 2]),
        "bad-time": ti.Event(id="bad-time", payload={"seq": 1}, event_time=float("inf")),
        # pyarrow itself would store 1 here: silently truncated
        "fraction": ti.Event(id="fraction", payload={"seq": 1.5}),
        "nested-fraction": ti.Event(id="nested-fraction", payload={"seq": 1, "tags": [{"k": 2}]}),
    }
    positions = (3, 400, 401, 999, 1500, 1999, 0, 1)
    for position, event in zip(positions, bad.values(), strict=True):
        events[position] = event
    sink = ti.sinks.Parquet(tmp_path, schema=schema, max_batch=500)
    dead = ti.sinks.Memory()
    report = await run(sink, events, dead_letter=dead, max_batch=500)
    assert_accounted(report)
    assert report.dead_lettered == len(bad) and report.delivered == 2_000 - len(bad)
    reasons = {e.id: e.payload.error for e in dead.events}
    assert set(reasons) == set(bad)
    assert "tried to convert to int64" in reasons["wrong-type"]
    assert "field 'colour' is not in the schema" in reasons["extra"]
    assert "field 'tags.v' is not in the schema" in reasons["nested-extra"]
    assert "field 'seq' is null or missing; the schema says not null" in reasons["not-null"]
    assert "payload is a list, not a mapping" in reasons["not-a-dict"]
    assert "event_time must be" in reasons["bad-time"]
    assert "field 'seq' holds 1.5, not a whole number for int64" in reasons["fraction"]
    assert "Expected bytes, got a 'int' object" in reasons["nested-fraction"]
    table = pq.read_table(tmp_path)
    assert table.num_rows == 2_000 - len(bad)
    assert set(table.column("event_id").to_pylist()) == {e.id for e in events} - set(bad)
    assert table.schema.field("seq").type == pa.int64()


async def test_values_convert_to_the_schema_without_loss(tmp_path: Path) -> None:
    schema = pa.schema(
        [
            pa.field("a", pa.float64()),
            pa.field("b", pa.int32(), nullable=False),
            pa.field("c", pa.string()),
            pa.field("d", pa.struct([pa.field("x", pa.int64()), pa.field("y", pa.string())])),
        ]
    )
    events = [
        ti.Event(id="1", payload={"a": 1, "b": 2.0, "d": {"x": 1}}, key=42),
        ti.Event(id="2", payload={"a": 2.5, "b": 3, "c": "x"}, key=("t", 1)),
        ti.Event(id="3", payload={"a": None, "b": -4, "d": {"x": 2, "y": "z"}}),
    ]
    dead = ti.sinks.Memory()
    report = await run(ti.sinks.Parquet(tmp_path, schema=schema), events, dead_letter=dead)
    assert report.delivered == 3 and not dead.events
    table = pq.read_table(tmp_path)
    assert table.schema.field("b").type == pa.int32()
    rows = sorted(table.to_pylist(), key=lambda r: r["event_id"])
    assert [(r["a"], r["b"], r["c"], r["d"]) for r in rows] == [
        (1.0, 2, None, {"x": 1, "y": None}),
        (2.5, 3, "x", None),
        (None, -4, None, {"x": 2, "y": "z"}),
    ]
    assert [r["event_key"] for r in rows] == ["42", '["t",1]', None]
    # out of range for int32: refused, not wrapped around
    dead = ti.sinks.Memory()
    too_big = [ti.Event(id="4", payload={"b": 2**40})]
    report = await run(ti.sinks.Parquet(tmp_path, schema=schema), too_big, dead_letter=dead)
    assert report.dead_lettered == 1 and "too large" in dead.events[0].payload.error


async def test_inferred_schema_comes_from_the_first_batch(tmp_path: Path) -> None:
    first = [ti.Event(id=f"a{i}", payload={"n": i, "note": None}) for i in range(5)]
    later = [
        ti.Event(id="ok", payload={"n": 9, "note": None}),
        ti.Event(id="float", payload={"n": 1.5, "note": None}),
        ti.Event(id="note", payload={"n": 1, "note": "hello"}),
        ti.Event(id="new-field", payload={"n": 1, "other": 2}),
    ]
    sink = ti.sinks.Parquet(tmp_path, max_batch=5)
    dead = ti.sinks.Memory()
    report = await run(sink, first + later, dead_letter=dead, max_batch=5)
    assert report.delivered == 6 and report.dead_lettered == 3
    assert sink.schema is not None and sink.schema.field("n").type == pa.int64()
    reasons = {e.id: e.payload.error for e in dead.events}
    assert "field 'n' holds 1.5, not a whole number for int64" in reasons["float"]
    assert "inferred type is null" in reasons["note"] and "schema=" in reasons["note"]
    assert "field 'other' is not in the schema" in reasons["new-field"]


async def test_payload_field_colliding_with_a_column_is_dead_lettered(tmp_path: Path) -> None:
    events = [ti.Event(id="x", payload={"event_id": 1})]
    dead = ti.sinks.Memory()
    report = await run(ti.sinks.Parquet(tmp_path), events, dead_letter=dead)
    assert report.dead_lettered == 1
    assert "collides with a column the sink writes" in dead.events[0].payload.error


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"workers": 2}, "'workers'"),
        ({"partition_by": "event_time"}, "'partition_by'"),
        ({"partition_by": ""}, "'partition_by'"),
        ({"schema": {"a": "int"}}, "'schema'"),
        ({"schema": pa.schema([("event_id", pa.string())])}, "'schema'"),
        ({"flush_every": 0}, "'flush_every'"),
        ({"flush_interval": 0}, "'flush_interval'"),
        ({"compression": "rar"}, "'compression'"),
        ({"dedupe_window": -1}, "'dedupe_window'"),
    ],
)
def test_bad_options_name_the_field(tmp_path: Path, kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ti.ConfigError, match=field):
        ti.sinks.Parquet(tmp_path, **kwargs)


# -- atomic files and replays -------------------------------------------------------------


async def test_failure_between_temp_write_and_rename_leaves_no_visible_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = make_events(3_000)
    renames: list[tuple[str, str]] = []

    def failing_replace(src: Any, dst: Any) -> None:
        renames.append((str(src), str(dst)))
        assert Path(src).stat().st_size > 0  # the temporary file was complete
        raise OSError(28, "No space left on device (injected)")

    monkeypatch.setattr(_rolling.os, "replace", failing_replace)
    with pytest.raises(ti.SinkError, match="injected"):
        await run(ti.sinks.Parquet(tmp_path), events)
    assert len(renames) == 1 and Path(renames[0][0]).name.startswith(".part-")
    assert visible_files(tmp_path) == []
    assert all_files(tmp_path) == []  # the temporary file was removed too
    monkeypatch.undo()

    sink = ti.sinks.Parquet(tmp_path)
    report = await run(sink, events)  # the replay after the failed run
    assert report.delivered == 3_000
    assert pq.read_table(tmp_path).num_rows == 3_000


CRASHING_WRITER = textwrap.dedent(
    """
    import os, sys, time, trio, trio_ingest as ti
    from trio_ingest.sinks import _rolling

    root, marker = sys.argv[1], sys.argv[2]

    def replace_then_hang(src, dst):
        open(marker, "w").close()   # the temporary file is complete; now die before the rename
        time.sleep(60)

    _rolling.os.replace = replace_then_hang
    events = [
        ti.Event(id=f"e{i:06d}", payload={"seq": i}, event_time=1.7e9 + i) for i in range(5000)
    ]
    trio.run(ti.Pipeline(ti.sources.from_iterable(events), sink=ti.sinks.Parquet(root)).run)
    """
)


def test_a_killed_writer_leaves_only_a_hidden_temp_file_cleaned_at_next_open(
    tmp_path: Path,
) -> None:
    root, marker = tmp_path / "lake", tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, "-c", CRASHING_WRITER, str(root), str(marker)])
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, f"writer exited early with {proc.returncode}"
            assert time.monotonic() < deadline, "writer never reached the rename"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    leftovers = all_files(root)
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".part-")
    assert leftovers[0].name.endswith(".tmp")
    assert visible_files(root) == []  # readers see nothing, not half a file
    assert pq.read_table(root).num_rows == 0

    async def replay() -> ti.sinks.Parquet:
        sink = ti.sinks.Parquet(root)
        events = [
            ti.Event(id=f"e{i:06d}", payload={"seq": i}, event_time=1.7e9 + i) for i in range(5_000)
        ]
        await run(sink, events)
        return sink

    sink = anyio.run(replay, backend="trio")
    assert [p.name for p in all_files(root)] == [sink.files_written[0].name]  # temp file gone
    assert pq.read_table(root).num_rows == 5_000


async def test_replay_with_the_same_batching_rewrites_the_same_files(tmp_path: Path) -> None:
    events = make_events(6_000)
    first = ti.sinks.Parquet(tmp_path, flush_every=2_000, dedupe_window=0)
    await run(first, events)
    names = sorted(p.name for p in visible_files(tmp_path))
    assert len(names) == 3
    # without the id window, a replay cut the same way produces the same names: no duplicates
    again = ti.sinks.Parquet(tmp_path, flush_every=2_000, dedupe_window=0)
    await run(again, events)
    assert sorted(p.name for p in again.files_written) == names
    assert sorted(p.name for p in visible_files(tmp_path)) == names
    assert pq.read_table(tmp_path).num_rows == 6_000


async def test_replay_with_different_batching_is_skipped_by_the_recent_ids(tmp_path: Path) -> None:
    events = make_events(6_000)
    await run(ti.sinks.Parquet(tmp_path, flush_every=2_000), events)
    # the replay regroups the last 3500 events differently: the window still knows them
    replay = ti.sinks.Parquet(tmp_path, flush_every=1_000)
    report = await run(replay, events[2_500:] + make_events(500, start=6_000))
    assert report.delivered == 4_000
    assert replay.duplicates_skipped == 3_500 and replay.rows_written == 500
    table = pq.read_table(tmp_path)
    assert table.num_rows == 6_500 == len(set(table.column("event_id").to_pylist()))


async def test_without_the_window_a_regrouped_replay_duplicates(tmp_path: Path) -> None:
    """The documented limit: names alone only catch replays cut into the same files."""
    events = make_events(4_000)
    await run(ti.sinks.Parquet(tmp_path, flush_every=2_000, dedupe_window=0), events)
    regrouped = ti.sinks.Parquet(tmp_path, flush_every=1_500, dedupe_window=0)
    await run(regrouped, events, max_batch=500)
    ids = pq.read_table(tmp_path).column("event_id").to_pylist()
    assert len(ids) > len(set(ids)) == 4_000


async def test_duplicate_ids_within_a_run_are_stored_once(tmp_path: Path) -> None:
    events = make_events(1_000) + make_events(1_000)[::2]
    sink = ti.sinks.Parquet(tmp_path, flush_every=300)
    report = await run(sink, events, max_batch=100)
    assert report.delivered == 1_500 and sink.duplicates_skipped == 500
    ids = pq.read_table(tmp_path).column("event_id").to_pylist()
    assert len(ids) == len(set(ids)) == 1_000


def test_ids_digest_is_a_digest_of_the_set() -> None:
    ids = ["b", "ä", "a", "z", "日本", "a"]
    assert _rolling.ids_digest(ids) == _rolling.ids_digest(sorted(set(ids), reverse=True))
    assert _rolling.ids_digest(ids) != _rolling.ids_digest(["a", "b"])
    # the sink's arrow path (byte order sort, C++ join) names files the same way
    table = pa.table({"event_id": pa.array(ids[:-1])})
    joined = "\n".join(sorted(table.column(0).to_pylist())).encode()
    assert _rolling.digest_joined(joined) == _rolling.ids_digest(ids)


async def test_unicode_ids_name_files_by_the_set_digest(tmp_path: Path) -> None:
    events = [ti.Event(id=i, payload={"x": 1}) for i in ["日本", "ä", "z", "a/b", "~"]]
    sink = ti.sinks.Parquet(tmp_path)
    await run(sink, events)
    [file] = visible_files(tmp_path)
    assert file.name.endswith(f"-5-{_rolling.ids_digest(e.id for e in events)}.parquet")


def test_recent_ids_forget_whole_old_groups() -> None:
    recent = _rolling.RecentIds(limit=5)
    recent.add(["a", "b", "c"])
    recent.add({"d", "e"})
    assert "a" in recent and "e" in recent and len(recent) == 5
    assert not recent.isdisjoint({"x", "c"}) and recent.isdisjoint({"x", "y"})
    recent.add(["f"])
    assert "a" not in recent and all(i in recent for i in "def")
    recent.add(["d", "x", "y", "z", "w", "v"])  # the newest group stays even when over the limit
    assert "x" in recent and "e" not in recent and len(recent) == 6
    off = _rolling.RecentIds(limit=0)
    off.add(["a"])
    assert "a" not in off and len(off) == 0


# -- the rolling buffer a rolling JSON Lines sink can use ------------------------------------


def _ids_of_jsonl(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["id"] for line in f]


def _jsonl_rows(
    buffer: _rolling.RollingBuffer, events: list[ti.Event], partition_by: str | None
) -> None:
    fresh = buffer.fresh(events)
    rows = [
        (
            _rolling.partition_segment(e, partition_by),
            e.id,
            (json.dumps(e.to_dict()) + "\n").encode(),
        )
        for e in fresh
    ]
    buffer.add(rows)


def test_rolling_buffer_writes_jsonl_partitions_and_skips_replays(tmp_path: Path) -> None:
    events = [
        ti.Event(id=f"j{i}", payload={"city": ["Oslo", None][i % 2], "i": i}) for i in range(10)
    ]
    buffer = _rolling.RollingBuffer(tmp_path, suffix=".jsonl")
    buffer.open(_ids_of_jsonl)
    _jsonl_rows(buffer, events + events[:3], "city")  # repeats within the buffer are dropped
    assert len(buffer) == 10
    written = buffer.flush()
    assert sorted(p.parent.name for p in written) == [
        "city=Oslo", "city=__HIVE_DEFAULT_PARTITION__"
    ]
    oslo = next(p for p in written if p.parent.name == "city=Oslo")
    assert _ids_of_jsonl(oslo) == ["j0", "j2", "j4", "j6", "j8"]
    assert oslo.name == _rolling.file_name(
        "j0", "j8", 5, _rolling.ids_digest(["j0", "j2", "j4", "j6", "j8"]), ".jsonl"
    )
    # a new buffer (a new run) loads the newest files' ids: the replay is skipped
    again = _rolling.RollingBuffer(tmp_path, suffix=".jsonl")
    again.open(_ids_of_jsonl)
    _jsonl_rows(again, [*events, ti.Event(id="new", payload={"city": "Oslo"})], "city")
    assert len(again) == 1
    again.flush()
    lines = [i for p in tmp_path.rglob("*.jsonl") for i in _ids_of_jsonl(p)]
    assert sorted(lines) == sorted([e.id for e in events] + ["new"])


def test_rolling_buffer_failed_commit_keeps_rows_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    buffer = _rolling.RollingBuffer(tmp_path, suffix=".jsonl", header=b"")
    buffer.open()
    _jsonl_rows(buffer, [ti.Event(id="a", payload={})], None)

    def no_space(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device (injected)")

    monkeypatch.setattr(_rolling.os, "replace", no_space)
    with pytest.raises(OSError, match="injected"):
        buffer.flush()
    assert all_files(tmp_path) == [] and len(buffer) == 1
    monkeypatch.undo()
    [file] = buffer.flush()
    assert _ids_of_jsonl(file) == ["a"] and len(buffer) == 0


def test_partition_segment_rejects_what_has_no_folder() -> None:
    assert _rolling.partition_segment(ti.Event(id="a", payload={}), None) == ""
    assert _rolling.partition_segment(ti.Event(id="a", payload={}, event_time=0.0), "date") == (
        "date=1970-01-01"
    )
    with pytest.raises(ValueError, match="event_time"):
        _rolling.partition_segment(ti.Event(id="a", payload={}, event_time=float("inf")), "date")
    with pytest.raises(ValueError, match="must be a scalar"):
        _rolling.partition_segment(ti.Event(id="a", payload={"c": [1]}), "c")
    with pytest.raises(ValueError, match="not a mapping"):
        _rolling.partition_segment(ti.Event(id="a", payload=3), "c")


# -- flushes overlap writing (flush_overlaps) ----------------------------------------------


class GatedParquet(ti.sinks.Parquet):
    """Parquet whose conversions or file writes wait, in their thread, for a gate."""

    def __init__(self, path: Path, *, gate: str) -> None:
        super().__init__(path)
        self.gate_on = gate
        self.gate = threading.Event()
        self.waiting = threading.Event()

    def _wait(self, kind: str) -> None:
        if self.gate_on == kind:
            self.waiting.set()
            assert self.gate.wait(30), "the test never opened the gate"

    def _convert(self, cols: Any) -> Any:
        self._wait("convert")
        return super()._convert(cols)

    def _flush(self, pending: Any) -> None:
        self._wait("flush")
        super()._flush(pending)


async def until(flag: threading.Event) -> None:
    while not flag.is_set():  # noqa: ASYNC110 -- a flag set by a worker thread
        await anyio.sleep(0.001)


async def test_a_flush_taking_the_buffer_while_a_batch_converts_leaves_it_for_the_next(
    tmp_path: Path,
) -> None:
    first, second = make_events(10), make_events(10, start=10)
    sink = GatedParquet(tmp_path, gate="none")
    await sink.open()
    await sink.write_batch(first)
    sink.gate_on = "convert"
    async with anyio.create_task_group() as tg:
        tg.start_soon(sink.write_batch, second)
        await until(sink.waiting)  # the second batch is converting in its thread
        await sink.flush()  # takes the first batch only
        assert sink.rows_written == 10
        sink.gate.set()
    assert sink._pending_ids == {e.id for e in second}  # buffered for the next flush
    await sink.flush()
    await sink.write_batch(first)  # a redelivery: in the newest files, skipped
    await sink.flush()
    await sink.aclose()
    ids = pq.read_table(tmp_path).column("event_id").to_pylist()
    assert sorted(ids) == sorted(e.id for e in first + second)
    assert sink.duplicates_skipped == 10


async def test_ids_being_flushed_are_not_buffered_again(tmp_path: Path) -> None:
    events = make_events(10)
    sink = GatedParquet(tmp_path, gate="flush")
    await sink.open()
    await sink.write_batch(events)
    async with anyio.create_task_group() as tg:
        tg.start_soon(sink.flush)
        await until(sink.waiting)  # the file is being written
        await sink.write_batch(events[5:])  # redelivered meanwhile: skipped
        assert sink.duplicates_skipped == 5 and not sink._pending_ids
        sink.gate.set()
    await sink.flush()
    await sink.aclose()
    assert pq.read_table(tmp_path).num_rows == 10


async def test_a_failed_overlapped_flush_puts_the_rows_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = make_events(10)
    sink = ti.sinks.Parquet(tmp_path)
    await sink.open()
    await sink.write_batch(events)

    def failing_replace(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device (injected)")

    with monkeypatch.context() as patched:
        patched.setattr(_rolling.os, "replace", failing_replace)
        with pytest.raises(ti.SinkError, match="injected"):
            await sink.flush()
    assert sink._pending_ids == {e.id for e in events}  # back in the buffer
    await sink.flush()
    await sink.aclose()
    assert pq.read_table(tmp_path).num_rows == 10


@given(st.lists(st.text(min_size=1, max_size=4), unique=True, max_size=30), st.integers(1, 7),
       st.booleans())
def test_sorted_ids_are_in_code_point_order_however_they_come(
    ids: list[str], chunk: int, presorted: bool
) -> None:
    from trio_ingest.sinks._parquet import _sorted_ids

    if presorted:
        ids = sorted(ids)
    column = pa.chunked_array(
        [pa.array(ids[i : i + chunk], pa.string()) for i in range(0, len(ids), chunk)],
        pa.string(),
    )
    assert _sorted_ids(column).to_pylist() == sorted(ids)
