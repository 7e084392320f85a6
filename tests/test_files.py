"""File sources (JSON Lines, CSV) with their checkpoint, and the JSON Lines sink."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trio_ingest as ti
from trio_ingest.sources._files import checkpoint_of, read_checkpoint, write_checkpoint

pytestmark = pytest.mark.anyio


def write_lines(path: Path, lines: list[str], *, newline: str = "\n") -> None:
    path.write_bytes("".join(line + newline for line in lines).encode())


def dead_letter_reasons(sink: ti.sinks.Memory) -> dict[str, str]:
    return {e.payload.event.id: e.payload.error for e in sink.events}


async def run(source: ti.Source, **options: Any) -> tuple[ti.RunReport, ti.sinks.Memory,
                                                          ti.sinks.Memory]:
    sink = ti.sinks.Memory()
    dead = ti.sinks.Memory()
    report = await ti.Pipeline(source, sink=sink, dead_letter=dead, **options).run()
    ti.testing.assert_accounted(report)
    return report, sink, dead


# -- the atomic checkpoint ------------------------------------------------------------


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "c.checkpoint"
    assert read_checkpoint(path) is None
    write_checkpoint(path, {"offset": 10, "line": 2})
    assert read_checkpoint(path) == {"offset": 10, "line": 2}
    write_checkpoint(path, {"offset": 20, "line": 4})
    assert read_checkpoint(path) == {"offset": 20, "line": 4}
    assert os.listdir(tmp_path) == ["c.checkpoint"]


def test_checkpoint_crash_before_rename_keeps_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.checkpoint"
    write_checkpoint(path, {"offset": 10, "line": 2})

    def crash(src: object, dst: object) -> None:
        # the temp file is fully written and fsync'd by now: the crash hits the rename
        assert Path(str(src)).read_text().startswith("{")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="No space"):
        write_checkpoint(path, {"offset": 99, "line": 9})
    monkeypatch.undo()
    assert read_checkpoint(path) == {"offset": 10, "line": 2}
    assert os.listdir(tmp_path) == ["c.checkpoint"]  # no temp file left behind


def test_corrupt_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "c.checkpoint"
    path.write_text("{not json")
    with pytest.raises(ti.SourceError, match="not a trio_ingest checkpoint"):
        read_checkpoint(path)
    path.write_text('{"offset": -1}')
    with pytest.raises(ti.SourceError, match="bad offset"):
        read_checkpoint(path)


async def test_failed_commit_is_a_source_error_and_keeps_the_old_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "in.jsonl"
    write_lines(data, [json.dumps({"id": str(i)}) for i in range(3)])
    checkpoint = tmp_path / "in.checkpoint"
    write_checkpoint(checkpoint, {"offset": 0, "line": 0})
    source = ti.sources.JsonLines(data, checkpoint=checkpoint)
    await source.open()
    read = await source.read(10)
    assert read is not None

    def crash(src: object, dst: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(ti.SourceError, match="cannot write checkpoint"):
        await source.commit([read.offset])
    monkeypatch.undo()
    await source.aclose()
    assert read_checkpoint(checkpoint) == {"offset": 0, "line": 0}


# -- JSON Lines source ----------------------------------------------------------------


async def test_reads_every_line_and_commits_the_end(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    write_lines(data, [json.dumps({"id": f"e{i}", "n": i, "k": i % 3}) for i in range(1000)])
    checkpoint = tmp_path / "in.checkpoint"
    source = ti.sources.JsonLines(data, checkpoint=checkpoint, key_field="k")
    report, sink, dead = await run(source, max_batch=64)
    assert [e.id for e in sink.events] == [f"e{i}" for i in range(1000)]
    assert sink.events[5].payload == {"id": "e5", "n": 5, "k": 2}
    assert sink.events[5].key == 2
    assert not dead.events
    stored = read_checkpoint(checkpoint)
    assert stored is not None
    assert stored["offset"] == data.stat().st_size == report.committed[source.name]
    assert stored["line"] == 1000


async def test_rerun_after_the_end_reads_nothing(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    write_lines(data, [json.dumps({"id": str(i)}) for i in range(10)])
    checkpoint = tmp_path / "in.checkpoint"
    await run(ti.sources.JsonLines(data, checkpoint=checkpoint))
    report, sink, _ = await run(ti.sources.JsonLines(data, checkpoint=checkpoint))
    assert report.received == 0
    assert not sink.events


async def test_resumes_from_the_checkpoint_with_line_numbers(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    lines = [json.dumps({"id": str(i)}) for i in range(10)]
    write_lines(data, lines)
    checkpoint = tmp_path / "in.checkpoint"
    offset = sum(len(line) + 1 for line in lines[:6])
    write_checkpoint(checkpoint, checkpoint_of(data, offset, 6))
    with data.open("a") as f:
        f.write("broken\n")
    _, sink, dead = await run(ti.sources.JsonLines(data, checkpoint=checkpoint))
    assert [e.id for e in sink.events] == ["6", "7", "8", "9"]
    assert dead_letter_reasons(dead) == {
        f"{data}:11": "line 11: bad JSON: Expecting value: line 1 column 1 (char 0)"
    }


async def test_every_kind_of_malformed_line_is_dead_lettered_with_its_reason(
    tmp_path: Path,
) -> None:
    data = tmp_path / "in.jsonl"
    raw = [
        b'{"id": "ok1"}',
        b"not json",  # 2
        b"[1, 2]",  # 3
        b'{"v": 1}',  # 4
        b'{"id": ""}',  # 5
        b'{"id": 1.5}',  # 6
        b'{"id": "n\x00ul"}',  # 7
        b'{"id": "bad \xff utf8"}',  # 8
        b'{"id": "big", "x": "' + b"y" * 300 + b'"}',  # 9
        b'{"id": "ok2", "k": [1]}',  # 10: key of a wrong type
        b'{"id": "ok3", "t": "yesterday"}',  # 11: time of a wrong format
        b'{"id": 42}',  # 12: an integer id is fine
        b"",  # 13: blank, skipped
        b'{"id": "ok4", "t": "2024-01-02T03:04:05+00:00"}',  # 14
    ]
    data.write_bytes(b"\n".join(raw) + b"\n")
    source = ti.sources.JsonLines(data, max_line_bytes=200, key_field="k", time_field="t")
    report, sink, dead = await run(source)
    reasons = dead_letter_reasons(dead)
    prefix = f"{data}:"
    assert reasons == {
        prefix + "1": "line 1: missing time field 't'",
        prefix + "2": "line 2: bad JSON: Expecting value: line 1 column 1 (char 0)",
        prefix + "3": "line 3: expected a JSON object, got an array",
        prefix + "4": "line 4: missing id field 'id'",
        prefix + "5": "line 5: empty id field 'id'",
        prefix + "6": "line 6: id field 'id' must be a string or an integer, not a number",
        prefix + "7": "line 7: NUL byte at column 10",
        prefix + "8": "line 8: invalid UTF-8 at byte 13: invalid start byte",
        prefix + "9": "line 9: line longer than max_line_bytes=200",
        prefix + "10": "line 10: key field 'k' must be a string or a number, not an array",
        prefix + "11": "line 11: time field 't' is neither epoch seconds nor ISO 8601: "
                       "'yesterday'",
        prefix + "12": "line 12: missing time field 't'",
    }
    assert [e.id for e in sink.events] == ["ok4"]
    assert sink.events[0].event_time == 1704164645.0
    assert report.received == 13
    letter = dead.events[7].payload
    assert letter.error_type == "MalformedLine"
    assert letter.node == "jsonlines"
    assert letter.attempts == 1
    assert letter.event.payload == '{"id": "bad \ufffd utf8"}'
    assert letter.event.headers["line"] == "8"


async def test_valid_lines_around_malformed_ones_all_arrive(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    lines = []
    for i in range(300):
        lines.append(json.dumps({"id": f"v{i}"}))
        if i % 7 == 0:
            lines.append("{broken")
    write_lines(data, lines)
    _, sink, dead = await run(ti.sources.JsonLines(data), max_batch=16)
    assert sorted(e.id for e in sink.events) == sorted(f"v{i}" for i in range(300))
    assert len(dead.events) == len(range(0, 300, 7))


async def test_crlf_bom_blank_lines_and_a_last_line_without_newline(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    data.write_bytes(b'\xef\xbb\xbf{"id": "a"}\r\n\r\n   \n{"id": "b"}\r\n{"id": "c"}')
    report, sink, dead = await run(ti.sources.JsonLines(data))
    assert [e.id for e in sink.events] == ["a", "b", "c"]
    assert not dead.events
    assert report.committed["jsonlines"] == data.stat().st_size


async def test_an_oversize_line_without_newline_at_the_end(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    data.write_bytes(b'{"id": "a"}\n' + b"x" * 50)
    _, sink, dead = await run(ti.sources.JsonLines(data, max_line_bytes=20))
    assert [e.id for e in sink.events] == ["a"]
    assert list(dead_letter_reasons(dead).values()) == ["line 2: line longer than "
                                                        "max_line_bytes=20"]


async def test_a_line_exactly_at_the_limit_is_accepted(tmp_path: Path) -> None:
    line = b'{"id": "a", "x": "' + b"y" * 10 + b'"}'
    data = tmp_path / "in.jsonl"
    data.write_bytes(line + b"\r\n" + line.replace(b'"a"', b'"b"') + b"y\n")
    _, sink, dead = await run(ti.sources.JsonLines(data, max_line_bytes=len(line)))
    assert [e.id for e in sink.events] == ["a"]
    assert len(dead.events) == 1


async def test_checkpoint_past_the_end_or_of_another_file_fails_at_open(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    write_lines(data, ['{"id": "a"}'] * 3)
    checkpoint = tmp_path / "in.checkpoint"
    write_checkpoint(checkpoint, checkpoint_of(data, 10_000, 3))
    with pytest.raises(ti.SourceError, match="truncated or replaced"):
        await run(ti.sources.JsonLines(data, checkpoint=checkpoint))
    await run(ti.sources.JsonLines(data, checkpoint=tmp_path / "fresh.checkpoint"))
    data.write_bytes(data.read_bytes().replace(b'"a"', b'"b"'))
    with pytest.raises(ti.SourceError, match="changed since checkpoint"):
        await run(ti.sources.JsonLines(data, checkpoint=tmp_path / "fresh.checkpoint"))


async def test_missing_file_fails_at_open(tmp_path: Path) -> None:
    with pytest.raises(ti.SourceError, match=r"cannot open .*No such file"):
        await run(ti.sources.JsonLines(tmp_path / "nope.jsonl"))


def test_bad_arguments_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ti.ConfigError, match="'max_line_bytes' must be >= 1: 0"):
        ti.sources.JsonLines(tmp_path / "x", max_line_bytes=0)
    with pytest.raises(ti.ConfigError, match="'poll_interval' must be > 0: 0"):
        ti.sources.JsonLines(tmp_path / "x", poll_interval=0)
    with pytest.raises(ti.ConfigError, match="'id_field' must be a non-empty str: ''"):
        ti.sources.JsonLines(tmp_path / "x", id_field="")
    with pytest.raises(ti.ConfigError, match="'delimiter' must be one character: ';;'"):
        ti.sources.CSV(tmp_path / "x", delimiter=";;")
    with pytest.raises(ti.ConfigError, match="'rate' must be > 0 or None: 0"):
        ti.sources.CSV(tmp_path / "x", rate=0)


async def test_follow_tails_a_growing_file_and_waits_for_whole_lines(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    write_lines(data, ['{"id": "a"}'])
    checkpoint = tmp_path / "in.checkpoint"
    sink = ti.sinks.Memory()
    source = ti.sources.JsonLines(data, checkpoint=checkpoint, follow=True, poll_interval=0.01)
    pipeline = ti.Pipeline(source, sink=sink, dead_letter=ti.sinks.Memory())

    async def arrived(n: int) -> None:
        with anyio.fail_after(10):
            while len(sink.events) < n:  # noqa: ASYNC110 -- polls a list the sink fills
                await anyio.sleep(0.01)

    async with anyio.create_task_group() as tg:
        handle = await tg.start(pipeline.serve)
        await arrived(1)
        with data.open("ab") as f:
            f.write(b'{"id": "b"}\n{"id": "c"')  # "c" is still being written
            f.flush()
            await arrived(2)
            await anyio.sleep(0.1)
            assert [e.id for e in sink.events] == ["a", "b"]
            f.write(b"}\n")
            f.flush()
            await arrived(3)
        report = await handle.stop(5)
    ti.testing.assert_accounted(report)
    assert [e.id for e in sink.events] == ["a", "b", "c"]
    stored = read_checkpoint(checkpoint)
    assert stored is not None and stored["offset"] == data.stat().st_size


async def test_graceful_stop_mid_file_then_resume_reads_every_line_once(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    write_lines(data, [json.dumps({"id": f"e{i}"}) for i in range(2000)])
    checkpoint = tmp_path / "in.checkpoint"
    first = ti.sinks.Memory()
    source = ti.sources.JsonLines(data, checkpoint=checkpoint, rate=4000)
    async with anyio.create_task_group() as tg:
        handle = await tg.start(ti.Pipeline(source, sink=first, max_batch=50).serve)
        with anyio.fail_after(10):
            while len(first.events) < 200:  # noqa: ASYNC110 -- polls the sink's list
                await anyio.sleep(0.01)
        report = await handle.stop(5)
    ti.testing.assert_accounted(report)
    stored = read_checkpoint(checkpoint)
    assert stored is not None
    assert 0 < stored["offset"] < data.stat().st_size
    assert report.in_flight == 0
    second = ti.sinks.Memory()
    report2 = await ti.Pipeline(ti.sources.JsonLines(data, checkpoint=checkpoint),
                                sink=second).run()
    # a graceful stop commits everything it delivered: the rest is read exactly once
    assert report2.received == 2000 - len(first.events)
    ids = [e.id for e in first.events] + [e.id for e in second.events]
    assert sorted(ids) == sorted(f"e{i}" for i in range(2000))


# -- CSV source -----------------------------------------------------------------------


async def test_csv_rows_become_dicts_with_quoted_newlines(tmp_path: Path) -> None:
    data = tmp_path / "in.csv"
    data.write_bytes(
        b"id,name,qty\r\n"
        b'1,"Smith, Jo",3\r\n'
        b'2,"two\nlines ""quoted""",4\r\n'
        b"\r\n"
        b"3,plain,5"
    )
    _, sink, dead = await run(ti.sources.CSV(data, converters={"qty": int}))
    assert not dead.events
    assert [e.payload for e in sink.events] == [
        {"id": "1", "name": "Smith, Jo", "qty": 3},
        {"id": "2", "name": 'two\nlines "quoted"', "qty": 4},
        {"id": "3", "name": "plain", "qty": 5},
    ]


async def test_csv_bad_rows_are_dead_lettered(tmp_path: Path) -> None:
    data = tmp_path / "in.csv"
    data.write_bytes(
        b"id,qty\n"
        b"a,1\n"
        b"b,1,extra\n"  # 3
        b",2\n"  # 4
        b"c,many\n"  # 5
        b'd,"unclosed\n'  # 6 (spoils only its own line)
        b"e,3\n"
    )
    _, sink, dead = await run(ti.sources.CSV(data, converters={"qty": int}))
    assert [e.id for e in sink.events] == ["a", "e"]
    prefix = f"{data}:"
    assert dead_letter_reasons(dead) == {
        prefix + "3": "line 3: expected 2 fields, got 3",
        prefix + "4": "line 4: empty id field 'id'",
        prefix + "5": "line 5: column 'qty': ValueError: invalid literal for int() with "
                      "base 10: 'many'",
        prefix + "6": "line 6: unterminated quoted field opened at column 3",
    }


async def test_csv_resume_skips_the_header_and_given_fieldnames(tmp_path: Path) -> None:
    data = tmp_path / "in.tsv"
    write_lines(data, ["id\tv"] + [f"r{i}\t{i}" for i in range(10)])
    checkpoint = tmp_path / "in.checkpoint"
    header = len("id\tv\n")
    write_checkpoint(checkpoint, checkpoint_of(data, header + len("r0\t0\n"), 2))
    _, sink, _ = await run(ti.sources.CSV(data, delimiter="\t", checkpoint=checkpoint))
    assert [e.id for e in sink.events] == [f"r{i}" for i in range(1, 10)]
    # with fieldnames given, the first line is data
    plain = tmp_path / "plain.csv"
    write_lines(plain, ["x,1", "y,2"])
    _, sink, _ = await run(ti.sources.CSV(plain, fieldnames=["key", "n"], id_field="key"))
    assert [e.payload for e in sink.events] == [{"key": "x", "n": "1"}, {"key": "y", "n": "2"}]


async def test_empty_csv_has_no_events(tmp_path: Path) -> None:
    data = tmp_path / "in.csv"
    data.write_bytes(b"")
    report, _sink, _ = await run(ti.sources.CSV(data))
    assert report.received == 0


# -- JSON Lines sink ------------------------------------------------------------------


async def test_jsonlines_sink_writes_events_and_dead_letter_records(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    dead = tmp_path / "dead.jsonl"

    def check(p: dict[str, Any]) -> dict[str, Any]:
        if p["n"] == 3:
            raise ValueError("three is not allowed")
        return p

    report = await ti.Pipeline(
        ti.sources.from_iterable([ti.Event(id=f"e{i}", payload={"n": i}, event_time=1.0)
                                  for i in range(5)]),
        ti.map(check, name="check"),
        sink=ti.sinks.JsonLines(out),
        dead_letter=ti.sinks.JsonLines(dead, fsync="never"),
    ).run()
    ti.testing.assert_accounted(report)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["id"] for line in lines] == ["e0", "e1", "e2", "e4"]
    assert lines[0] == {"id": "e0", "key": None, "event_time": 1.0, "headers": {},
                        "payload": {"n": 0}}
    (letter,) = [json.loads(line) for line in dead.read_text().splitlines()]
    assert letter["node"] == "check"
    assert letter["error_type"] == "ValueError"
    assert letter["error"] == "three is not allowed"
    assert letter["attempts"] == 1
    assert letter["event"]["id"] == "e3"
    assert letter["event"]["payload"] == {"n": 3}


async def test_jsonlines_sink_dead_letters_an_unserialisable_event_only(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    dead = ti.sinks.Memory()
    events = [ti.Event(id=str(i), payload={"n": i}) for i in range(8)]
    events[5] = ti.Event(id="5", payload={"n": object()})
    report = await ti.Pipeline(ti.sources.from_iterable(events), sink=ti.sinks.JsonLines(out),
                               dead_letter=dead).run()
    ti.testing.assert_accounted(report)
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [
        "0", "1", "2", "3", "4", "6", "7"]
    assert [e.payload.event.id for e in dead.events] == ["5"]
    assert dead.events[0].payload.error_type == "trio_ingest._errors.NotJsonError"


async def test_jsonlines_sink_cuts_a_torn_last_line_off(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"id": "old"}\n{"id": "to')  # a kill -9 tore the last write
    await ti.Pipeline(ti.sources.from_iterable([{"n": 1}]), sink=ti.sinks.JsonLines(out)).run()
    lines = out.read_bytes().split(b"\n")
    assert lines[0] == b'{"id": "old"}' and lines[-1] == b""
    assert [json.loads(line)["payload"] for line in lines[1:-1]] == [{"n": 1}]  # whole lines


async def test_jsonlines_sink_keeps_a_whole_last_line_without_its_newline(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"id": "old"}\n' + b'{"id": "whole", "pad": "' + b"x" * 100_000 + b'"}')
    await ti.Pipeline(ti.sources.from_iterable([{"n": 1}]), sink=ti.sinks.JsonLines(out)).run()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows[:2]] == ["old", "whole"]  # a line longer than one chunk
    assert rows[2]["payload"] == {"n": 1}


async def test_jsonlines_sink_cuts_a_torn_only_line(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"id": "to')
    await ti.Pipeline(ti.sources.from_iterable([{"n": 1}]), sink=ti.sinks.JsonLines(out)).run()
    assert [json.loads(line)["payload"] for line in out.read_text().splitlines()] == [{"n": 1}]


async def test_jsonlines_sink_unwritable_path_fails_at_open(tmp_path: Path) -> None:
    with pytest.raises(ti.SinkError, match=r"cannot open .* for appending"):
        await ti.Pipeline(ti.sources.from_iterable([1]),
                          sink=ti.sinks.JsonLines(tmp_path / "no" / "dir.jsonl")).run()
    with pytest.raises(ti.ConfigError, match="'fsync' must be 'batch' or 'never': 'always'"):
        ti.sinks.JsonLines(tmp_path / "x", fsync="always")


# -- CSV quoting (issue 12, defect 3) -------------------------------------------------


async def test_csv_a_stray_quote_in_an_unquoted_field_is_data(tmp_path: Path) -> None:
    # regression: the 5" made every later line one record, cut and dead-lettered, and
    # the checkpoint committed past the good rows
    rows = [f"{i},widget {i},{i}" for i in range(3000)]
    rows[1000] = '1000,5" screen,1000'
    data = tmp_path / "in.csv"
    write_lines(data, ["id,name,qty", *rows])
    checkpoint = tmp_path / "in.checkpoint"
    _, sink, dead = await run(ti.sources.CSV(data, checkpoint=checkpoint))
    assert not dead.events
    assert len(sink.events) == 3000
    assert sink.events[1000].payload["name"] == '5" screen'
    stored = read_checkpoint(checkpoint)
    assert stored is not None and stored["line"] == 3001


async def test_csv_an_unterminated_quote_spoils_only_its_record(tmp_path: Path) -> None:
    rows = ["id,name", "1,one", '2,"two', "3,three", "4,four"]
    data = tmp_path / "in.csv"
    write_lines(data, rows)
    _, sink, dead = await run(ti.sources.CSV(data))
    assert [e.id for e in sink.events] == ["1", "3", "4"]
    assert dead_letter_reasons(dead) == {
        f"{data}:3": "line 3: unterminated quoted field opened at column 3"}


async def test_csv_an_unterminated_quote_closed_later_spoils_only_its_line(
    tmp_path: Path,
) -> None:
    # the next quote closes the field and leaves junk behind it: not one record
    rows = ["id,name", '1,"one', '2,"two"', "3,three"]
    data = tmp_path / "in.csv"
    write_lines(data, rows)
    _, sink, dead = await run(ti.sources.CSV(data))
    assert [e.id for e in sink.events] == ["2", "3"]
    assert list(dead_letter_reasons(dead)) == [f"{data}:2"]
    assert "unterminated quoted field opened at column 3" in dead.events[0].payload.error


async def test_csv_follow_does_not_stall_on_an_unterminated_quote(tmp_path: Path) -> None:
    data = tmp_path / "in.csv"
    write_lines(data, ["id,name", '1,"one', "2,two", "3,three"])
    sink, dead = ti.sinks.Memory(), ti.sinks.Memory()
    source = ti.sources.CSV(data, follow=True, poll_interval=0.01)
    async with anyio.create_task_group() as tg:
        handle = await tg.start(ti.Pipeline(source, sink=sink, dead_letter=dead).serve)
        with anyio.fail_after(10):
            while len(sink.events) < 2:  # noqa: ASYNC110 -- polls a list the sink fills
                await anyio.sleep(0.01)
        report = await handle.stop(5)
    ti.testing.assert_accounted(report)
    assert [e.id for e in sink.events] == ["2", "3"]
    assert len(dead.events) == 1


async def test_csv_typed_columns(tmp_path: Path) -> None:
    data = tmp_path / "in.csv"
    write_lines(data, ["id,n,price,ok,tags", "1,3,2.5,true,[1]", "2,,0.5,no,{}",
                       "3,x,1,yes,[]"])
    _, sink, dead = await run(ti.sources.CSV(
        data, schema="n:int,price:float,ok:bool,tags:json"))
    assert [e.payload for e in sink.events] == [
        {"id": "1", "n": 3, "price": 2.5, "ok": True, "tags": [1]},
        {"id": "2", "n": None, "price": 0.5, "ok": False, "tags": {}},
    ]
    assert dead_letter_reasons(dead) == {f"{data}:4": "line 4: column 'n': expected int, got 'x'"}
    _, sink, _ = await run(ti.sources.CSV(data, schema="infer"))
    assert sink.events[0].payload == {"id": 1, "n": 3, "price": 2.5, "ok": True, "tags": "[1]"}
    with pytest.raises(ti.ConfigError, match="'schema' type of column 'n' must be one of"):
        ti.sources.CSV(data, schema="n:integer")


def _csv_text(records: list[list[str]], quoting: int, stray: list[bool],
              broken: list[bool]) -> str:
    import csv
    import io

    out = io.StringIO()
    # "\r\n": the writer quotes a field only for the characters of its line terminator
    writer = csv.writer(out, quoting=quoting, lineterminator="\r\n")
    # after an unterminated quote, Python's csv reads on until a quote closes it: when the
    # closing quote is followed by a delimiter the lines are one valid record (ambiguous
    # input, read as csv reads it). Quoting every field after it keeps records apart.
    after_broken = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow(["id", "a", "b"])
    seen_broken = False
    for i, (fields, s, b) in enumerate(zip(records, stray, broken, strict=True)):
        if b:
            out.write(f'{i},"never closed,x\n')  # spoils itself only
            seen_broken = True
        elif s:
            plain = fields[1].translate({ord(c): None for c in ',"\n\r'})
            out.write(f'{i},5" screen,{plain}x\n')
        else:
            (after_broken if seen_broken else writer).writerow([str(i), *fields])
    return out.getvalue()


_FIELD = st.text(alphabet=st.sampled_from(list('ab ,"\n\r\t;x')), max_size=8)


@given(
    records=st.lists(st.lists(_FIELD, min_size=2, max_size=2), min_size=1, max_size=25),
    quoting=st.sampled_from([0, 1, 2, 3]),  # csv.QUOTE_MINIMAL, ALL, NONNUMERIC, NONE
    data=st.data(),
)
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_csv_random_quoting_every_record_is_a_row_or_a_dead_letter(
    tmp_path: Path, records: list[list[str]], quoting: int, data: st.DataObject
) -> None:
    import csv

    n = len(records)
    if quoting == csv.QUOTE_NONE:
        # without quotes, fields cannot hold the delimiter, quotes or newlines
        records = [[f.translate({ord(c): "_" for c in ',"\n\r'}) for f in r] for r in records]
    stray = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    broken = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    text = _csv_text(records, quoting if quoting != csv.QUOTE_NONE else csv.QUOTE_NONE,
                     stray, broken)
    path = tmp_path / f"r{abs(hash(text))}.csv"
    path.write_text(text)
    source = ti.sources.CSV(path)
    _, sink, dead = anyio.run(run, source)
    assert len(sink.events) + len(dead.events) == n, (text, dead_letter_reasons(dead))
    kept = {e.id for e in sink.events}
    for i, (fields, s, b) in enumerate(zip(records, stray, broken, strict=True)):
        if not s and not b:
            assert str(i) in kept
            payload = next(e.payload for e in sink.events if e.id == str(i))
            assert [payload["a"], payload["b"]] == fields


# -- rotation in follow mode (issue 12, defect 4) -------------------------------------


async def _until(condition: Any, what: str) -> None:
    with anyio.fail_after(20):
        while not condition():  # noqa: ASYNC110 -- polls state the pipeline updates
            await anyio.sleep(0.005)


def _append(path: Path, start: int, n: int) -> int:
    with path.open("ab") as f:
        f.write("".join(json.dumps({"id": str(i), "pad": "x" * 40}) + "\n"
                        for i in range(start, start + n)).encode())
    return start + n


@pytest.mark.parametrize("style", ["copytruncate", "rename"])
async def test_follow_rotation_under_load_loses_and_repeats_nothing(
    tmp_path: Path, style: str
) -> None:
    # regression: copy-truncate refilled past the old offset skipped lines; rename +
    # recreate lost what was still appended to the old file
    data = tmp_path / "app.log"
    data.touch()
    sink = ti.sinks.Memory()
    source = ti.sources.JsonLines(data, follow=True, poll_interval=0.005,
                                  checkpoint=tmp_path / "app.checkpoint")
    pipeline = ti.Pipeline(source, sink=sink, dead_letter=ti.sinks.Memory(), capacity=64,
                           max_batch=16)
    written = 0
    async with anyio.create_task_group() as tg:
        handle = await tg.start(pipeline.serve)
        # a reader at byte 0 cannot tell a truncated file from a new one: start it first
        written = _append(data, written, 25)
        await _until(lambda: len(sink.events) > 0, "the first line")
        for rotation in range(4):
            for _ in range(10):  # the writer keeps writing while the reader is behind
                written = _append(data, written, 25)
                await anyio.lowlevel.checkpoint()
            if style == "copytruncate":
                # refilled past the old offset before the reader polls again
                (tmp_path / f"app.log.{rotation + 1}").write_bytes(data.read_bytes())
                with data.open("r+b") as f:
                    f.truncate(0)
                first_new = written
                written = _append(data, written, 300)
            else:
                data.rename(tmp_path / f"app.log.{rotation + 1}")
                # the writer still appends to the renamed file before it reopens
                written = _append(tmp_path / f"app.log.{rotation + 1}", written, 30)
                data.touch()
                first_new = written
                written = _append(data, written, 100)
            # one rotation at a time: the reader is on the new file before the next one
            target = str(first_new)
            await _until(lambda: any(e.id == target for e in sink.events),  # noqa: B023
                         "the new file read")
        with contextlib.suppress(TimeoutError):
            await _until(lambda: len(sink.events) >= written, "every line")
        got = {int(e.id) for e in sink.events}
        missing = sorted(set(range(written)) - got)
        assert not missing, (missing[:5], missing[-5:], len(missing), written)
        report = await handle.stop(10)
    ti.testing.assert_accounted(report)
    ids = [e.id for e in sink.events]
    assert sorted(ids, key=int) == [str(i) for i in range(written)]


async def test_copy_truncate_between_a_read_and_its_position_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # regression (a CI run lost 438 lines): the file was copied, truncated and refilled
    # after a read's last check, while the digests of its new position were taken, so the
    # position's head and tail belonged to different contents; no copy matched it later
    # and the copy's unread lines were skipped
    import trio_ingest.sources._files as files_module

    data = tmp_path / "app.log"
    written = _append(data, 0, 100)
    armed = rotated = False
    real_tail = files_module.tail_digest
    real_position = files_module.JsonLines._position

    def arming_position(self: Any, inp: Any, offset: int, line: int, known: Any = None) -> Any:
        nonlocal armed
        armed = offset > 2000 and not rotated  # a read past the first: its head comes first
        return real_position(self, inp, offset, line, known)

    def rotating_tail(stream: Any, offset: int) -> str:
        nonlocal armed, rotated, written
        if armed:
            armed, rotated = False, True
            written = _append(data, written, 50)
            (tmp_path / "app.log.1").write_bytes(data.read_bytes())
            with data.open("r+b") as f:
                f.truncate(0)
            written = _append(data, written, 200)  # refilled past the old offset
        return real_tail(stream, offset)

    monkeypatch.setattr(files_module.JsonLines, "_position", arming_position)
    monkeypatch.setattr(files_module, "tail_digest", rotating_tail)
    source = ti.sources.JsonLines(data, follow=True, poll_interval=0.005)
    sink = ti.sinks.Memory()
    pipeline = ti.Pipeline(source, sink=sink, dead_letter=ti.sinks.Memory(), max_batch=16)
    async with anyio.create_task_group() as tg:
        handle = await tg.start(pipeline.serve)
        with contextlib.suppress(TimeoutError):
            await _until(lambda: len(sink.events) >= written, "every line")
        await handle.stop(5)
    assert rotated
    assert sorted({int(e.id) for e in sink.events}) == list(range(written))


async def test_restart_after_a_rotation_with_events_in_flight_resumes_the_right_file(
    tmp_path: Path,
) -> None:
    # regression: the commit after a rename stored the old offset under the new file's
    # fingerprint, and a restart resumed inside the new file (lines lost)
    data = tmp_path / "app.log"
    checkpoint = tmp_path / "app.checkpoint"
    written = _append(data, 0, 200)
    seen: list[str] = []

    class Slow(ti.sinks.Memory):
        async def write_batch(self, events: list[ti.Event]) -> None:
            await super().write_batch(events)
            seen.extend(e.id for e in events)
            await anyio.sleep(0.002)  # a slow database: events stay in flight

    sink = Slow()
    source = ti.sources.JsonLines(data, follow=True, poll_interval=0.005,
                                  checkpoint=checkpoint, commit_interval=0)
    async with anyio.create_task_group() as tg:
        handle = await tg.start(ti.Pipeline(source, sink=sink, capacity=32, max_batch=8,
                                            dead_letter=ti.sinks.Memory()).serve)
        await _until(lambda: len(seen) >= 20, "some lines")
        data.rename(tmp_path / "app.log.1")
        data.touch()
        written = _append(data, written, 200)
        await _until(lambda: source.position > 0 and source._generation > 0, "the switch")
        tg.cancel_scope.cancel()  # a crash: whatever is in flight stays uncommitted
    stored = read_checkpoint(checkpoint)
    assert stored is not None
    second = ti.sinks.Memory()
    source2 = ti.sources.JsonLines(data, follow=True, poll_interval=0.005,
                                   checkpoint=checkpoint)
    async with anyio.create_task_group() as tg:
        handle = await tg.start(ti.Pipeline(source2, sink=second,
                                            dead_letter=ti.sinks.Memory()).serve)
        await _until(lambda: set(seen) | {e.id for e in second.events} >= {
            str(i) for i in range(written)}, "every line after the restart")
        await handle.stop(5)
    assert set(seen) | {e.id for e in second.events} == {str(i) for i in range(written)}


# -- compressed input, checkpoints tied to a destination ------------------------------


async def test_gzip_input_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    import gzip

    data = tmp_path / "in.log"  # no extension: the content says gzip
    with gzip.open(data, "wt") as f:
        f.write("".join(json.dumps({"id": str(i)}) + "\n" for i in range(3000)))
    checkpoint = tmp_path / "in.checkpoint"
    write_checkpoint(checkpoint, checkpoint_of(data, 0, 0))
    source = ti.sources.JsonLines(data, checkpoint=checkpoint)
    _, sink, _ = await run(source, max_batch=100)
    assert source.compression == "gzip" and len(sink.events) == 3000
    stored = read_checkpoint(checkpoint)
    assert stored is not None and stored["line"] == 3000
    # resume in the middle: seek forward through the decompressed stream
    offset = sum(len(json.dumps({"id": str(i)})) + 1 for i in range(1000))
    write_checkpoint(checkpoint, checkpoint_of(data, offset, 1000))
    _, sink, _ = await run(ti.sources.JsonLines(data, checkpoint=checkpoint))
    assert [e.id for e in sink.events] == [str(i) for i in range(1000, 3000)]
    with pytest.raises(ti.SourceError, match="only a plain file can be followed"):
        await run(ti.sources.JsonLines(data, follow=True))


async def test_a_checkpoint_of_another_destination_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    write_lines(data, [json.dumps({"id": str(i)}) for i in range(10)])
    checkpoint = tmp_path / "in.checkpoint"
    await run(ti.sources.JsonLines(data, checkpoint=checkpoint, destination="db:a"))
    with pytest.raises(ti.SourceError, match="belongs to destination 'db:a', not 'db:b'"):
        await run(ti.sources.JsonLines(data, checkpoint=checkpoint, destination="db:b"))
    other = tmp_path / "other.jsonl"
    write_lines(other, [json.dumps({"id": str(i)}) for i in range(10)])
    with pytest.raises(ti.SourceError, match="belongs to file"):
        await run(ti.sources.JsonLines(other, checkpoint=checkpoint, destination="db:a"))


def test_stdin_cannot_be_checkpointed_or_followed(tmp_path: Path) -> None:
    with pytest.raises(ti.ConfigError, match="'checkpoint' must be None when reading stdin"):
        ti.sources.JsonLines("-", checkpoint=tmp_path / "c")
    with pytest.raises(ti.ConfigError, match="'follow' must be False when reading stdin"):
        ti.sources.CSV("-", follow=True)
