"""Scenario 7, bad input fuzz: hostile lines mixed into a JSON Lines file.

Hypothesis writes files where valid records sit between malformed JSON,
ids of the wrong type, missing, null or empty ids, lines over the size limit,
invalid UTF-8, NUL bytes, stray BOMs, nesting too deep for the parser, blank
lines and CRLF endings. Every line's fate is known in advance; the run must
raise nothing, deliver each valid record under its id, dead-letter each bad
one as ``"<path>:<line>"`` with error type ``MalformedLine``, skip blank lines
(they are not records), and balance: sink + dead letters == records.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trio_ingest as ti
from trio_ingest.testing import (
    check,
    dead_letter_records,
    memory_dead_letters,
    memory_ids,
    sqlite_ids,
)

LIMIT = 4_096  # max_line_bytes of the source under test

# -- lines whose fate is known: (bytes without the line end, kind) ----------------------
# kind: "event" (payload has a unique id), "reject", "blank"

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=10,
)
_no_newline = st.text(max_size=60).map(lambda t: t.replace("\n", " "))

_bad_id_values = st.one_of(
    st.none(),  # null id
    st.just(""),  # empty id
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)

_BOM_LINE = b'\xef\xbb\xbf{"id": "bom"}'
_INVALID_UTF8 = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xe2\x82", b"\x80abc", b"\xf8\x88\x80"]


@st.composite
def bad_line(draw: st.DrawFn) -> bytes:
    kind = draw(
        st.sampled_from(
            ["malformed", "bad_id", "missing_id", "not_object", "huge", "utf8", "nul", "bom",
             "deep"]
        )
    )
    if kind == "malformed":
        # no JSON value can end with ",,": whatever comes before, the line is bad
        return (draw(_no_newline) + ",,").encode("utf-8", "surrogatepass")
    if kind == "bad_id":
        return json.dumps({"id": draw(_bad_id_values), "v": draw(_json_values)}).encode()
    if kind == "missing_id":
        return json.dumps({"ID": "x", "v": draw(_json_values)}).encode()
    if kind == "not_object":
        value = draw(_json_values.filter(lambda v: not isinstance(v, dict)))
        return json.dumps(value).encode()
    if kind == "huge":
        size = draw(st.integers(LIMIT + 1, LIMIT * 3))
        return json.dumps({"id": "huge", "pad": "x" * size}).encode()
    if kind == "utf8":
        return b'{"id": "u' + draw(st.sampled_from(_INVALID_UTF8)) + b'"}'
    if kind == "nul":
        text = json.dumps({"id": "n", "v": draw(_no_newline)}).encode()
        at = draw(st.integers(0, len(text)))
        return text[:at] + b"\x00" + text[at:]
    if kind == "bom":
        return _BOM_LINE  # a BOM anywhere but at the start of the file
    depth = draw(st.integers(2_000, 3_000))
    return b"[" * depth + b"]" * depth


@st.composite
def good_line(draw: st.DrawFn, ident: str | int) -> bytes:
    record: dict[str, Any] = {"v": draw(_json_values)}
    record["id"] = ident
    text = json.dumps(record, ensure_ascii=draw(st.booleans()))
    if draw(st.booleans()):
        text = " " + text + "\t\r"  # whitespace around the object is fine
    return text.encode("utf-8", "surrogatepass")


@st.composite
def jsonl_file(draw: st.DrawFn) -> tuple[list[tuple[bytes, bytes, str]], bool]:
    """Lines as (content, line end, kind) and whether the last line lacks its newline."""
    lines: list[tuple[bytes, bytes, str]] = []
    n = draw(st.integers(1, 40))
    for i in range(n):
        roll = draw(st.integers(0, 9))
        end = draw(st.sampled_from([b"\n", b"\r\n"]))
        if roll < 5:
            ident: str | int = f"v{i}" if draw(st.booleans()) else 10_000 + i
            content = draw(good_line(ident))
            content = _valid_or_reject(content)
            lines.append((content, end, "event" if content else "reject"))
        elif roll < 9:
            lines.append((draw(bad_line()), end, "reject"))
        else:
            lines.append((draw(st.sampled_from([b"", b"   ", b"\t", b"\r"])), end, "blank"))
    if lines[0][0] == _BOM_LINE:
        lines[0] = (_BOM_LINE, lines[0][1], "event")  # a BOM that starts the file is allowed
    unterminated = draw(st.booleans()) and lines[-1][2] != "blank"
    return lines, unterminated


def _valid_or_reject(content: bytes) -> bytes:
    # a lone surrogate in generated text cannot be valid UTF-8: such a line is a reject
    try:
        content.decode("utf-8")
    except UnicodeDecodeError:
        return b""
    return content


def write_file(path: Path, lines: list[tuple[bytes, bytes, str]], unterminated: bool) -> None:
    with open(path, "wb") as f:
        for k, (content, end, kind) in enumerate(lines):
            if kind == "reject" and not content:
                content = b'{"id": "x", ",,'  # the good line that could not be encoded
            last = k == len(lines) - 1
            f.write(content + (b"" if last and unterminated else end))


def expected_outcome(
    path: Path, lines: list[tuple[bytes, bytes, str]]
) -> tuple[set[str], set[str]]:
    """The ids the sink must hold and the dead-letter ids, from the labels alone."""
    events, rejects = set(), set()
    for k, (content, _end, kind) in enumerate(lines, start=1):
        if kind == "event":
            events.add(str(json.loads(content)["id"]))
        elif kind == "reject":
            rejects.add(f"{os.fspath(path)}:{k}")
    return events, rejects


async def _ingest(
    path: Path, max_batch: int
) -> tuple[ti.RunReport, ti.sinks.Memory, ti.sinks.Memory]:
    store = ti.sinks.Memory(idempotent=True)
    dead = ti.sinks.Memory()
    source = ti.sources.JsonLines(path, max_line_bytes=LIMIT)
    pipeline = ti.Pipeline(source, sink=store, dead_letter=dead, max_batch=max_batch, capacity=16)
    report = await pipeline.run()
    return report, store, dead


def _check_run(
    path: Path,
    lines: list[tuple[bytes, bytes, str]],
    report: ti.RunReport,
    rows: list[str],
    letters: list[tuple[str, str, str]],
) -> dict[str, Any]:
    events, rejects = expected_outcome(path, lines)
    verdict = check(events | rejects, rows, [i for i, _t, _e in letters], report)
    verdict.assert_ok()
    assert set(rows) == events, "every valid record delivered under its own id"
    assert {i for i, _t, _e in letters} == rejects, "every bad line dead-lettered, by line"
    assert all(kind == "MalformedLine" and error.startswith("line ") for _i, kind, error in letters)
    records = sum(1 for _c, _e, kind in lines if kind != "blank")
    assert report.received == records == len(rows) + len(letters)
    assert report.completed
    return {**verdict.figures(), "lines": len(lines), "records": records}


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    content=jsonl_file(),
    max_batch=st.integers(1, 64),
    backend=st.sampled_from(["trio", "asyncio"]),
)
def test_hostile_lines_are_dead_lettered_and_the_rest_delivered(
    content: tuple[list[tuple[bytes, bytes, str]], bool], max_batch: int, backend: str
) -> None:
    lines, unterminated = content
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "input.jsonl"
        write_file(path, lines, unterminated)
        report, store, dead = anyio.run(_ingest, path, max_batch, backend=backend)
        letters = [(lt.event.id, lt.error_type, lt.error) for lt in memory_dead_letters(dead)]
        _check_run(path, lines, report, memory_ids(store), letters)


def run_bad_input(
    lines_count: int = 3_000, *, seed: int = 0, workdir: Path, bad_share: float = 0.3
) -> dict[str, Any]:
    """A large file of mixed lines into SQLite with a JSON Lines dead-letter file."""
    rng = random.Random(seed)
    makers = [
        lambda i: b"{" + b"x" * rng.randint(0, 50) + b",,",
        lambda i: json.dumps({"id": rng.choice([None, "", True, 1.5, [1], {}])}).encode(),
        lambda i: json.dumps({"no_id": i}).encode(),
        lambda i: json.dumps([i, "x"]).encode(),
        lambda i: json.dumps({"id": f"big{i}", "pad": "y" * (LIMIT + rng.randint(1, 5000))})
        .encode(),
        lambda i: b'{"id": "u' + rng.choice(_INVALID_UTF8) + b'"}',
        lambda i: b'{"id": "n\x00"}',
        lambda i: b"\xef\xbb\xbf{}",
    ]
    lines: list[tuple[bytes, bytes, str]] = []
    for i in range(lines_count):
        end = rng.choice([b"\n", b"\r\n"])
        if rng.random() < 0.02:
            lines.append((b"  ", end, "blank"))
        elif rng.random() < bad_share:
            lines.append((rng.choice(makers)(i), end, "reject"))
        else:
            payload = {"id": f"v{i}", "text": "é✓" * rng.randint(0, 30), "n": i}
            lines.append((json.dumps(payload, ensure_ascii=False).encode(), end, "event"))
    path = workdir / "input.jsonl"
    write_file(path, lines, unterminated=True)
    db, dlq = workdir / "out.sqlite", workdir / "dead.jsonl"

    async def main() -> ti.RunReport:
        pipeline = ti.Pipeline(
            ti.sources.JsonLines(path, max_line_bytes=LIMIT, checkpoint=workdir / "ckpt.json"),
            sink=ti.sinks.SQLite(db, "events"),
            dead_letter=ti.sinks.JsonLines(dlq),
        )
        return await pipeline.run()

    report = anyio.run(main, backend="trio")
    letters = [
        (str(r["event"]["id"]), str(r["error_type"]), str(r["error"]))
        for r in dead_letter_records(dlq)
    ]
    return _check_run(path, lines, report, sqlite_ids(db, "events"), letters)


@pytest.mark.parametrize("seed", [0, 1])
def test_mixed_file_into_sqlite_with_a_dead_letter_file(seed: int, tmp_path: Path) -> None:
    figures = run_bad_input(1_500, seed=seed, workdir=tmp_path)
    assert figures["dead_letters"] > 100 and figures["rows"] > 500
