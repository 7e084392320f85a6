"""Scenario 9, graceful stop: SIGTERM to ``trio-ingest run`` with a healthy and a hung sink.

Healthy sink: the command drains what it read, writes it, commits the
checkpoint and exits 0 (a graceful stop that drained, as the CLI documents)
within the shutdown timeout; the restart then delivers nothing a
second time (no duplicate in the delivery log, no repeated dead letter).

Hung sink: every write hangs after a few; SIGTERM starts the graceful stop,
the shutdown deadline cancels what is stuck, and the process exits within
the deadline plus one second. What was in flight was not committed, so the
restart (with a healthy sink) delivers it: lost = 0.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from ._crash import IngestJob, finish, wait_for_log

EXIT_SIGTERM = 128 + signal.SIGTERM


def _sigterm_and_time(job: IngestJob, process: Any) -> tuple[int, float, str]:
    job.sample(process)
    sent = time.monotonic()
    os.kill(process.pid, signal.SIGTERM)
    code, err = finish(process, timeout=120, job=job)
    return code, time.monotonic() - sent, err


def run_graceful_healthy(
    workdir: Path, *, lines: int = 4_000, rate: float = 4_000, after: int = 600,
    shutdown: float = 10.0,
) -> dict[str, Any]:
    """SIGTERM a rate-limited load mid-run; restart; no event may be delivered twice."""
    with IngestJob(workdir, lines, seed=5) as job:
        return _healthy(job, lines, rate, after, shutdown)


def _healthy(
    job: IngestJob, lines: int, rate: float, after: int, shutdown: float
) -> dict[str, Any]:
    process = job.start(rate=rate, shutdown=shutdown, batch=50)
    assert wait_for_log(job, process, after), "the load ended before the signal"
    code, took, err = _sigterm_and_time(job, process)
    assert code == 0, f"exit code {code}: {err[-2000:]}"
    assert took <= shutdown, f"graceful stop took {took:.2f}s > shutdown timeout {shutdown}s"
    first = set(job.delivered_log())
    _offset, line = job.checkpoint_state()
    assert job.beyond_checkpoint() == 0, "a graceful stop commits everything it wrote"
    restart = job.start(shutdown=shutdown, batch=50)
    code, err = finish(restart, job=job)
    assert code == 0, err[-2000:]
    runs = job.runs_in_log()
    assert len(runs) == 2
    again = set(runs[0]) & set(runs[1])
    assert not again, f"{len(again)} event(s) delivered twice after a graceful stop"
    verdict = job.verdict()
    verdict.assert_ok()
    assert verdict.dead_letter_repeats == 0
    return {"events": lines, "stopped_after": len(first), "checkpoint_line": line,
            "stop_seconds": took, "duplicates_delivered": len(again),
            "peak_rss_kb": job.peak_rss_kb, **verdict.figures()}


def run_graceful_hung(
    workdir: Path, *, lines: int = 4_000, good_writes: int = 5, shutdown: float = 2.0,
) -> dict[str, Any]:
    """SIGTERM a load whose sink hangs; it must exit by the deadline + 1 s and lose nothing."""
    with IngestJob(workdir, lines, seed=6) as job:
        return _hung(job, lines, good_writes, shutdown)


def _hung(job: IngestJob, lines: int, good_writes: int, shutdown: float) -> dict[str, Any]:
    process = job.start(hang_after=good_writes, shutdown=shutdown, batch=50)
    assert wait_for_log(job, process, good_writes), "the sink never wrote"
    time.sleep(0.5)  # let the sink hang and the pipeline fill up behind it
    assert process.poll() is None
    code, took, err = _sigterm_and_time(job, process)
    assert code == EXIT_SIGTERM, f"exit code {code}: {err[-2000:]}"
    assert took <= shutdown + 1.0, f"exit took {took:.2f}s > shutdown {shutdown}s + 1s"
    stuck = len(job.valid) - len(set(job.rows()))
    restart = job.start(shutdown=10.0, batch=50)
    code, err = finish(restart, job=job)
    assert code == 0, err[-2000:]
    verdict = job.verdict()
    verdict.assert_ok()
    return {"events": lines, "stop_seconds": took, "shutdown_timeout": shutdown,
            "undelivered_at_stop": stuck, "peak_rss_kb": job.peak_rss_kb, **verdict.figures()}


def test_sigterm_with_a_healthy_sink_drains_and_restart_redelivers_nothing(
    tmp_path: Path,
) -> None:
    run_graceful_healthy(tmp_path)


@pytest.mark.parametrize("shutdown", [2.0])
def test_sigterm_with_a_hung_sink_exits_by_the_deadline_and_loses_nothing(
    tmp_path: Path, shutdown: float
) -> None:
    figures = run_graceful_hung(tmp_path, shutdown=shutdown)
    assert figures["stop_seconds"] >= shutdown * 0.9  # it did wait for the drain first
