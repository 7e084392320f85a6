"""Driving ``trio-ingest`` subprocesses for the crash scenarios: files, runs, kills, reads.

An :class:`IngestJob` is one input file with its database, checkpoint,
dead-letter file and delivery log in a work directory; ``start()`` launches
``trio-ingest run tests/reliability/_programs.py:file_to_sqlite`` on it (or
``trio-ingest ingest``), and the helpers read back what a run left behind.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trio_ingest.sources._files import read_checkpoint
from trio_ingest.testing import Verdict, check, dead_letter_ids, sqlite_ids

PROGRAMS = Path(__file__).with_name("_programs.py")


class IngestJob:
    """A JSON Lines file of ``lines`` records (some malformed) and where its runs write."""

    def __init__(
        self, workdir: Path, lines: int, *, seed: int = 0, bad_share: float = 0.01,
        payload_bytes: int = 100,
    ) -> None:
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.input = workdir / "input.jsonl"
        self.db = workdir / "out.sqlite"
        self.checkpoint = workdir / "input.checkpoint"
        self.dead = workdir / "dead.jsonl"
        self.log = workdir / "delivered.log"
        rng = random.Random(seed)
        self.valid: list[str] = []
        self.rejects: list[str] = []
        pad = "p" * payload_bytes
        with open(self.input, "w", encoding="utf-8") as f:
            for i in range(lines):
                if rng.random() < bad_share:
                    f.write('{"id": "broken", \n')
                    self.rejects.append(f"{os.fspath(self.input)}:{i + 1}")
                else:
                    f.write(json.dumps({"id": f"e{i}", "n": i, "pad": pad}) + "\n")
                    self.valid.append(f"e{i}")
        self.size = self.input.stat().st_size
        self.processes: list[subprocess.Popen[bytes]] = []
        #: Highest VmHWM (KB) seen in any run of this job, sampled while waiting on it.
        self.peak_rss_kb = 0

    def __enter__(self) -> IngestJob:
        return self

    def __exit__(self, *exc_info: object) -> None:
        # a failed assertion must not leave a load running: kill what is left
        for process in self.processes:
            if process.poll() is None:
                kill9(process)

    # -- running ------------------------------------------------------------------
    def env(self, **extra: Any) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "RELIABILITY_INPUT": os.fspath(self.input),
                "RELIABILITY_DB": os.fspath(self.db),
                "RELIABILITY_CHECKPOINT": os.fspath(self.checkpoint),
                "RELIABILITY_DEAD": os.fspath(self.dead),
                "RELIABILITY_LOG": os.fspath(self.log),
            }
        )
        env.update({f"RELIABILITY_{k.upper()}": str(v) for k, v in extra.items()})
        return env

    def start(self, **extra: Any) -> subprocess.Popen[bytes]:
        """Launch ``trio-ingest run _programs.py:file_to_sqlite`` on this job."""
        return self._track(subprocess.Popen(
            [sys.executable, "-m", "trio_ingest", "run", "--quiet",
             f"{os.fspath(PROGRAMS)}:file_to_sqlite"],
            env=self.env(**extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a signal to the test's group never reaches it
        ))

    def _track(self, process: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        self.processes.append(process)
        return process

    def sample(self, process: subprocess.Popen[bytes]) -> None:
        """Note the process's peak RSS so far (VmHWM), if it is still there."""
        try:
            with open(f"/proc/{process.pid}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        self.peak_rss_kb = max(self.peak_rss_kb, int(line.split()[1]))
        except OSError:
            pass

    def ingest_argv(self, *, batch: int = 50, shutdown: float = 10.0) -> list[str]:
        """The end-user command ``trio-ingest ingest FILE --sqlite DB --table T`` on this job."""
        return [sys.executable, "-m", "trio_ingest", "ingest", os.fspath(self.input),
                "--sqlite", os.fspath(self.db), "--table", "events",
                "--checkpoint", os.fspath(self.checkpoint), "--dead-letters",
                os.fspath(self.dead), "--batch-size", str(batch), "--capacity", str(batch * 10),
                "--shutdown-timeout", str(shutdown), "--quiet"]

    def start_ingest(self, *, batch: int = 50, shutdown: float = 10.0) -> subprocess.Popen[bytes]:
        """Launch :meth:`ingest_argv`."""
        return self._track(subprocess.Popen(
            self.ingest_argv(batch=batch, shutdown=shutdown),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        ))

    # -- reading back ------------------------------------------------------------
    def delivered_log(self) -> list[str]:
        """Ids in the delivery log (run markers left out)."""
        if not self.log.exists():
            return []
        lines = self.log.read_text(encoding="utf-8").splitlines()
        return [x for x in lines if x and not x.startswith("---")]

    def runs_in_log(self) -> list[list[str]]:
        """The delivery log split per run."""
        runs: list[list[str]] = []
        if self.log.exists():
            for x in self.log.read_text(encoding="utf-8").splitlines():
                if x.startswith("---"):
                    runs.append([])
                elif x and runs:
                    runs[-1].append(x)
        return runs

    def checkpoint_state(self) -> tuple[int, int]:
        """(byte offset, lines) of the checkpoint; (0, 0) when there is none."""
        data = read_checkpoint(self.checkpoint)
        if data is None:
            return 0, 0
        return int(data["offset"]), int(data.get("line", 0))

    def rows(self) -> list[str]:
        return sqlite_ids(self.db, "events")

    def beyond_checkpoint(self) -> int:
        """Stored ids at or past the checkpoint: what a restart will deliver again."""
        _offset, line = self.checkpoint_state()
        stored = set(self.rows())
        return sum(1 for i in range(line, len(self.valid) + len(self.rejects))
                   if f"e{i}" in stored)

    def verdict(self) -> Verdict:
        return check([*self.valid, *self.rejects], self.rows(), dead_letter_ids(self.dead))


def _wait_for(job: IngestJob, process: subprocess.Popen[bytes], count: int, timeout: float,
              what: str, progress: Callable[[], int]) -> bool:
    """Wait until ``progress()`` reaches ``count``; False if the process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        job.sample(process)
        try:
            if progress() >= count:
                return True
        except Exception:  # the file or database may not exist or be mid-creation yet
            pass
        time.sleep(0.01)
    raise AssertionError(f"no progress to {count} {what} within {timeout}s")


def wait_for_log(job: IngestJob, process: subprocess.Popen[bytes], count: int,
                 timeout: float = 120.0) -> bool:
    """Wait until ``count`` ids are in the delivery log; False if the process ended first."""
    return _wait_for(job, process, count, timeout, "deliveries",
                     lambda: len(job.delivered_log()) if job.log.stat().st_size else 0)


def wait_for_rows(job: IngestJob, process: subprocess.Popen[bytes], count: int,
                  timeout: float = 120.0) -> bool:
    """Wait until the table holds ``count`` rows; False if the process ended first."""
    return _wait_for(job, process, count, timeout, "rows", lambda: len(job.rows()))


def kill9(process: subprocess.Popen[bytes], job: IngestJob | None = None) -> None:
    """SIGKILL the process (its whole session) and reap it."""
    if job is not None:
        job.sample(process)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.communicate(timeout=60)


def finish(
    process: subprocess.Popen[bytes], timeout: float = 120.0, job: IngestJob | None = None
) -> tuple[int, str]:
    """Wait for the process (sampling its peak RSS for ``job``); return (exit code, stderr)."""
    deadline = time.monotonic() + timeout
    while job is not None and process.poll() is None and time.monotonic() < deadline:
        job.sample(process)
        try:
            process.wait(0.05)
        except subprocess.TimeoutExpired:
            pass
    try:
        _out, err = process.communicate(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        kill9(process)
        raise
    return process.returncode, err.decode(errors="replace")
