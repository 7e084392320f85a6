"""The accounting oracle: was anything lost, doubled or invented?

It compares the ids that went *in* against what came *out*: the rows of the
sink (a SQLite table, or a memory sink) plus the dead-letter records (a JSON
Lines file, or a memory sink). Four figures decide a run:

* **lost**: input ids that are neither in the sink nor dead-lettered (must be 0);
* **duplicate rows**: sink rows beyond the first of their id (must be 0 when the
  sink is idempotent, as every built-in database sink is);
* **unexpected**: ids that come out but never went in (must be 0);
* **the accounting invariant** of the run report:
  ``received + expanded == delivered + dead_lettered + filtered + in_flight``.

Dead-letter *files* are append-only, so a dead letter written again after a
crash shows up twice there; that is at-least-once, and counted apart
(``dead_letter_repeats``), not as a duplicate row.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from .._event import DeadLetter
from ..runtime._report import RunReport
from ..sinks._memory import Memory

__all__ = (
    "Oracle",
    "Verdict",
    "check",
    "check_accounting",
    "dead_letter_ids",
    "dead_letter_records",
    "memory_dead_letters",
    "memory_ids",
    "sqlite_ids",
    "torn_dead_letter_lines",
)

_SHOW = 10  # ids shown in a failure message


@attrs.frozen
class Verdict:
    """What the oracle found; ``assert_ok()`` turns it into a test failure.

    Attributes:
        inputs: Distinct ids that went in.
        rows: Sink rows (with repeats).
        dead_letters: Dead-letter records (with repeats).
        lost: Input ids found nowhere.
        duplicate_rows: Sink rows beyond the first of their id.
        unexpected: Ids that came out but never went in.
        dead_letter_repeats: Dead-letter records beyond the first of their id.
        both: Ids both in the sink and dead-lettered (a dead letter that a
            later run delivered after all; allowed, reported).
        balanced: The report's accounting invariant (None: no report given).
        accounting: The invariant's figures as one line, for the failure message.
    """

    inputs: int
    rows: int
    dead_letters: int
    lost: frozenset[str]
    duplicate_rows: int
    unexpected: frozenset[str]
    dead_letter_repeats: int
    both: frozenset[str]
    balanced: bool | None
    accounting: str = ""

    def figures(self) -> dict[str, Any]:
        """The counts, JSON-ready (for the soak runner's results)."""
        return {
            "inputs": self.inputs,
            "rows": self.rows,
            "dead_letters": self.dead_letters,
            "lost": len(self.lost),
            "duplicate_rows": self.duplicate_rows,
            "unexpected": len(self.unexpected),
            "dead_letter_repeats": self.dead_letter_repeats,
            "delivered_and_dead_lettered": len(self.both),
            "balanced": self.balanced,
        }

    def problems(self, *, idempotent: bool = True) -> list[str]:
        """One line per broken promise (empty when the run kept every promise)."""
        out = []
        if self.lost:
            out.append(f"lost {len(self.lost)} id(s): {_sample(self.lost)}")
        if idempotent and self.duplicate_rows:
            out.append(f"{self.duplicate_rows} duplicate row(s) in an idempotent sink")
        if self.unexpected:
            out.append(f"{len(self.unexpected)} unexpected id(s): {_sample(self.unexpected)}")
        if self.balanced is False:
            out.append(f"accounting broken: {self.accounting}")
        return out

    def assert_ok(self, *, idempotent: bool = True) -> None:
        """Fail with every problem at once, and the figures.

        Raises:
            AssertionError: Something was lost, doubled, invented or unaccounted.
        """
        problems = self.problems(idempotent=idempotent)
        if problems:
            raise AssertionError("; ".join(problems) + f" -- {self.figures()}")


def _sample(ids: Iterable[str]) -> str:
    shown = sorted(ids)[:_SHOW]
    return ", ".join(map(repr, shown)) + (" ..." if len(shown) == _SHOW else "")


def check(
    inputs: Iterable[str],
    rows: Iterable[str],
    dead: Iterable[str] = (),
    report: RunReport | None = None,
    *,
    filtered: Iterable[str] = (),
) -> Verdict:
    """Compare ``inputs`` with the sink's ``rows`` and the ``dead`` letters.

    Args:
        inputs: Every id that went in (repeats are one id).
        rows: The id of every sink row, repeats included.
        dead: The event id of every dead-letter record, repeats included.
        report: The run's report, for the accounting invariant (optional).
        filtered: Ids a stage dropped on purpose: accounted, not lost.
    """
    expected = set(inputs)
    row_counts = Counter(rows)
    dead_counts = Counter(dead)
    out = set(row_counts) | set(dead_counts)
    balanced = None
    accounting = ""
    if report is not None:
        balanced, accounting = check_accounting(report)
    return Verdict(
        inputs=len(expected),
        rows=sum(row_counts.values()),
        dead_letters=sum(dead_counts.values()),
        lost=frozenset(expected - out - set(filtered)),
        duplicate_rows=sum(c - 1 for c in row_counts.values()),
        unexpected=frozenset(out - expected),
        dead_letter_repeats=sum(c - 1 for c in dead_counts.values()),
        both=frozenset(set(row_counts) & set(dead_counts)),
        balanced=balanced,
        accounting=accounting,
    )


class Oracle:
    """The ids that went in, checked against what came out.

    Make one with the input ids before the run; after it, hand ``verdict()``
    what the sinks and the dead-letter sink hold::

        oracle = ti.testing.Oracle(e.id for e in events)
        report = ti.testing.run_with_mock_clock(pipeline)
        oracle.verdict(
            ti.testing.memory_ids(store), ti.testing.memory_ids(dead), report
        ).assert_ok()

    Args:
        inputs: Every id that goes in (repeats are one id).
        filtered: Ids a stage drops on purpose: accounted, not lost.
    """

    def __init__(self, inputs: Iterable[str], *, filtered: Iterable[str] = ()) -> None:
        self.inputs = frozenset(inputs)
        self.filtered = frozenset(filtered)

    def verdict(
        self,
        rows: Iterable[str],
        dead: Iterable[str] = (),
        report: RunReport | None = None,
    ) -> Verdict:
        """Compare the inputs with the sink's ``rows`` and the ``dead`` letters' ids.

        Args:
            rows: The id of every sink row, repeats included.
            dead: The event id of every dead-letter record, repeats included.
            report: The run's report, for the accounting invariant (optional).
        """
        return check(self.inputs, rows, dead, report, filtered=self.filtered)


def check_accounting(report: RunReport) -> tuple[bool, str]:
    """The report's invariant, and its figures as a line (for messages).

    A completed run must also have nothing in flight.
    """
    line = (
        f"received {report.received} + expanded {report.expanded} vs delivered "
        f"{report.delivered} + dead_lettered {report.dead_lettered} + filtered "
        f"{report.filtered} + in_flight {report.in_flight}"
    )
    ok = report.balanced and (report.in_flight == 0 or not report.completed)
    return ok, line


# -- reading what came out -------------------------------------------------------------


def sqlite_ids(path: str | os.PathLike[str], table: str, column: str = "id") -> list[str]:
    """Every row's id in ``table`` of the SQLite database at ``path`` (repeats kept).

    A missing database or table holds no rows.

    Raises:
        sqlite3.OperationalError: The query fails for another reason (no such column...).
    """
    if not Path(path).exists():
        return []
    connection = sqlite3.connect(f"file:{os.fspath(path)}?mode=ro", uri=True)
    try:
        try:
            cursor = connection.execute(f'SELECT "{column}" FROM "{table}"')
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        return [str(row[0]) for row in cursor]
    finally:
        connection.close()


def dead_letter_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The dead-letter records of a JSON Lines dead-letter file, as dicts.

    Each line is a dead-lettered event as the JSON Lines sink writes it; the
    record (node, error_type, error, attempts, event) is returned whichever
    way it is nested. A torn last line (a crash mid-write) is skipped.

    Raises:
        AssertionError: A whole line is JSON but not a dead-letter record.
    """
    return _read_dead_letters(path)[0]


def torn_dead_letter_lines(path: str | os.PathLike[str]) -> int:
    """Lines of a dead-letter file a crash cut short (their records were written again).

    Raises:
        AssertionError: A whole line is JSON but not a dead-letter record.
    """
    return _read_dead_letters(path)[1]


def _read_dead_letters(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], int]:
    p = Path(path)
    if not p.exists():
        return [], 0
    records = []
    torn = 0
    with open(p, "rb") as f:
        for raw in f:
            line = raw.strip()
            if not line:
                continue
            try:
                value = json.loads(line)
            except ValueError:
                # a write cut short by a kill (the sink starts a fresh line on reopen):
                # never acknowledged, so written again whole
                torn += 1
                continue
            if not raw.endswith(b"\n"):
                torn += 1  # the last line, still being written when the process died
                continue
            records.append(_as_record(value))
    return records, torn


def _as_record(value: Any) -> dict[str, Any]:
    # accept the record itself, or an event whose payload is the record
    if isinstance(value, Mapping) and "error_type" in value and "event" in value:
        return dict(value)
    if isinstance(value, Mapping) and isinstance(value.get("payload"), Mapping):
        payload = value["payload"]
        if "error_type" in payload:
            record = dict(payload)
            record.setdefault("event", {"id": value.get("id")})
            return record
    raise AssertionError(f"not a dead-letter record: {value!r:.200}")


def dead_letter_ids(path: str | os.PathLike[str]) -> list[str]:
    """The event id of every record of a JSON Lines dead-letter file (repeats kept).

    Raises:
        AssertionError: A whole line is JSON but not a dead-letter record.
    """
    return [str(r["event"]["id"]) for r in dead_letter_records(path)]


def memory_ids(sink: Memory) -> list[str]:
    """Ids a memory sink stored (repeats kept unless it is idempotent)."""
    return [e.id for e in sink.events]


def memory_dead_letters(sink: Memory) -> list[DeadLetter]:
    """The dead-letter records a memory dead-letter sink holds.

    Raises:
        AssertionError: An event of ``sink`` is not a :class:`~trio_ingest.DeadLetter`.
    """
    letters = []
    for e in sink.events:
        if not isinstance(e.payload, DeadLetter):
            raise AssertionError(f"not a dead-letter record: {e!r:.200}")
        letters.append(e.payload)
    return letters
