"""The crash harness: run a pipeline in a subprocess, SIGKILL it, rerun until done, judge."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, Any

import attrs

from ._oracle import Oracle, Verdict

__all__ = ("CrashReport", "crash_until_done")

_POLL = 0.005  # seconds between two looks at the progress


@attrs.frozen
class CrashReport:
    """What :func:`crash_until_done` saw.

    Attributes:
        verdict: The oracle's verdict on what the runs left behind, all together.
        runs: Processes started (kills + the one that finished).
        kills: Processes SIGKILLed.
        progress_at_kills: The progress figure at each kill.
        last_report: The finishing run's report summary (the child program's
            JSON line; empty for a command of your own that prints none).
        stderr: The finishing run's standard error.
    """

    verdict: Verdict
    runs: int
    kills: int
    progress_at_kills: tuple[int, ...]
    last_report: Mapping[str, Any]
    stderr: str


def crash_until_done(
    target: str | Sequence[str],
    *,
    inputs: Iterable[str],
    rows: Callable[[], Iterable[str]],
    dead: Callable[[], Iterable[str]] = lambda: (),
    kill_at: Sequence[int] | None = None,
    kills: int = 2,
    seed: int = 0,
    jitter: float = 0.02,
    progress: Callable[[], int] | None = None,
    on_kill: Callable[[int], None] | None = None,
    watch: Callable[[subprocess.Popen[bytes]], None] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 60.0,
    filtered: Iterable[str] = (),
) -> CrashReport:
    """Run a pipeline in a subprocess, SIGKILL it at chosen or random points, rerun until done.

    Each run is a fresh process on the same durable state (the checkpoint,
    the database): a restart resumes from what the killed run committed. The
    last run goes to the end; then the oracle compares ``inputs`` with what
    ``rows()`` and ``dead()`` read back::

        result = ti.testing.crash_until_done(
            "myjob.py:build", inputs=ids, rows=lambda: ti.testing.sqlite_ids(db, "events"),
            kills=3, seed=1,
        )
        result.verdict.assert_ok()

    Args:
        target: ``"module:factory"`` / ``"file.py:factory"`` (a function returning
            the ``Pipeline``; run with ``python -m trio_ingest.testing._child``), or
            the argv of a command of your own (``["trio-ingest", "ingest", ...]``).
        inputs: Every id that goes in.
        rows: Reads the ids the sink holds (repeats kept), e.g. :func:`sqlite_ids`.
        dead: Reads the ids the dead-letter sink holds, e.g. :func:`dead_letter_ids`.
        kill_at: Progress figures at which to kill, one per run (chosen points).
        kills: Without ``kill_at``: how many runs to kill, each at a random
            point between 10% and 60% of what is left.
        seed: Seed of the random points and of the jitter.
        jitter: Up to this many seconds (random) between reaching a point and
            the kill, so kills land mid-write, mid-commit, anywhere.
        progress: Reads the progress figure (default: distinct ids in ``rows()``).
        on_kill: Called with the run's number after each kill (to measure
            the state a kill left).
        watch: Called with the running process at every look at it (to
            sample its memory, say).
        env: Environment of the runs (default: this process's).
        cwd: Working directory of the runs.
        timeout: Most seconds a run may take to reach its point or to finish.
        filtered: Ids the pipeline drops on purpose.

    Returns:
        A :class:`CrashReport`; ``result.verdict.assert_ok()`` fails the test.

    Raises:
        RuntimeError: A run failed by itself (nonzero exit status), or a run
            did not reach its point or finish within ``timeout``.
    """
    inputs = list(inputs)
    argv = _argv(target)
    rng = random.Random(seed)
    read_progress = progress if progress is not None else (lambda: len(set(rows())))
    points = list(kill_at) if kill_at is not None else None
    planned = len(points) if points is not None else kills
    at_kills: list[int] = []
    runs = 0
    while True:
        runs += 1
        # files, not pipes: a chatty run never blocks on a full pipe while we poll
        out_file, err_file = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        process = subprocess.Popen(
            argv,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdout=out_file,
            stderr=err_file,
            start_new_session=True,  # the kill reaches its whole group, never ours
        )
        try:
            if len(at_kills) < planned:
                if points is not None:
                    point = points[len(at_kills)]
                else:
                    done = _safe(read_progress)
                    point = done + int((len(set(inputs)) - done) * rng.uniform(0.1, 0.6))
                if _wait_for(process, read_progress, point, timeout, watch):
                    time.sleep(rng.uniform(0, jitter))
                    _kill(process)
                    at_kills.append(_safe(read_progress))
                    if on_kill is not None:
                        on_kill(runs)
                    continue
            _wait_end(process, timeout, watch)
        except BaseException:
            _kill(process)
            raise
        finally:
            out, err = _read(out_file), _read(err_file)
        stderr = err.decode(errors="replace")
        if process.returncode != 0:
            raise RuntimeError(
                f"run {runs} exited with status {process.returncode}: {stderr[-2000:]}"
            )
        break
    verdict = Oracle(inputs, filtered=filtered).verdict(rows(), dead())
    return CrashReport(
        verdict=verdict,
        runs=runs,
        kills=len(at_kills),
        progress_at_kills=tuple(at_kills),
        last_report=_last_json(out),
        stderr=stderr,
    )


def _read(file: IO[bytes]) -> bytes:
    with file:
        file.seek(0)
        return file.read()


def _argv(target: str | Sequence[str]) -> list[str]:
    if isinstance(target, str):
        return [sys.executable, "-m", "trio_ingest.testing._child", target]
    return list(target)


def _safe(read: Callable[[], int]) -> int:
    # the database or file may not exist yet, or be mid-creation
    try:
        return read()
    except (OSError, ValueError, sqlite3.Error):
        return 0


Watch = Callable[[subprocess.Popen[bytes]], None] | None


def _wait_for(
    process: subprocess.Popen[bytes], read: Callable[[], int], point: int, timeout: float,
    watch: Watch,
) -> bool:
    """Wait until the progress reaches ``point``; False when the process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if watch is not None:
            watch(process)
        if _safe(read) >= point:
            return True
        time.sleep(_POLL)
    raise RuntimeError(f"no progress to {point} within {timeout}s")


def _wait_end(process: subprocess.Popen[bytes], timeout: float, watch: Watch) -> None:
    if watch is None:
        process.wait(timeout=timeout)
        return
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        watch(process)
        try:
            process.wait(min(0.05, max(0.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                raise


def _kill(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=60)


def _last_json(out: bytes) -> dict[str, Any]:
    for line in reversed(out.decode(errors="replace").splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return {}
