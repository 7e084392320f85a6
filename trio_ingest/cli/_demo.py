"""``trio-ingest demo``: the seed scenario, made real.

A synthetic producer ("sensor-A") sends N readings through validate ->
enrich -> a SQLite sink behind injected latency and transient failures,
retried with exponential backoff and full jitter; what outlives the retry
policy, and the invalid readings, land in the dead-letter file.
"""

from __future__ import annotations

import os
import random
import sqlite3
from pathlib import Path
from typing import Any

import attrs
import click

from .. import _retry, sinks, sources, stages, testing
from .._pipeline import Pipeline
from ._common import (
    EXIT_USAGE,
    Command,
    ProgressView,
    fail,
    finish,
    make_output,
    output_options,
    run_command,
)

__all__ = ("demo", "enrich", "make_reading", "validate")

SENSOR = "sensor-A"
TABLE = "readings"


def make_reading(invalid_rate: float) -> Any:
    """A payload factory for the synthetic source: readings, ``invalid_rate`` of them broken."""

    def reading(seq: int, rng: random.Random) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "sensor": SENSOR,
            "seq": seq,
            "temperature_c": round(rng.gauss(21.5, 2.5), 2),
            "humidity_pct": round(rng.uniform(30.0, 60.0), 1),
        }
        if invalid_rate and rng.random() < invalid_rate:
            flaw = rng.randrange(3)
            if flaw == 0:
                del payload["temperature_c"]
            elif flaw == 1:
                payload["temperature_c"] = "n/a"
            else:
                payload["humidity_pct"] = 180.0
        return payload

    return reading


def validate(reading: dict[str, Any]) -> dict[str, Any]:
    """Reject readings a sensor cannot have produced (the event is dead-lettered).

    Raises:
        ValueError: With the reason.
    """
    if "temperature_c" not in reading:
        raise ValueError("temperature_c is missing")
    temperature = reading["temperature_c"]
    if not isinstance(temperature, int | float) or isinstance(temperature, bool):
        raise ValueError(f"temperature_c must be a number: {temperature!r}")
    if not -60.0 <= temperature <= 80.0:
        raise ValueError(f"temperature_c out of range: {temperature!r}")
    humidity = reading.get("humidity_pct")
    if not isinstance(humidity, int | float) or not 0.0 <= humidity <= 100.0:
        raise ValueError(f"humidity_pct out of range: {humidity!r}")
    return reading


def enrich(reading: dict[str, Any]) -> dict[str, Any]:
    """Add derived fields: Fahrenheit and a comfort label."""
    celsius = reading["temperature_c"]
    comfort = "cold" if celsius < 19 else "warm" if celsius > 24 else "comfortable"
    return {**reading, "temperature_f": round(celsius * 9 / 5 + 32, 2), "comfort": comfort}


def _fresh_start(db: Path, dead_letters: Path) -> None:
    """Start from an empty demo table and dead-letter file (the demo owns both)."""
    try:
        conn = sqlite3.connect(db)
        try:
            conn.execute(f'DROP TABLE IF EXISTS "{TABLE}"')
            conn.commit()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        fail(f"cannot use SQLite database {os.fspath(db)!r}: {exc}")
    try:
        dead_letters.write_bytes(b"")
    except OSError as exc:
        fail(f"cannot write dead-letter file {os.fspath(dead_letters)!r}: {exc.strerror}")


def _count_rows(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute(f'SELECT count(*) FROM "{TABLE}"').fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        conn.close()


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


_POSITIVE = click.FloatRange(min=0, min_open=True)


@click.command(cls=Command)
@click.option("--events", "-n", type=click.IntRange(min=0), default=20_000, show_default=True,
              help="Readings the synthetic sensor sends.")
@click.option("--rate", type=_POSITIVE, default=None,
              help="Readings per second (default: as fast as the pipeline takes them).")
@click.option("--capacity", type=click.IntRange(min=1), default=1_000, show_default=True,
              help="Events each edge holds before its producer blocks (backpressure).")
@click.option("--workers", type=click.IntRange(min=1), default=8, show_default=True,
              help="Concurrent sink writes.")
@click.option("--batch-size", type=click.IntRange(min=1), default=50, show_default=True,
              help="Most events per sink write.")
@click.option("--failure-rate", type=click.FloatRange(0, 1, max_open=True), default=0.15,
              show_default=True, help="Fraction of sink writes that fail transiently.")
@click.option("--invalid-rate", type=click.FloatRange(0, 1), default=0.01, show_default=True,
              help="Fraction of readings that fail validation (dead-lettered).")
@click.option("--latency-min", type=click.FloatRange(min=0), default=0.05, show_default=True,
              help="Least injected seconds per sink write.")
@click.option("--latency-max", type=click.FloatRange(min=0), default=0.15, show_default=True,
              help="Most injected seconds per sink write.")
@click.option("--max-attempts", type=click.IntRange(min=1), default=5, show_default=True,
              help="Tries per sink write before its events are dead-lettered.")
@click.option("--backoff", type=_POSITIVE, default=0.05, show_default=True,
              help="First retry delay in seconds (doubles per retry, full jitter).")
@click.option("--backoff-max", type=_POSITIVE, default=2.0, show_default=True,
              help="Longest retry delay in seconds.")
@click.option("--seed", type=int, default=None,
              help="Seed of the readings, failures and latencies (default: random, printed).")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("demo.sqlite"), show_default=True,
              help="SQLite database; the demo replaces its table 'readings' there.")
@click.option("--dead-letters", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("demo-dead-letters.jsonl"), show_default=True,
              help="Dead-letter file (JSON Lines); overwritten by each demo run.")
@click.option("--shutdown-timeout", type=_POSITIVE, default=10.0, show_default=True,
              help="Seconds a graceful stop (Ctrl-C) may take to drain.")
@click.option("--dashboard", is_flag=True,
              help="Serve the live dashboard (port from --metrics-port, default 9464), open "
                   "it in a browser, and keep it up after the run until Ctrl-C.")
@click.option("--no-browser", is_flag=True, help="With --dashboard: do not open a browser.")
@output_options
def demo(
    events: int,
    rate: float | None,
    capacity: int,
    workers: int,
    batch_size: int,
    failure_rate: float,
    invalid_rate: float,
    latency_min: float,
    latency_max: float,
    max_attempts: int,
    backoff: float,
    backoff_max: float,
    seed: int | None,
    db: Path,
    dead_letters: Path,
    shutdown_timeout: float,
    dashboard: bool,
    no_browser: bool,
    quiet: bool,
    as_json: bool,
    log_level: str,
) -> None:
    """Watch a resilient ingestion: a flaky, slow SQLite sink, retries and dead letters.

    A synthetic sensor ("sensor-A") sends readings through validate -> enrich ->
    a SQLite sink wrapped with injected latency and transient failures. Failed
    writes are retried with exponential backoff and full jitter; invalid
    readings and writes that outlive the retry policy go to the dead-letter
    file. Ctrl-C stops gracefully (a second Ctrl-C forces). Exit code 0 when
    the run completed (dead letters included) or a graceful stop drained it,
    1 when it failed, 128+signal when the stop was forced or cut short.
    """
    output = make_output(quiet, as_json, log_level)
    if latency_min > latency_max:
        fail(f"--latency-min ({latency_min:g}) is above --latency-max ({latency_max:g})",
             EXIT_USAGE)
    if backoff > backoff_max:
        fail(f"--backoff ({backoff:g}) is above --backoff-max ({backoff_max:g})", EXIT_USAGE)
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    _fresh_start(db, dead_letters)

    store = sinks.SQLite(db, TABLE, synchronous="NORMAL")
    flaky = testing.FlakySink(
        store,
        failure_rate=failure_rate,
        latency=(latency_min, latency_max),
        seed=seed,
        name="sqlite",
        workers=workers,
        max_batch=batch_size,
    )
    policy = _retry.RetryPolicy(
        max_attempts=max_attempts,
        backoff=_retry.ExponentialBackoff(initial=backoff, multiplier=2.0,
                                          max_delay=backoff_max, jitter="full"),
    )
    pipeline = Pipeline(
        sources.synthetic(events, rate=rate, payload=make_reading(invalid_rate), seed=seed,
                          prefix=f"{SENSOR}-", name=SENSOR),
        stages.map(validate, name="validate"),
        stages.map(enrich, name="enrich"),
        sink=flaky,
        dead_letter=sinks.JsonLines(dead_letters, name="dead_letters"),
        retry=policy,
        capacity=capacity,
        shutdown_timeout=shutdown_timeout,
    )

    err = output.stderr()
    view = None
    if not output.quiet and err.is_terminal:
        view = ProgressView(err, title=f"demo {SENSOR}", total=events)

    metrics = output.metrics
    if dashboard and metrics is None:
        metrics = (output.metrics_host, 9464)

    def notice(message: str) -> None:
        if not output.quiet:
            err.print(f"[yellow]{message}[/]")
        if dashboard and not no_browser and message.startswith("metrics "):
            import webbrowser

            webbrowser.open(message.split(" · ")[1].removeprefix("dashboard "))

    if metrics != output.metrics:
        output = attrs.evolve(output, metrics_port=metrics[1] if metrics else None)
    outcome = run_command(output, pipeline, view=view, notice=notice, linger=dashboard)
    rows = _count_rows(db)
    dead = _count_lines(dead_letters)
    extra = [
        ("sink calls", f"{len(flaky.attempts):,}", f"{flaky.failures:,} failed on purpose"),
        ("rows in SQLite", f"{rows:,}", os.fspath(db)),
        ("dead-letter lines", f"{dead:,}", os.fspath(dead_letters)),
        ("seed", str(seed), "--seed to repeat the data"),
    ]
    finish(output, outcome, title="trio-ingest demo", extra=extra, data={
        "seed": seed,
        "sqlite_rows": rows,
        "dead_letter_lines": dead,
        "sink_calls": len(flaky.attempts),
        "injected_failures": flaky.failures,
        "db": os.fspath(db),
        "dead_letters": os.fspath(dead_letters),
    })
