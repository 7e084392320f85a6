"""Scenario 1, kill -9 mid-run: a checkpointed JSON Lines file into SQLite, SIGKILLed, restarted.

``trio-ingest run`` loads the file in a subprocess; the test kills it with
SIGKILL (through the test kit's crash harness, ``trio_ingest.testing.crash_until_done``)
when a random share of the file has been delivered (plus a random few
milliseconds), restarts it, kills it again, and finally lets it finish.
Then the oracle: lost = 0, one row per distinct id, no unexpected id.

Redeliveries are measured from the delivery log the sink keeps: a restart
re-reads from the last checkpoint, so it may deliver again what was stored
past it. The test checks that redeliveries never exceed what lay past the
checkpoint at each kill (the in-flight window) and reports both.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from trio_ingest.testing import crash_until_done, dead_letter_ids, torn_dead_letter_lines

from ._crash import PROGRAMS, IngestJob


def run_kill9(
    workdir: Path, *, lines: int = 6_000, kills: int = 2, seed: int = 0, batch: int = 50,
    capacity: int = 500, command: str = "run",
) -> dict[str, Any]:
    """Kill a file-to-SQLite load ``kills`` times at random points, then let it finish.

    The kit's crash harness does the killing and rerunning; this adds what only
    this scenario measures: the in-flight window at each kill, and redeliveries.
    """
    with IngestJob(workdir, lines, seed=seed) as job:
        windows: list[int] = []
        if command == "run":
            argv = [sys.executable, "-m", "trio_ingest", "run", "--quiet",
                    f"{os.fspath(PROGRAMS)}:file_to_sqlite"]
            env = job.env(batch=batch, capacity=capacity)
            progress = lambda: len(set(job.delivered_log()))  # noqa: E731
        else:
            argv, env = job.ingest_argv(batch=batch), None
            progress = lambda: len(job.rows())  # noqa: E731
        result = crash_until_done(
            argv, inputs=[*job.valid, *job.rejects], rows=job.rows,
            dead=lambda: dead_letter_ids(job.dead), kills=kills, seed=seed, jitter=0.03,
            progress=progress, on_kill=lambda _run: windows.append(job.beyond_checkpoint()),
            watch=job.sample, env=env, timeout=120.0,
        )
        verdict = result.verdict
        verdict.assert_ok()
        rows = job.rows()
        assert len(rows) == len(set(rows)) == len(job.valid), "one row per distinct id"
        offset, _line = job.checkpoint_state()
        assert offset == job.size, "the final checkpoint is at the end of the file"
        figures: dict[str, Any] = {
            "events": lines,
            "kills": result.kills,
            "runs": result.runs,
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
