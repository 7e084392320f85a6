"""Scenario 11, disk full and write errors: ENOSPC / EIO under the sink, the checkpoint, the DLQ.

Whatever fails (the sink's writes, a real SQLite database that is full, the
checkpoint file, the dead-letter file) the pipeline must stop acknowledging
and exit with a clear error, never dead-letter good events because the disk
is full, and never have committed an offset past what was durably written:
every line before the checkpoint is in the table or the dead-letter file.
A restart on a healthy disk then loses nothing.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

import trio_ingest as ti
from trio_ingest.testing import dead_letter_ids

from ._crash import IngestJob
from .test_torn_checkpoint import failing_checkpoints


class BrokenDisk(ti.Sink):
    """Wraps a sink; after ``good`` writes every write raises ``OSError(code)``."""

    def __init__(self, inner: ti.Sink, code: int, good: int) -> None:
        super().__init__(name=inner.name)
        self.inner = inner
        self.code = code
        self.good = good
        self.writes = 0

    async def open(self) -> None:
        await self.inner.open()

    async def write_batch(self, events: Sequence[ti.Event]) -> None:
        self.writes += 1
        if self.writes > self.good:
            raise OSError(self.code, os.strerror(self.code))
        await self.inner.write_batch(events)

    async def aclose(self) -> None:
        await self.inner.aclose()


class FullSQLite(ti.sinks.SQLite):
    """The real SQLite sink on a database capped at ``pages`` pages: SQLite reports it full."""

    def __init__(self, *args: Any, pages: int, **options: Any) -> None:
        super().__init__(*args, **options)
        self.pages = pages

    async def open(self) -> None:
        await super().open()
        assert self._conn is not None
        current = self._conn.execute("PRAGMA page_count").fetchone()[0]
        self._conn.execute(f"PRAGMA max_page_count={current + self.pages}")


def _pipeline(job: IngestJob, sink: ti.Sink, dead: ti.Sink | None = None) -> ti.Pipeline:
    return ti.Pipeline(
        ti.sources.JsonLines(job.input, checkpoint=job.checkpoint, commit_interval=0),
        sink=sink,
        dead_letter=dead if dead is not None else ti.sinks.JsonLines(job.dead),
        capacity=100,
        max_batch=25,
    )


def acked_were_written(job: IngestJob) -> int:
    """Check every line before the checkpoint is stored or dead-lettered; return that count."""
    _offset, line = job.checkpoint_state()
    rows = set(job.rows())
    dead = set(dead_letter_ids(job.dead))
    for i in range(line):
        ident = f"e{i}"
        where = f"{os.fspath(job.input)}:{i + 1}"
        assert ident in rows or where in dead, f"line {i + 1} acknowledged, never written"
    return line


def _restart(job: IngestJob) -> dict[str, Any]:
    report = anyio.run(_pipeline(job, ti.sinks.SQLite(job.db, "events")).run, backend="trio")
    assert report.completed
    verdict = job.verdict()
    verdict.assert_ok()
    return verdict.figures()


def run_disk_full(workdir: Path, *, fault: str, lines: int = 3_000) -> dict[str, Any]:
    """Run with ``fault`` (sink_enospc, sink_eio, sqlite_full, checkpoint_enospc,
    dead_letter_enospc), check the failure and what was acknowledged, then restart."""
    job = IngestJob(workdir, lines, seed=11, bad_share=0.02)
    error: type[BaseException] = ti.SinkError
    match = ""
    dead: ti.Sink | None = None
    sink: ti.Sink = ti.sinks.SQLite(job.db, "events")
    if fault in ("sink_enospc", "sink_eio"):
        code = errno.ENOSPC if fault == "sink_enospc" else errno.EIO
        sink = BrokenDisk(ti.sinks.SQLite(job.db, "events"), code, good=20)
        match = errno.errorcode[code]
    elif fault == "sqlite_full":
        sink = FullSQLite(job.db, "events", pages=40)
        match = "SQLITE_FULL"
    elif fault == "dead_letter_enospc":
        dead = BrokenDisk(ti.sinks.JsonLines(job.dead), errno.ENOSPC, good=2)
        error, match = ti.DeadLetterError, "No space left on device"
    if fault == "checkpoint_enospc":
        with failing_checkpoints(job.checkpoint, "fsync", 10, errno.ENOSPC):
            with pytest.raises(ti.SourceError, match="No space left on device") as caught:
                anyio.run(_pipeline(job, sink, dead).run, backend="trio")
    else:
        with pytest.raises(error, match=match) as caught:
            anyio.run(_pipeline(job, sink, dead).run, backend="trio")
    message = str(caught.value)
    stored = len(job.rows())
    acked = acked_were_written(job)
    if fault != "dead_letter_enospc":
        # the disk failing is no reason to dead-letter good events
        assert all(i.startswith(os.fspath(job.input)) for i in dead_letter_ids(job.dead))
    assert 0 < stored < len(job.valid), "the fault should strike mid-run"
    figures = _restart(job)
    return {"fault": fault, "error": type(caught.value).__name__, "message": message[:200],
            "stored_before_restart": stored, "acked_lines": acked, **figures}


@pytest.mark.parametrize(
    "fault", ["sink_enospc", "sink_eio", "sqlite_full", "checkpoint_enospc", "dead_letter_enospc"]
)
def test_disk_errors_stop_the_run_with_nothing_acked_lost(tmp_path: Path, fault: str) -> None:
    run_disk_full(tmp_path, fault=fault)


def test_sqlite_full_is_really_full(tmp_path: Path) -> None:
    # the fault injection itself: a capped database refuses writes as a full disk would
    db = tmp_path / "capped.sqlite"
    sink = FullSQLite(db, "t", pages=2)

    async def main() -> None:
        await sink.open()
        try:
            with pytest.raises(ti.SinkError) as caught:
                for i in range(100):
                    await sink.write_batch([ti.Event(id=str(i), payload="x" * 4000)])
            cause = caught.value.__cause__
            assert isinstance(cause, sqlite3.OperationalError), cause
            assert cause.sqlite_errorname == "SQLITE_FULL"
        finally:
            await sink.aclose()

    anyio.run(main, backend="trio")
