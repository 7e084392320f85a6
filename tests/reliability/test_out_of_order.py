"""Scenario 3, out-of-order completion: events finish shuffled; offsets commit only in order.

Eight workers with random delays finish events in a shuffled order. At every
commit, :class:`~._support.RecordingSource` checks that the committed offset
does not pass an unfinished event. The run is then crashed (cancelled at a
random moment) and restarted from the committed offset: nothing before that
offset comes again, every event unfinished at the crash does, and the only
other redeliveries are events that had finished out of order past the
watermark. The same holds with a real checkpointed JSON Lines source into
SQLite.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio
import trio.testing

import trio_ingest as ti
from trio_ingest.testing import check, run_with_mock_clock

from ._crash import IngestJob
from ._support import Ledger, LedgerSink, RecordingSource, make_events


def _shuffler(seed: int, workers: int) -> Any:
    rng = random.Random(seed)

    async def work(payload: dict[str, Any]) -> dict[str, Any]:
        await anyio.sleep(rng.expovariate(1 / 0.01))  # long tails: strong reordering
        return payload

    return ti.map(work, workers=workers, name="shuffle")


def run_out_of_order(
    events: int = 2_000, *, seed: int = 0, workers: int = 8, crash_at: float | None = None
) -> dict[str, Any]:
    """Shuffle completions, crash at ``crash_at`` virtual seconds (random), restart, check."""
    rng = random.Random(seed)
    inputs = make_events(events)
    ledger = Ledger()
    arrival: list[str] = []

    class Arrivals(LedgerSink):
        def _store(self, batch: Any) -> None:
            arrival.extend(e.id for e in batch)
            super()._store(batch)

    crash = crash_at if crash_at is not None else rng.uniform(0.2, 1.0) * events * 0.01 / workers

    async def first_run() -> tuple[RecordingSource, ti.RunReport, list[str]]:
        source = RecordingSource(inputs, ledger, seed=seed, max_read=16)
        pipeline = ti.Pipeline(
            source, _shuffler(seed, workers), sink=Arrivals(ledger, max_batch=8),
            capacity=64, max_batch=8,
        )
        with trio.move_on_after(crash):
            await pipeline.run()
        report = pipeline.report()
        assert report is not None
        return source, report, source.unfinished()

    source, report, unfinished = run_with_mock_clock(first_run)
    assert not source.violations, source.violations[:3]
    assert report.balanced, report.summary()
    committed = source.committed
    read = source.position
    assert committed < read, "crash came after everything was committed: crash earlier"
    assert unfinished, "nothing was in flight at the crash"
    lowest_unfinished = min(int(i[1:]) for i in unfinished)
    assert committed <= lowest_unfinished, (committed, lowest_unfinished)
    inversions = sum(1 for a, b in itertools.pairwise(arrival) if int(a[1:]) > int(b[1:]))
    assert inversions > 0, "completions were not out of order"
    finished_before = set(ledger.durable)
    arrival.clear()

    async def restart() -> tuple[RecordingSource, ti.RunReport]:
        again = RecordingSource(inputs, ledger, start=committed, seed=seed + 1, max_read=16)
        pipeline = ti.Pipeline(
            again, _shuffler(seed + 1, workers), sink=Arrivals(ledger, max_batch=8),
            capacity=64, max_batch=8,
        )
        return again, await pipeline.run()

    again, report2 = run_with_mock_clock(restart)
    assert not again.violations, again.violations[:3]
    redelivered = set(arrival) & {e.id for e in inputs[:read]}
    before_watermark = {e.id for e in inputs[:committed]}
    assert not redelivered & before_watermark, "an event before the committed offset came again"
    assert set(unfinished) <= set(arrival), "an event unfinished at the crash was not redelivered"
    past_watermark_done = redelivered - set(unfinished)
    assert past_watermark_done <= finished_before  # the only other repeats: done out of order
    verdict = check([e.id for e in inputs], list(ledger.durable), [], report2)
    verdict.assert_ok()
    return {
        "events": events,
        "crash_at_virtual_s": crash,
        "read_at_crash": read,
        "committed_at_crash": committed,
        "unfinished_at_crash": len(unfinished),
        "finished_past_watermark": len(past_watermark_done),
        "inversions": inversions,
        "duplicates_delivered": sum(c - 1 for c in ledger.durable.values()),
        **verdict.figures(),
    }


@pytest.mark.parametrize("seed", range(6))
def test_offsets_never_pass_an_unfinished_event_and_restart_redelivers_the_rest(
    seed: int,
) -> None:
    run_out_of_order(1_500, seed=seed)


class _CrashingSQLite(ti.sinks.SQLite):
    """The SQLite sink; after ``crash_after`` writes it cancels ``scope`` (the crash)."""

    def __init__(self, *args: Any, crash_after: int | None, **options: Any) -> None:
        super().__init__(*args, **options)
        self.crash_after = crash_after
        self.scope: anyio.CancelScope | None = None
        self.writes = 0

    async def write_batch(self, events: Any) -> None:
        await super().write_batch(events)
        self.writes += 1
        if self.writes == self.crash_after and self.scope is not None:
            self.scope.cancel()


async def _file_run(job: IngestJob, seed: int, crash_after: int | None) -> ti.RunReport:
    sink = _CrashingSQLite(job.db, "events", max_batch=10, crash_after=crash_after)
    pipeline = ti.Pipeline(
        ti.sources.JsonLines(job.input, checkpoint=job.checkpoint, commit_interval=0),
        _shuffler(seed, 8),
        sink=sink,
        dead_letter=ti.sinks.JsonLines(job.dead),
        capacity=64,
        max_batch=10,
    )
    with anyio.CancelScope() as scope:
        sink.scope = scope
        await pipeline.run()
    report = pipeline.report()
    assert report is not None
    return report


def run_out_of_order_file(workdir: Path, *, lines: int = 1_500, seed: int = 0) -> dict[str, Any]:
    """The same with a real source: the checkpoint never passes a line not yet in SQLite."""
    job = IngestJob(workdir, lines, seed=seed, bad_share=0.02)
    report = anyio.run(_file_run, job, seed, 40, backend="trio")
    assert report.balanced and not report.completed
    _offset, line = job.checkpoint_state()
    rows = set(job.rows())
    assert 0 < len(rows) < len(job.valid)
    missing_before = [i for i in range(line) if f"e{i}" in job.valid and f"e{i}" not in rows]
    assert not missing_before, f"checkpoint at line {line} passed unwritten {missing_before[:5]}"
    past = sum(1 for i in range(line, lines) if f"e{i}" in rows)
    anyio.run(_file_run, job, seed + 1, None, backend="trio")
    verdict = job.verdict()
    verdict.assert_ok()
    return {"events": lines, "checkpoint_line_at_crash": line, "stored_at_crash": len(rows),
            "stored_past_checkpoint": past, **verdict.figures()}


def test_out_of_order_with_a_checkpointed_file_into_sqlite(tmp_path: Path) -> None:
    figures = run_out_of_order_file(tmp_path)
    assert figures["stored_past_checkpoint"] >= 0
