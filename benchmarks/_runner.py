"""Parent side of the worker protocol: start one subprocess per contender, read its figures."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

#: The directory that holds the ``benchmarks`` package; workers start there.
ROOT = Path(__file__).resolve().parent.parent


@attrs.frozen
class Outcome:
    """What one worker process reported: its runs, or why it skipped or failed."""

    contender: str
    n: int
    kwargs: dict[str, Any]
    runs: tuple[dict[str, Any], ...] = ()
    peak_rss: int | None = None
    baseline_rss: int | None = None
    skipped: str | None = None
    error: str | None = None
    wall: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.runs) and self.error is None and self.skipped is None

    @property
    def status(self) -> str:
        if self.error is not None:
            return "error"
        if self.skipped is not None:
            return f"skipped: {self.skipped}"
        return "ok"

    def median(self, key: str) -> float:
        """Median of ``key`` over the runs (NaN when no run has it)."""
        values = [run[key] for run in self.runs if run.get(key) is not None]
        return statistics.median(values) if values else float("nan")

    @property
    def elapsed(self) -> float:
        """Median wall time of the timed runs, seconds."""
        return self.median("elapsed")

    @property
    def rate(self) -> float:
        """Events per second at the median run time (events finished, for lossy runs)."""
        elapsed = self.elapsed
        if not self.runs or not elapsed or elapsed != elapsed:
            return float("nan")
        done = self.median("count") if any("events" in run for run in self.runs) else self.n
        return done / elapsed

    def median_run(self) -> dict[str, Any]:
        """The run whose elapsed time is the median (the lower one for an even count)."""
        ordered = sorted(self.runs, key=lambda run: run["elapsed"])
        return ordered[(len(ordered) - 1) // 2] if ordered else {}


@attrs.define
class Runner:
    """Runs workers, prints one progress line per worker, remembers every failure."""

    timeout: float
    progress: Callable[[str], None]
    errors: list[str] = attrs.Factory(list)

    def measure(
        self,
        scenario: str,
        contender: str,
        n: int,
        *,
        repeat: int = 1,
        warmup: int = 0,
        label: str | None = None,
        **kwargs: Any,
    ) -> Outcome:
        """Run ``contender`` in a fresh subprocess: ``warmup`` events once, then ``repeat``
        timed runs of ``n`` events."""
        shown = label or contender
        with tempfile.TemporaryDirectory(prefix="bench-worker-") as directory:
            result_path = Path(directory) / "result.json"
            command = [
                sys.executable,
                "-m",
                "benchmarks._worker",
                contender,
                f"--n={n}",
                f"--kwargs={json.dumps(kwargs)}",
                f"--repeat={repeat}",
                f"--warmup={warmup}",
                f"--result={result_path}",
            ]
            start = time.perf_counter()
            try:
                completed = subprocess.run(
                    command,
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    timeout=self.timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                outcome = Outcome(
                    contender, n, kwargs, error=f"timed out after {self.timeout:.0f} s"
                )
            else:
                outcome = self._read(contender, n, kwargs, completed, result_path)
            outcome = attrs.evolve(outcome, wall=time.perf_counter() - start)
        if outcome.error is not None:
            self.errors.append(f"{scenario}/{shown} (n={n}): {outcome.error}")
        self.progress(_progress_line(scenario, shown, outcome, repeat))
        return outcome

    def measure_turns(
        self,
        scenario: str,
        contenders: Sequence[tuple[str, str]],
        n: int,
        *,
        rounds: int,
        repeat: int = 1,
        warmup: int = 0,
    ) -> dict[str, list[Outcome]]:
        """Measure each ``(contender, label)`` in ``rounds`` fresh processes, taking turns.

        A ratio of two contenders is only as good as the machine was the same for both:
        a process's own luck (where its heap landed) and the machine's drift (another
        tenant's load) move a single process's median by several percent here, and on
        some machines by a third over a minute. Taking turns puts the contenders of one
        round seconds apart; a ratio taken within each round, then the median over the
        rounds, sees each drift once for both sides. Returns each contender's outcome of
        every round, in order.
        """
        turns: dict[str, list[Outcome]] = {contender: [] for contender, _ in contenders}
        for _ in range(rounds):
            for contender, label in contenders:
                outcome = self.measure(
                    scenario, contender, n, repeat=repeat, warmup=warmup, label=label
                )
                turns[contender].append(outcome)
        return turns

    @staticmethod
    def _read(
        contender: str,
        n: int,
        kwargs: dict[str, Any],
        completed: subprocess.CompletedProcess[str],
        result_path: Path,
    ) -> Outcome:
        if completed.returncode != 0 or not result_path.exists():
            lines = (completed.stderr or completed.stdout or "").strip().splitlines()
            detail = " | ".join(lines[-3:]) or f"exit status {completed.returncode}"
            return Outcome(contender, n, kwargs, error=detail)
        data = json.loads(result_path.read_text())
        if "skipped" in data:
            return Outcome(contender, n, kwargs, skipped=data["skipped"])
        runs = tuple(data["runs"])
        bad = [run for run in runs if run.get("count") is not None and _expects_all(run)]
        wrong = [run["count"] for run in bad if run["count"] != n]
        if wrong:
            return Outcome(
                contender, n, kwargs, runs=runs, error=f"counted {wrong[0]} results, expected {n}"
            )
        return Outcome(
            contender,
            n,
            kwargs,
            runs=runs,
            peak_rss=data["peak_rss"],
            baseline_rss=data["baseline_rss"],
        )


def pool(outcomes: list[Outcome]) -> Outcome:
    """One outcome of several processes' runs of one contender (the first failure wins)."""
    first = outcomes[0]
    for outcome in outcomes:
        if not outcome.ok:
            return outcome
    rss = [o.peak_rss for o in outcomes if o.peak_rss is not None]
    return attrs.evolve(
        first,
        runs=tuple(run for o in outcomes for run in o.runs),
        peak_rss=max(rss) if rss else None,
        wall=sum(o.wall for o in outcomes),
    )


def _expects_all(run: dict[str, Any]) -> bool:
    # Time-boxed or lossy runs report how many events they were given.
    return "events" not in run


def _progress_line(scenario: str, label: str, outcome: Outcome, repeat: int) -> str:
    head = f"  {scenario:<13} {label:<40} n={outcome.n:>10,}"
    if outcome.error is not None:
        return f"{head}  ERROR {outcome.error[:120]}"
    if outcome.skipped is not None:
        return f"{head}  skipped ({outcome.skipped})"
    return (
        f"{head}  x{repeat}  {outcome.rate:>12,.0f} ev/s  median {outcome.elapsed:8.3f} s"
        f"  [{outcome.wall:6.1f} s wall]"
    )
