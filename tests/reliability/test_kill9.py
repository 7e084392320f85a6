"""Scenario 1, kill -9 mid-run: a checkpointed JSON Lines file into SQLite, SIGKILLed, restarted.

``trio-ingest run`` loads the file in a subprocess; the test kills it with
SIGKILL when a random share of the file has been delivered (plus a random
few milliseconds), restarts it, kills it again, and finally lets it finish.
Then the oracle: lost = 0, one row per distinct id, no unexpected id.

Redeliveries are measured from the delivery log the sink keeps: a restart
re-reads from the last checkpoint, so it may deliver again what was stored
past it. The test checks that redeliveries never exceed what lay past the
checkpoint at each kill (the in-flight window) and reports both.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest

from ._crash import IngestJob, finish, kill9, wait_for_log, wait_for_rows
from .oracle import torn_dead_letter_lines


def run_kill9(
    workdir: Path, *, lines: int = 6_000, kills: int = 2, seed: int = 0, batch: int = 50,
    capacity: int = 500, command: str = "run",
) -> dict[str, Any]:
    """Kill a file-to-SQLite load ``kills`` times at random points, then let it finish."""
    with IngestJob(workdir, lines, seed=seed) as job:
        return _kill_and_restart(job, lines, kills, random.Random(seed), batch, capacity, command)


def _kill_and_restart(
    job: IngestJob, lines: int, kills: int, rng: random.Random, batch: int, capacity: int,
    command: str,
) -> dict[str, Any]:
    windows: list[int] = []
    done_kills = 0
    runs = 0
    while True:
        runs += 1
        assert runs <= kills + 5, "the load never finished"
        if command == "run":
            process = job.start(batch=batch, capacity=capacity)
        else:
            process = job.start_ingest(batch=batch)
        if done_kills < kills:
            stored = len(job.rows()) if command != "run" else len(set(job.delivered_log()))
            target = stored + int((len(job.valid) - stored) * rng.uniform(0.1, 0.6))
            wait = wait_for_log if command == "run" else wait_for_rows
            if wait(job, process, target):
                # a random moment shortly after the target: mid-write, mid-commit, anywhere
                time.sleep(rng.uniform(0, 0.03))
                kill9(process, job)
                done_kills += 1
                windows.append(job.beyond_checkpoint())
                continue
        code, err = finish(process, job=job)
        assert code == 0, f"run {runs} failed with exit code {code}: {err[-2000:]}"
        break
    verdict = job.verdict()
    verdict.assert_ok()
    rows = job.rows()
    assert len(rows) == len(set(rows)) == len(job.valid), "one row per distinct id"
    offset, _line = job.checkpoint_state()
    assert offset == job.size, "the final checkpoint is at the end of the file"
    figures: dict[str, Any] = {
        "events": lines,
        "kills": done_kills,
        "runs": runs,
        **verdict.figures(),
        "torn_dead_letter_lines": torn_dead_letter_lines(job.dead),
        "peak_rss_kb": job.peak_rss_kb,
    }
    if command == "run":
        delivered = job.delivered_log()
        duplicates = len(delivered) - len(set(delivered))
        assert set(delivered) == set(job.valid)
        # a restart redelivers only what lay past the checkpoint when it was killed
        assert duplicates <= sum(windows), (duplicates, windows)
        figures.update(
            {"duplicates_delivered": duplicates, "window_at_kills": windows,
             "max_window": max(windows, default=0)}
        )
    return figures


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill9_mid_run_then_restart_loses_nothing(seed: int, tmp_path: Path) -> None:
    figures = run_kill9(tmp_path, lines=5_000, kills=2, seed=seed)
    assert figures["kills"] >= 1, "the runs finished before any kill: make the file bigger"


def test_kill9_of_the_ingest_command(tmp_path: Path) -> None:
    figures = run_kill9(tmp_path, lines=5_000, kills=1, seed=7, command="ingest")
    assert figures["kills"] == 1
