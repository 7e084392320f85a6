"""The scenarios: each runs its contenders in subprocesses and returns a table of figures.

Every scenario function's docstring names what it measures and the baseline it is
held against; the report repeats that line above the scenario's table.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

import attrs

from ._runner import Outcome, Runner, pool

MB = 1024 * 1024


@attrs.frozen
class Config:
    """Sizes and repetitions of one suite run (``full`` or ``quick``)."""

    quick: bool
    repeat: int
    #: Fresh processes per contender, taking turns, where a scenario holds ratios (sink_feed).
    rounds: int
    throughput_n: int
    #: Size for the contenders that move one event per hop (they are 20-40x slower).
    per_event_cap: int
    sweep_n: int
    #: Size for max_batch=1 (one event per hop again, 10-20x slower).
    sweep_single_cap: int
    sweep_batches: tuple[int, ...]
    latency_saturation_n: int
    latency_seconds: float
    latency_loads: tuple[float, ...]
    memory_sizes: tuple[int, ...]
    memory_tutorial_cap: int
    memory_sink_delay: float
    backpressure_n: int
    flaky_n: int
    flaky_seeds: tuple[int, ...]
    flaky_time_box: float
    sqlite_n: int
    backends_n: int
    checkpoint_n: int
    timeout: float

    @classmethod
    def full(cls) -> Config:
        return cls(
            quick=False,
            repeat=5,
            rounds=9,
            throughput_n=1_000_000,
            per_event_cap=200_000,
            sweep_n=500_000,
            sweep_single_cap=100_000,
            sweep_batches=(1, 16, 64, 256, 1024),
            latency_saturation_n=500_000,
            latency_seconds=3.0,
            latency_loads=(0.1, 0.5, 0.9),
            memory_sizes=(1_000_000, 10_000_000),
            memory_tutorial_cap=1_000_000,
            memory_sink_delay=0.0005,
            backpressure_n=200_000,
            flaky_n=20_000,
            flaky_seeds=(1, 2, 3),
            flaky_time_box=15.0,
            sqlite_n=200_000,
            backends_n=1_000_000,
            checkpoint_n=300_000,
            timeout=900.0,
        )

    @classmethod
    def smoke(cls) -> Config:
        return cls(
            quick=True,
            repeat=1,
            rounds=1,
            throughput_n=50_000,
            per_event_cap=50_000,
            sweep_n=20_000,
            sweep_single_cap=20_000,
            sweep_batches=(1, 16, 64, 256, 1024),
            latency_saturation_n=20_000,
            latency_seconds=0.5,
            latency_loads=(0.1, 0.5, 0.9),
            memory_sizes=(20_000, 200_000),
            memory_tutorial_cap=100_000,
            memory_sink_delay=0.0005,
            backpressure_n=20_000,
            flaky_n=2_000,
            flaky_seeds=(1,),
            flaky_time_box=4.0,
            sqlite_n=20_000,
            backends_n=50_000,
            checkpoint_n=20_000,
            timeout=120.0,
        )

    def warmup(self, n: int) -> int:
        """Events in the untimed warm-up run before the timed ones."""
        return min(n, 2_000) if self.quick else max(1_000, n // 10)

    def command(self, scenario: str) -> str:
        """The command line that reproduces ``scenario`` alone."""
        quick = " --quick" if self.quick else ""
        return f"python -m benchmarks{quick} --only {scenario}"


@attrs.define
class ScenarioResult:
    """One scenario's table (``columns`` are ``(key, header)`` pairs) and its notes."""

    name: str
    title: str
    measures: str
    command: str
    columns: list[tuple[str, str]]
    rows: list[dict[str, Any]] = attrs.Factory(list)
    notes: list[str] = attrs.Factory(list)
    extra: dict[str, Any] = attrs.Factory(dict)


def _status(outcome: Outcome) -> str:
    return outcome.status if outcome.error is None else f"error: {outcome.error[:160]}"


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / MB, 1)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------- throughput

THROUGHPUT_CONTENDERS: tuple[tuple[str, str, bool], ...] = (
    # (contender, label, moves one event per hop -> capped size)
    ("ceiling", "plain loop (ceiling)", False),
    ("trio_ingest", "trio_ingest (Trio)", False),
    ("bytewax", "bytewax (batches of 256)", False),
    ("trio_batched", "raw Trio, lists of 256", False),
    ("asyncio_queue", "asyncio.Queue chain", True),
    ("aiostream", "aiostream", False),
    ("tutorial", "tutorial design", False),
    ("trio_per_event", "raw Trio, 1 event/send", True),
    ("slurry", "slurry", True),
)


def throughput(cfg: Config, runner: Runner) -> ScenarioResult:
    """Events/s through producer -> 3 dict-copy maps -> null sink, held against the plain loop."""
    result = ScenarioResult(
        "throughput",
        "Throughput: 3 per-event maps into a null sink",
        _doc(throughput),
        cfg.command("throughput"),
        [
            ("label", "contender"),
            ("n", "events"),
            ("events_per_s", "events/s"),
            ("ratio", "x ceiling"),
            ("median_s", "median s"),
            ("runs", "runs"),
            ("peak_rss_mb", "peak RSS MB"),
            ("note", "note"),
        ],
    )
    ceiling_rate = math.nan
    for contender, label, capped in THROUGHPUT_CONTENDERS:
        n = min(cfg.throughput_n, cfg.per_event_cap) if capped else cfg.throughput_n
        outcome = runner.measure(
            "throughput", contender, n, repeat=cfg.repeat, warmup=cfg.warmup(n), label=label
        )
        if contender == "ceiling" and outcome.ok:
            ceiling_rate = outcome.rate
        note = []
        if n < cfg.throughput_n:
            note.append(f"capped at {n:,} events (one event per hop is slow)")
        if contender == "tutorial" and outcome.ok:
            note.append(
                f"join() returned at {outcome.median('join_fraction'):.0%} processed; "
                f"peak {outcome.median('peak_pending_tasks'):,.0f} pending tasks"
            )
        if not outcome.ok:
            note.append(_status(outcome))
        result.rows.append(
            {
                "contender": contender,
                "label": label,
                "n": n,
                "events_per_s": _finite(outcome.rate),
                "ratio": _finite(outcome.rate / ceiling_rate) if outcome.ok else None,
                "median_s": _finite(outcome.elapsed),
                "runs": len(outcome.runs),
                "peak_rss_mb": _mb(outcome.peak_rss),
                "elapsed_runs": [run["elapsed"] for run in outcome.runs],
                "status": outcome.status,
                "note": "; ".join(note),
            }
        )
    result.notes.append(
        "Input (a list of payloads, or of trio_ingest Events) is built before timing; "
        "async contenders are timed around trio.run/asyncio.run (loop start-up included)."
    )
    result.notes.append(
        "Bounded contenders hold about 1,000 events per hop (raw Trio lists: 3 lists of 256). "
        "Peak RSS includes the prebuilt input (payload dicts; Event objects for trio_ingest) "
        "and the warm-up run."
    )
    return result


# --------------------------------------------------------------------------- sink feeding


def sink_feed(cfg: Config, runner: Runner) -> ScenarioResult:
    """3 per-event maps into a sink that reads every event's id and payload (any real sink
    does), and into the Null sink, held against a plain loop doing the same work."""
    result = ScenarioResult(
        "sink_feed",
        "Feeding sinks: 3 maps into a reading sink, against the plain loop",
        _doc(sink_feed),
        cfg.command("sink_feed"),
        [
            ("label", "contender"),
            ("n", "events"),
            ("events_per_s", "events/s"),
            ("ratio", "x plain loop"),
            ("ratio_range", "turns' range"),
            ("runs", "runs"),
        ],
    )
    n = cfg.throughput_n
    rows = (
        ("ceiling_reading", "plain loop, reading id and payload", "ceiling_reading"),
        ("trio_ingest_reading", "trio_ingest -> a reading ti.Sink", "ceiling_reading"),
        ("ceiling", "plain loop (no sink work)", "ceiling"),
        ("trio_ingest", "trio_ingest -> Null sink", "ceiling"),
    )
    # two timed runs per process: the set-up (a million events built) takes longer than a
    # run, so more turns, not more runs per turn, is what narrows the figure
    repeat = min(cfg.repeat, 2)
    turns = runner.measure_turns(
        "sink_feed",
        [(contender, label) for contender, label, _ in rows],
        n,
        rounds=cfg.rounds,
        repeat=repeat,
        warmup=cfg.warmup(n),
    )
    for contender, label, baseline in rows:
        outcome = pool(turns[contender])
        rate = outcome.rate if outcome.ok else math.nan
        # the ratio of each turn (the two processes ran seconds apart), then the median
        ratios = sorted(
            mine.rate / base.rate
            for mine, base in zip(turns[contender], turns[baseline], strict=True)
            if mine.ok and base.ok
        )
        result.rows.append(
            {
                "contender": contender,
                "label": label,
                "n": n,
                "events_per_s": _finite(rate),
                "ratio": _finite(statistics.median(ratios)) if ratios else None,
                "ratio_range": (
                    f"{ratios[0]:.2f}-{ratios[-1]:.2f}" if contender != baseline and ratios else ""
                ),
                "runs": len(outcome.runs),
                "status": outcome.status,
            }
        )
    result.notes.append(
        "Each trio_ingest row is held against the plain loop above it: the reading sink "
        "against a loop that reads the same fields, the Null sink against the bare loop."
    )
    result.notes.append(
        f"The four contenders take turns, {cfg.rounds} fresh processes each ({repeat} timed "
        "run(s) after a warm-up in each). A row's ratio is the median of its turns' ratios "
        "(each against its plain loop's process of the same turn, seconds apart); the range "
        "is the lowest and highest turn. On a shared machine one process's median alone "
        "moves by several percent, and the machine's speed drifts over a minute."
    )
    return result


# --------------------------------------------------------------------------- batch sizes


def batch_size(cfg: Config, runner: Runner) -> ScenarioResult:
    """trio_ingest throughput and p99 end-to-end latency per max_batch, against max_batch=256."""
    result = ScenarioResult(
        "batch_size",
        "Batch size sweep: trio_ingest max_batch",
        _doc(batch_size),
        cfg.command("batch_size"),
        [
            ("max_batch", "max_batch"),
            ("n", "events"),
            ("events_per_s", "events/s"),
            ("vs_256", "x max_batch=256"),
            ("p50_ms", "p50 ms"),
            ("p99_ms", "p99 ms"),
            ("runs", "runs"),
            ("note", "note"),
        ],
    )
    for max_batch in cfg.sweep_batches:
        n = cfg.sweep_n if max_batch > 1 else min(cfg.sweep_n, cfg.sweep_single_cap)
        outcome = runner.measure(
            "batch_size",
            "trio_ingest_latency",
            n,
            repeat=cfg.repeat,
            warmup=cfg.warmup(n),
            label=f"trio_ingest max_batch={max_batch}",
            max_batch=max_batch,
        )
        result.rows.append(
            {
                "max_batch": max_batch,
                "n": n,
                "events_per_s": _finite(outcome.rate),
                "p50_ms": _finite(outcome.median("p50")),
                "p99_ms": _finite(outcome.median("p99")),
                "runs": len(outcome.runs),
                "status": outcome.status,
                "note": _status(outcome)
                if not outcome.ok
                else (f"capped at {n:,} events" if n < cfg.sweep_n else ""),
            }
        )
    reference = next((row["events_per_s"] for row in result.rows if row["max_batch"] == 256), None)
    for row in result.rows:
        ok = reference and row["events_per_s"]
        row["vs_256"] = row["events_per_s"] / reference if ok and reference else None
    result.notes.append(
        "Source: a small ti.Source creating each Event at read time (so event_time is when the "
        "pipeline took it), as fast as the pipeline reads (saturation); sink: a ti.Sink "
        "recording time.time() - event_time per event. Latency is thus the time spent inside "
        "the pipeline at full load. Capacity 1,000 events per edge."
    )
    result.notes.append(
        "Lower throughput than in the throughput scenario is expected: Events are created "
        "while timed, and a sink that reads event_time needs Event objects, which the runtime "
        "rebuilds with the mapped payloads (the Null sink skips that)."
    )
    return result


# --------------------------------------------------------------------------- latency


def latency(cfg: Config, runner: Runner) -> ScenarioResult:
    """trio_ingest p50/p95/p99 end-to-end latency at 10/50/90% of its own measured maximum."""
    result = ScenarioResult(
        "latency",
        "Latency under load: trio_ingest, paced source",
        _doc(latency),
        cfg.command("latency"),
        [
            ("load", "load"),
            ("target_rate", "target ev/s"),
            ("achieved_rate", "achieved ev/s"),
            ("n", "events"),
            ("p50_ms", "p50 ms"),
            ("p95_ms", "p95 ms"),
            ("p99_ms", "p99 ms"),
            ("max_ms", "max ms"),
            ("runs", "runs"),
            ("note", "note"),
        ],
    )
    n_max = cfg.latency_saturation_n
    saturated = runner.measure(
        "latency",
        "trio_ingest_latency",
        n_max,
        repeat=cfg.repeat,
        warmup=cfg.warmup(n_max),
        label="trio_ingest saturated",
    )
    max_rate = saturated.rate
    result.extra["max_rate"] = _finite(max_rate)
    result.rows.append(_latency_row("100% (saturated)", None, saturated))
    if not saturated.ok:
        result.notes.append(f"Maximum not measured ({_status(saturated)}); paced runs skipped.")
        return result
    for load in cfg.latency_loads:
        rate = load * max_rate
        n = max(100, int(rate * cfg.latency_seconds))
        outcome = runner.measure(
            "latency",
            "trio_ingest_latency",
            n,
            repeat=cfg.repeat,
            warmup=min(n, cfg.warmup(n)),
            label=f"trio_ingest at {load:.0%}",
            rate=rate,
        )
        result.rows.append(_latency_row(f"{load:.0%}", rate, outcome))
    result.notes.append(
        "The maximum is the saturated run above (same lazily created events, same sink). "
        f"Paced runs last about {cfg.latency_seconds:g} s each; a paced event's event_time is its "
        "scheduled emission time, so time the source spends blocked counts as latency "
        "(no coordinated omission). Percentiles are medians over runs. Where the achieved "
        "rate falls short of the target, the pipeline did not keep up at that rate in that run "
        "(on this noisy 2-core machine 90% is close to the edge) and the latency includes the "
        "growing backlog."
    )
    return result


def _latency_row(load: str, rate: float | None, outcome: Outcome) -> dict[str, Any]:
    return {
        "load": load,
        "target_rate": rate,
        "achieved_rate": _finite(outcome.rate),
        "n": outcome.n,
        "p50_ms": _finite(outcome.median("p50")),
        "p95_ms": _finite(outcome.median("p95")),
        "p99_ms": _finite(outcome.median("p99")),
        "max_ms": _finite(outcome.median("max")),
        "runs": len(outcome.runs),
        "status": outcome.status,
        "note": "" if outcome.ok else _status(outcome),
    }


# --------------------------------------------------------------------------- memory


def memory(cfg: Config, runner: Runner) -> ScenarioResult:
    """Peak RSS, fast source into a slow sink, at two sizes: trio_ingest vs the tutorial design."""
    result = ScenarioResult(
        "memory",
        "Memory is bounded: fast source, slow sink",
        _doc(memory),
        cfg.command("memory"),
        [
            ("label", "design"),
            ("n", "events"),
            ("peak_rss_mb", "peak RSS MB"),
            ("baseline_rss_mb", "start RSS MB"),
            ("events_per_s", "events/s"),
            ("peak_pending_tasks", "peak pending tasks"),
            ("note", "note"),
        ],
    )
    peaks: dict[int, float] = {}
    for contender, label in (
        ("trio_ingest_slow_sink", "trio_ingest"),
        ("tutorial_slow_sink", "tutorial design"),
    ):
        sizes = list(cfg.memory_sizes)
        if contender == "tutorial_slow_sink":
            sizes = sorted({min(n, cfg.memory_tutorial_cap) for n in sizes} | set(sizes))
        for n in sizes:
            row: dict[str, Any] = {"contender": contender, "label": label, "n": n}
            if contender == "tutorial_slow_sink" and n > cfg.memory_tutorial_cap:
                row |= {
                    "status": "not run",
                    "note": f"not run above {cfg.memory_tutorial_cap:,} events: its memory "
                    "grows with the input (one pending task per event)",
                }
                result.rows.append(row)
                continue
            kwargs: dict[str, Any] = (
                {"delay": cfg.memory_sink_delay} if contender.startswith("trio") else {}
            )
            outcome = runner.measure("memory", contender, n, label=label, **kwargs)
            if contender == "trio_ingest_slow_sink" and outcome.ok and outcome.peak_rss:
                peaks[n] = outcome.peak_rss
            note = []
            if contender == "tutorial_slow_sink" and outcome.ok:
                note.append(f"join() returned at {outcome.median('join_fraction'):.0%} processed")
            if not outcome.ok:
                note.append(_status(outcome))
            pending = outcome.median("peak_pending_tasks")
            row |= {
                "peak_rss_mb": _mb(outcome.peak_rss),
                "baseline_rss_mb": _mb(outcome.baseline_rss),
                "events_per_s": _finite(outcome.rate),
                "peak_pending_tasks": _finite(pending),
                "runs": len(outcome.runs),
                "status": outcome.status,
                "note": "; ".join(note),
            }
            result.rows.append(row)
    sizes = sorted(peaks)
    if len(sizes) >= 2:
        ratio = peaks[sizes[-1]] / peaks[sizes[0]]
        result.extra["trio_ingest_peak_ratio"] = ratio
        result.notes.append(
            f"trio_ingest peak RSS at {sizes[-1]:,} events / at {sizes[0]:,} events = "
            f"{ratio:.3f} ({sizes[-1] // sizes[0]}x the events)."
        )
    result.notes.append(
        "Each cell is one fresh process, one run, no warm-up; peak RSS is the child's ru_maxrss "
        "(start RSS: after interpreter and benchmark imports). Input comes from a generator. "
        f"trio_ingest's sink sleeps {cfg.memory_sink_delay * 1000:g} ms per batch (after one "
        "checkpoint); the tutorial's per-event task yields once (asyncio.sleep(0)), a cheaper "
        "sink than trio_ingest gets."
    )
    return result


# --------------------------------------------------------------------------- backpressure


def backpressure(cfg: Config, runner: Runner) -> ScenarioResult:
    """trio_ingest's edge peak depth vs capacity and blocked seconds: slow sink vs Null sink."""
    result = ScenarioResult(
        "backpressure",
        "Backpressure: trio_ingest edge statistics",
        _doc(backpressure),
        cfg.command("backpressure"),
        [
            ("sink", "sink"),
            ("edge", "edge"),
            ("capacity", "capacity"),
            ("peak_depth", "peak depth"),
            ("blocked_seconds", "blocked s"),
            ("blocked_share", "blocked / run"),
            ("run_s", "run s"),
            ("note", "note"),
        ],
    )
    n = cfg.backpressure_n
    for sink, delay in (
        ("Null", None),
        (f"slow ({cfg.memory_sink_delay * 1000:g} ms/batch)", cfg.memory_sink_delay),
    ):
        outcome = runner.measure(
            "backpressure",
            "trio_ingest_slow_sink",
            n,
            repeat=cfg.repeat,
            warmup=cfg.warmup(n) if delay is None else 0,
            label=f"trio_ingest, {sink} sink",
            delay=delay,
        )
        run = outcome.median_run()
        edges = run.get("edges") or []
        if not outcome.ok or not edges:
            result.rows.append(
                {
                    "sink": sink,
                    "status": outcome.status,
                    "note": _status(outcome) if not outcome.ok else "RunReport has no edges",
                }
            )
            continue
        for edge in edges:
            result.rows.append(
                {
                    "sink": sink,
                    **edge,
                    "blocked_share": edge["blocked_seconds"] / run["elapsed"],
                    "run_s": run["elapsed"],
                    "n": n,
                    "status": "ok",
                    "note": "",
                }
            )
    result.notes.append(
        f"{n:,} events from a generator through map x3; the figures come from the median run's "
        "RunReport. Peak depth never above capacity = the bound holds."
    )
    return result


# --------------------------------------------------------------------------- flaky sink


def flaky_sink(cfg: Config, runner: Runner) -> ScenarioResult:
    """Goodput and losses into a slow sink failing 15% of calls: trio_ingest vs the tutorial."""
    result = ScenarioResult(
        "flaky_sink",
        "The tutorial's scenario: slow, flaky sink",
        _doc(flaky_sink),
        cfg.command("flaky_sink"),
        [
            ("label", "design"),
            ("events", "events given"),
            ("delivered", "delivered"),
            ("goodput", "goodput ev/s"),
            ("lost", "lost"),
            ("dead_lettered", "dead-lettered"),
            ("pending_at_join", "pending at join()"),
            ("sink_calls", "sink calls"),
            ("sink_failures", "failed calls"),
            ("elapsed", "run s"),
            ("runs", "runs"),
            ("note", "note"),
        ],
    )
    flaky: tuple[tuple[str, str, dict[str, Any]], ...] = (
        ("trio_ingest_flaky", "trio_ingest (batches <= 256, 4 sink workers)", {}),
        (
            "tutorial_flaky",
            "tutorial design (1 event/call, 4 tasks, 3 retries)",
            {"time_box": cfg.flaky_time_box},
        ),
    )
    for contender, label, kwargs in flaky:
        outcomes = [
            runner.measure(
                "flaky_sink",
                contender,
                cfg.flaky_n,
                label=f"{label[:20]} seed={seed}",
                seed=seed,
                **kwargs,
            )
            for seed in cfg.flaky_seeds
        ]
        good = [outcome for outcome in outcomes if outcome.ok]
        if not good:
            result.rows.append(
                {"label": label, "status": outcomes[0].status, "note": _status(outcomes[0])}
            )
            continue
        runs = [outcome.runs[0] for outcome in good]
        row = _flaky_row(label, runs)
        row["runs"] = len(runs)
        row["status"] = "ok" if len(good) == len(outcomes) else "partial"
        result.rows.append(row)
    result.notes.append(
        "The sink sleeps uniform(50, 150) ms per call, then fails 15% of calls with "
        "ConnectionError before writing (seeded). trio_ingest: Sink(workers=4, "
        "retry=RetryPolicy(max_attempts=8, "
        "ExponentialBackoff(0.05, x2, max 2 s, full jitter))), dead letters to sinks.Memory(). "
        "Tutorial: 1 try + 3 retries at 0.05/0.1/0.2 s holding its semaphore slot, then drops."
    )
    result.notes.append(
        f"trio_ingest gets {cfg.flaky_n:,} events and runs to the end; the tutorial gets the same "
        f"events but is stopped after {cfg.flaky_time_box:g} s. lost = given - delivered - "
        "dead-lettered for a finished run, or events dropped after retries for a time-boxed one; "
        "pending at join() = events not yet written when queue.join() returned (a program that "
        "exits then loses them). Figures are medians over seeds "
        f"{', '.join(map(str, cfg.flaky_seeds))}."
    )
    return result


def _flaky_row(label: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(key: str) -> float | None:
        values = sorted(run[key] for run in runs if run.get(key) is not None)
        return values[(len(values) - 1) // 2] if values else None

    finished = all(run["finished"] for run in runs)
    lost = med("lost") if "lost" in runs[0] else med("dropped")
    pending = None
    if runs[0].get("processed_at_join") is not None:
        pending = min(run["events"] - run["processed_at_join"] for run in runs)
    elapsed = med("elapsed") or math.nan
    delivered = med("delivered") or 0
    return {
        "label": label,
        "events": runs[0]["events"],
        "delivered": delivered,
        "goodput": delivered / elapsed if elapsed else None,
        "lost": lost,
        "dead_lettered": med("dead_lettered"),
        "pending_at_join": pending,
        "duplicates": med("duplicates"),
        "sink_calls": med("sink_calls"),
        "sink_failures": med("sink_failures"),
        "elapsed": elapsed,
        "finished": finished,
        "note": "time-boxed: stopped before the end"
        if not finished
        else (f"{lost} event(s) lost" if lost else ""),
    }


# --------------------------------------------------------------------------- sqlite


def sqlite(cfg: Config, runner: Runner) -> ScenarioResult:
    """Rows/s into SQLite: trio_ingest's sinks.SQLite against a plain sqlite3 executemany."""
    result = ScenarioResult(
        "sqlite",
        "Sinks: rows into SQLite",
        _doc(sqlite),
        cfg.command("sqlite"),
        [
            ("label", "writer"),
            ("n", "rows"),
            ("rows_per_s", "rows/s"),
            ("vs_plain", "x plain (per 256)"),
            ("journal_mode", "journal"),
            ("runs", "runs"),
            ("note", "note"),
        ],
    )
    n = cfg.sqlite_n
    writers: tuple[tuple[str, str, dict[str, Any]], ...] = (
        ("sqlite_plain", "sqlite3 executemany, commit per 256 rows", {"commit_every": 256}),
        ("sqlite_plain", "sqlite3 executemany, one transaction", {"commit_every": 0}),
        ("trio_ingest_sqlite", "trio_ingest sinks.SQLite", {}),
        ("trio_ingest_sqlite", "trio_ingest sinks.SQLite(workers=2)", {"workers": 2}),
    )
    for contender, label, kwargs in writers:
        outcome = runner.measure(
            "sqlite", contender, n, repeat=cfg.repeat, warmup=cfg.warmup(n), label=label, **kwargs
        )
        run = outcome.median_run()
        result.rows.append(
            {
                "contender": contender,
                "label": label,
                "n": n,
                "rows_per_s": _finite(outcome.rate),
                "journal_mode": run.get("journal_mode"),
                "runs": len(outcome.runs),
                "status": outcome.status,
                "note": "" if outcome.ok else _status(outcome),
            }
        )
    plain = result.rows[0]["rows_per_s"]
    for row in result.rows:
        row["vs_plain"] = row["rows_per_s"] / plain if plain and row["rows_per_s"] else None
    result.notes.append(
        "Same table and pragmas for every writer, as trio_ingest's SQLite sink sets them: "
        "(id TEXT PRIMARY KEY, key, event_time, payload JSON, ingested_at), WAL, "
        "synchronous=FULL, INSERT OR IGNORE, a fresh file per run on the local disk. Input "
        "(payload dicts, or Events) is built before timing; JSON encoding is timed for all."
    )
    result.notes.append(
        "trio_ingest writes one transaction per batch (up to 256 events) from a worker thread; "
        "'commit per 256 rows' is the plain equivalent, 'one transaction' the upper bound "
        "without per-batch durability."
    )
    return result


# --------------------------------------------------------------------------- backends


def backends(cfg: Config, runner: Runner) -> ScenarioResult:
    """trio_ingest throughput on Trio and on asyncio (AnyIO), against the plain-loop ceiling."""
    result = ScenarioResult(
        "backends",
        "Both backends: trio_ingest on Trio and asyncio",
        _doc(backends),
        cfg.command("backends"),
        [
            ("label", "backend"),
            ("n", "events"),
            ("events_per_s", "events/s"),
            ("ratio", "x ceiling"),
            ("median_s", "median s"),
            ("runs", "runs"),
            ("note", "note"),
        ],
    )
    n = cfg.backends_n
    ceiling = runner.measure(
        "backends", "ceiling", n, repeat=cfg.repeat, warmup=cfg.warmup(n), label="plain loop"
    )
    for label, contender, kwargs in (
        ("plain loop (ceiling)", "ceiling", None),
        ("Trio", "trio_ingest", {"backend": "trio"}),
        ("asyncio (anyio.run)", "trio_ingest", {"backend": "asyncio"}),
    ):
        outcome = (
            ceiling
            if kwargs is None
            else runner.measure(
                "backends",
                contender,
                n,
                repeat=cfg.repeat,
                warmup=cfg.warmup(n),
                label=f"trio_ingest on {label}",
                **kwargs,
            )
        )
        result.rows.append(
            {
                "label": label,
                "n": n,
                "events_per_s": _finite(outcome.rate),
                "ratio": _finite(outcome.rate / ceiling.rate) if outcome.ok else None,
                "median_s": _finite(outcome.elapsed),
                "runs": len(outcome.runs),
                "status": outcome.status,
                "note": "" if outcome.ok else _status(outcome),
            }
        )
    return result


# --------------------------------------------------------------------------- checkpoint


def checkpoint(cfg: Config, runner: Runner) -> ScenarioResult:
    """Checkpoint cost: file -> tumbling window -> Null/SQLite events/s with and without
    ``state=ti.state.SQLite``, against the same pipeline without a state store."""
    from .bench_state import VARIANTS

    result = ScenarioResult(
        "checkpoint",
        "State: checkpoint epochs",
        _doc(checkpoint),
        cfg.command("checkpoint"),
        [
            ("label", "pipeline"),
            ("n", "events"),
            ("events_per_s", "events/s"),
            ("vs_no_state", "x no state"),
            ("checkpoints", "checkpoints"),
            ("runs", "runs"),
            ("note", "note"),
        ],
    )
    n = cfg.checkpoint_n
    base: dict[str, float] = {}
    for label, sink, state, interval, users in VARIANTS:
        outcome = runner.measure(
            "checkpoint", "trio_ingest_checkpoint", n, repeat=cfg.repeat, label=label,
            sink=sink, state=state, interval=interval, users=users,
        )
        rate = _finite(outcome.rate) if outcome.ok else None
        if not state and rate:
            base[sink] = rate
        result.rows.append(
            {
                "label": label,
                "n": n,
                "events_per_s": rate,
                "vs_no_state": rate / base[sink] if rate and base.get(sink) else None,
                "checkpoints": outcome.median_run().get("checkpoints") if outcome.ok else None,
                "runs": len(outcome.runs),
                "status": outcome.status,
                "note": "" if outcome.ok else _status(outcome),
            }
        )
    result.notes.append(
        "Input: a JSON Lines file written before timing (1,000 users, event times 1 ms apart, "
        "up to 2 s of disorder); 10 s tumbling sums per user, max_delay=2. Timed: reading, "
        "parsing, windowing, writing and every checkpoint (pause, consistent cut, one SQLite "
        "transaction of all open windows and the file offset, synchronous=FULL)."
    )
    return result


def _doc(function: Callable[..., Any]) -> str:
    return " ".join((function.__doc__ or "").split())


Scenario = Callable[[Config, Runner], ScenarioResult]

SCENARIOS: dict[str, Scenario] = {
    "throughput": throughput,
    "sink_feed": sink_feed,
    "batch_size": batch_size,
    "latency": latency,
    "memory": memory,
    "backpressure": backpressure,
    "flaky_sink": flaky_sink,
    "sqlite": sqlite,
    "backends": backends,
    "checkpoint": checkpoint,
}
