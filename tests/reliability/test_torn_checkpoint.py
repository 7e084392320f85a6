"""Scenario 2, torn checkpoint: a crash while the checkpoint is being written.

The checkpoint writer writes a temporary file, fsyncs it, renames it over the
checkpoint and fsyncs the directory. A failure or a crash at any of those
steps must leave the previous checkpoint whole, and the restart must resume
exactly from it (its first delivery is the line right after it).

In process: ``os.fsync`` of the temporary file or ``os.replace`` fails (EIO)
from the N-th checkpoint on; the run stops with a clear ``SourceError``, the
checkpoint file holds the last complete checkpoint and no temporary file is
left. In a subprocess: the program SIGKILLs itself inside its N-th
checkpoint write, after the rename was prepared (complete temporary file) or
with a half-written temporary file; the stale temporary file stays behind
and must not disturb the restart.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import trio_ingest as ti
from trio_ingest.sources._files import read_checkpoint
from trio_ingest.testing import sqlite_ids

from ._crash import PROGRAMS, IngestJob, finish


@contextlib.contextmanager
def failing_checkpoints(
    checkpoint: Path, where: str, from_write: int, error: int = errno.EIO
) -> Iterator[dict[str, Any]]:
    """Make every checkpoint write from the ``from_write``-th on fail at ``where``.

    Yields a dict that receives ``"before"``: the checkpoint's content just
    before the first failing write (the last complete one).
    """
    seen: dict[str, Any] = {"writes": 0, "before": None}
    real_replace, real_fsync = os.replace, os.fsync

    def failing() -> bool:
        return seen["writes"] >= from_write

    def replace(src: Any, dst: Any) -> None:
        if os.fspath(dst) == os.fspath(checkpoint):
            seen["writes"] += 1
            if where == "replace" and failing():
                if seen["before"] is None:
                    seen["before"] = read_checkpoint(checkpoint)
                raise OSError(error, os.strerror(error))
        real_replace(src, dst)

    def fsync(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if where == "fsync" and path.endswith(".tmp") and Path(path).parent == checkpoint.parent:
            if seen["writes"] + 1 >= from_write:
                if seen["before"] is None:
                    seen["before"] = read_checkpoint(checkpoint)
                seen["writes"] += 1
                raise OSError(error, os.strerror(error))
        real_fsync(fd)

    os.replace = replace  # type: ignore[assignment]
    os.fsync = fsync  # type: ignore[assignment]
    try:
        yield seen
    finally:
        os.replace = real_replace
        os.fsync = real_fsync


class FirstIds(ti.Sink):
    """Remembers the ids in order of delivery, in front of the real sink."""

    def __init__(self, inner: ti.Sink) -> None:
        super().__init__(name="first_ids")
        self.inner = inner
        self.ids: list[str] = []

    async def open(self) -> None:
        await self.inner.open()

    async def write_batch(self, events: Any) -> None:
        await self.inner.write_batch(events)
        self.ids += [e.id for e in events]

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _load(job: IngestJob, batch: int = 20) -> tuple[ti.RunReport, FirstIds]:
    sink = FirstIds(ti.sinks.SQLite(job.db, "events"))
    pipeline = ti.Pipeline(
        ti.sources.JsonLines(job.input, checkpoint=job.checkpoint, commit_interval=0),
        sink=sink,
        dead_letter=ti.sinks.JsonLines(job.dead),
        capacity=batch * 2,
        max_batch=batch,
    )
    return await pipeline.run(), sink


def run_torn_in_process(
    workdir: Path, *, where: str, from_write: int = 5, lines: int = 2_000,
    error: int = errno.EIO,
) -> dict[str, Any]:
    """Fail checkpoint writes from the ``from_write``-th on; check the file and the restart."""
    job = IngestJob(workdir, lines, seed=from_write, bad_share=0.0)
    with failing_checkpoints(job.checkpoint, where, from_write, error) as seen:
        with pytest.raises(ti.SourceError, match="cannot write checkpoint") as caught:
            anyio.run(_load, job, backend="trio")
    assert os.strerror(error) in str(caught.value)
    before = seen["before"]
    assert before is not None, "no checkpoint write failed"
    assert read_checkpoint(job.checkpoint) == before, "the last complete checkpoint changed"
    leftovers = [p.name for p in workdir.iterdir() if p.name.endswith(".tmp")]
    assert not leftovers, leftovers
    stored = set(sqlite_ids(job.db, "events"))
    report, sink = anyio.run(_load, job, backend="trio")
    line = int(before["line"])
    assert sink.ids[0] == f"e{line}", "the restart resumes right after the last checkpoint"
    assert report.completed
    verdict = job.verdict()
    verdict.assert_ok()
    return {"events": lines, "failed_from_write": from_write, "resumed_at_line": line,
            "stored_before_restart": len(stored),
            "redelivered": len(stored & set(sink.ids)), **verdict.figures()}


def run_torn_by_kill(
    workdir: Path, *, where: str, kill_at: int = 4, lines: int = 2_000
) -> dict[str, Any]:
    """SIGKILL inside the ``kill_at``-th checkpoint write; restart with ``trio-ingest run``."""
    with IngestJob(workdir, lines, seed=kill_at) as job:
        commits = workdir / "commits.log"
        done = subprocess.run(
            [sys.executable, os.fspath(PROGRAMS), "torn", "--input", os.fspath(job.input),
             "--db", os.fspath(job.db), "--checkpoint", os.fspath(job.checkpoint),
             "--dead", os.fspath(job.dead), "--log", os.fspath(job.log),
             "--commits", os.fspath(commits), "--kill-at", str(kill_at), "--where", where],
            capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == -9, f"not killed mid-checkpoint: {done.returncode} {done.stderr}"
        complete = [int(x) for x in commits.read_text().split()] if commits.exists() else []
        assert len(complete) == kill_at - 1
        data = read_checkpoint(job.checkpoint)  # whole: it parses
        assert data is not None and data["offset"] == complete[-1]
        stale = [p for p in workdir.iterdir() if p.name.endswith(".tmp")]
        assert len(stale) == 1, "the crash left its temporary file"
        if where == "write":
            with pytest.raises(json.JSONDecodeError):
                json.loads(stale[0].read_text())  # torn indeed
        process = job.start(batch=20)
        code, err = finish(process, job=job)
        assert code == 0, err[-2000:]
        runs = job.runs_in_log()
        assert len(runs) == 2
        line = int(data["line"])
        first = runs[1][0]
        expected_first = next(v for v in job.valid if int(v[1:]) >= line)
        assert first == expected_first, (first, expected_first, line)
        verdict = job.verdict()
        verdict.assert_ok()
        delivered = [i for run in runs for i in run]
        return {"events": lines, "kill_at_write": kill_at, "resumed_at_line": line,
                "duplicates_delivered": len(delivered) - len(set(delivered)),
                **verdict.figures()}


@pytest.mark.parametrize("where", ["fsync", "replace"])
def test_failed_checkpoint_write_keeps_the_last_complete_one(tmp_path: Path, where: str) -> None:
    run_torn_in_process(tmp_path, where=where, from_write=4)


@pytest.mark.parametrize("where", ["fsync", "replace"])
def test_failed_first_checkpoint_write_restarts_from_the_beginning(
    tmp_path: Path, where: str
) -> None:
    job = IngestJob(tmp_path, 500, bad_share=0.0)
    with failing_checkpoints(job.checkpoint, where, 1) as seen:
        with pytest.raises(ti.SourceError, match="cannot write checkpoint"):
            anyio.run(_load, job, backend="trio")
    assert seen["writes"] >= 1 and not job.checkpoint.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    _report, sink = anyio.run(_load, job, backend="trio")
    assert sink.ids[0] == "e0"
    job.verdict().assert_ok()


@pytest.mark.parametrize("where", ["replace", "write"])
def test_killed_inside_a_checkpoint_write_resumes_from_the_last_complete_one(
    tmp_path: Path, where: str
) -> None:
    run_torn_by_kill(tmp_path, where=where, kill_at=4)
