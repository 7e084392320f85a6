"""trio_ingest contenders, written against its public API only.

Each function builds a :class:`trio_ingest.Pipeline` over the shared workload and
returns a :data:`~benchmarks._measure.Measurement`. The pipeline's own
:class:`RunReport` is checked (every event delivered) and its edge statistics
are passed on for the backpressure table.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ._measure import Measurement, Skip, percentiles
from ._workload import CAPACITY, STAGES, payload_stream

DEFAULT_MAX_BATCH = 256
LATENCY_POINTS = (50, 95, 99)


def _import() -> Any:
    try:
        import trio_ingest
    except ImportError as error:
        raise Skip(f"trio_ingest not importable: {error}") from error
    return trio_ingest


def _run(pipeline: Any, backend: str) -> tuple[Any, float]:
    """Run ``pipeline`` to the end on ``backend``; return its report and the wall time."""
    import anyio
    import trio

    start = time.perf_counter()
    if backend == "trio":
        report = trio.run(pipeline.run)
    else:
        report = anyio.run(pipeline.run, backend=backend)
    return report, time.perf_counter() - start


def _edges(report: Any) -> list[dict[str, Any]]:
    """The per-edge statistics of ``report`` as plain dicts."""
    edges = report.edges
    items: Iterable[tuple[str, Any]]
    if isinstance(edges, dict):
        items = edges.items()
    else:
        items = ((getattr(edge, "name", str(i)), edge) for i, edge in enumerate(edges))
    out = []
    for name, edge in items:
        out.append(
            {
                "edge": str(name),
                "capacity": edge.capacity,
                "peak_depth": edge.peak_depth,
                "blocked_seconds": edge.blocked_seconds,
            }
        )
    return out


def _check(report: Any, expected: int) -> None:
    """Fail the run unless every event was received and delivered once, books balanced."""
    if report.delivered != expected or report.received != expected or not report.balanced:
        raise AssertionError(
            f"trio_ingest lost or duplicated events: received {report.received}, "
            f"delivered {report.delivered}, expected {expected}: {report.summary()}"
        )


def _maps(ti: Any) -> list[Any]:
    return [ti.map(fn) for fn in STAGES]


def run_ingest(
    n: int, backend: str = "trio", max_batch: int = DEFAULT_MAX_BATCH, capacity: int = CAPACITY
) -> Measurement:
    """trio_ingest: prebuilt events -> map x3 -> Null sink, through ``Pipeline.run``."""
    ti = _import()
    events = [ti.Event(id=str(i), payload={"value": i}) for i in range(n)]
    pipeline = ti.Pipeline(
        ti.sources.from_iterable(events),
        *_maps(ti),
        sink=ti.sinks.Null(),
        capacity=capacity,
        max_batch=max_batch,
    )
    del events
    report, elapsed = _run(pipeline, backend)
    _check(report, n)
    return {
        "elapsed": elapsed,
        "count": report.delivered,
        "report_elapsed": report.elapsed,
        "edges": _edges(report),
    }


def _latency_sink(ti: Any, out: list[float]) -> Any:
    """A sink recording ``now - event.event_time`` for every event it writes."""

    class LatencySink(ti.Sink):  # type: ignore[misc]  # ti is imported lazily (Any)
        async def write_batch(self, events: Sequence[Any]) -> None:
            now = time.time()
            out.extend([now - event.event_time for event in events])

    return LatencySink()


def _paced_source(ti: Any, n: int, rate: float | None) -> Any:
    """A source of ``n`` events created lazily at read time; with ``rate``, on a fixed
    schedule of ``rate`` events/s.

    A paced event's ``event_time`` is its *scheduled* time, not the moment it is
    read, so time the source spends blocked by backpressure counts as latency (no
    coordinated omission). Each read returns every event due (up to ``max_events``).
    """
    import anyio

    event = ti.Event

    class PacedSource(ti.Source):  # type: ignore[misc]  # ti is imported lazily (Any)
        name = "paced"

        def __init__(self) -> None:
            self.position = 0
            self.wall_start = 0.0
            self.clock_start = 0.0

        async def open(self) -> None:
            self.wall_start = time.time()
            self.clock_start = anyio.current_time()

        async def read(self, max_events: int) -> Any:
            start = self.position
            if start >= n:
                return None
            if rate is None:
                stop = min(n, start + max_events)
                events = [event(id=str(i), payload={"value": i}) for i in range(start, stop)]
            else:
                await anyio.sleep_until(self.clock_start + start / rate)
                due = int((anyio.current_time() - self.clock_start) * rate) + 1
                stop = min(n, start + max_events, max(due, start + 1))
                wall, interval = self.wall_start, 1.0 / rate
                events = [
                    event(id=str(i), payload={"value": i}, event_time=wall + i * interval)
                    for i in range(start, stop)
                ]
            self.position = stop
            return ti.Read(events, stop)

    return PacedSource()


def run_ingest_latency(
    n: int,
    rate: float | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    capacity: int = CAPACITY,
) -> Measurement:
    """trio_ingest end-to-end latency: lazily created events (paced at ``rate``/s, or as
    fast as the pipeline takes them) -> map x3 -> a sink recording ``now - event_time``."""
    ti = _import()
    latencies: list[float] = []
    pipeline = ti.Pipeline(
        _paced_source(ti, n, rate),
        *_maps(ti),
        sink=_latency_sink(ti, latencies),
        capacity=capacity,
        max_batch=max_batch,
    )
    report, elapsed = _run(pipeline, "trio")
    _check(report, n)
    if len(latencies) != n:
        raise AssertionError(f"latency sink saw {len(latencies)} events, expected {n}")
    return {
        "elapsed": elapsed,
        "count": report.delivered,
        "rate": rate,
        **percentiles(latencies, LATENCY_POINTS),
    }


def _slow_sink(ti: Any, delay: float, counter: list[int]) -> Any:
    """A sink that takes ``delay`` seconds (after one plain checkpoint) per batch."""
    import anyio
    import anyio.lowlevel

    class SlowSink(ti.Sink):  # type: ignore[misc]  # ti is imported lazily (Any)
        async def write_batch(self, events: Sequence[Any]) -> None:
            await anyio.lowlevel.checkpoint()
            await anyio.sleep(delay)
            counter[0] += len(events)

    return SlowSink()


def run_ingest_slow_sink(
    n: int,
    delay: float | None = 0.001,
    max_batch: int = DEFAULT_MAX_BATCH,
    capacity: int = CAPACITY,
) -> Measurement:
    """trio_ingest with a generator source (input never in memory) -> map x3 -> a sink that
    sleeps ``delay`` s per batch (None: the Null sink); for peak RSS and backpressure."""
    ti = _import()
    counter = [0]
    sink = ti.sinks.Null() if delay is None else _slow_sink(ti, delay, counter)
    pipeline = ti.Pipeline(
        ti.sources.from_iterable(payload_stream(n)),
        *_maps(ti),
        sink=sink,
        capacity=capacity,
        max_batch=max_batch,
    )
    report, elapsed = _run(pipeline, "trio")
    _check(report, n)
    if delay is not None and counter[0] != n:
        raise AssertionError(f"slow sink wrote {counter[0]} events, expected {n}")
    return {
        "elapsed": elapsed,
        "count": report.delivered,
        "report_elapsed": report.elapsed,
        "edges": _edges(report),
    }


def run_ingest_flaky(n: int, seed: int = 1, workers: int = 4) -> Measurement:
    """trio_ingest writing batches (up to 256 events per call, ``workers`` calls at a time)
    to the flaky sink, retried with exponential backoff, dead letters to a Memory sink."""
    import trio

    from ._tutorial import FlakySink

    ti = _import()
    flaky = FlakySink(seed=seed, sleep=trio.sleep)

    class FlakyIngestSink(ti.Sink):  # type: ignore[misc,name-defined]  # ti: lazy import (Any)
        name = "flaky"

        async def write_batch(self, events: Sequence[Any]) -> None:
            await flaky.write([event.payload["value"] for event in events])

    dead_letters = ti.sinks.Memory()
    policy = ti.RetryPolicy(
        max_attempts=8,
        backoff=ti.ExponentialBackoff(initial=0.05, multiplier=2, max_delay=2, jitter="full"),
        retry_on=(ConnectionError,),
    )
    pipeline = ti.Pipeline(
        ti.sources.from_iterable(payload_stream(n)),
        sink=FlakyIngestSink(retry=policy, workers=workers),
        dead_letter=dead_letters,
        max_batch=DEFAULT_MAX_BATCH,
    )
    report, elapsed = _run(pipeline, "trio")
    delivered = len(flaky.written)
    dead = len(dead_letters.events)
    return {
        "elapsed": elapsed,
        "count": delivered,
        "events": n,
        "finished": True,
        "delivered": delivered,
        "dead_lettered": dead,
        "lost": n - delivered - dead,
        "duplicates": flaky.duplicates,
        "sink_calls": flaky.calls,
        "sink_failures": flaky.failures,
        "report_delivered": report.delivered,
        "report_dead_lettered": report.dead_lettered,
        "retries": report.retries,
    }


def run_ingest_sqlite(n: int, table: str = "events", workers: int = 1) -> Measurement:
    """trio_ingest into a fresh file: prebuilt events -> ``sinks.SQLite(path, table)``: rows/s.

    The sink's defaults (WAL, ``synchronous=FULL``, one transaction per batch of up
    to 256 events, written from a worker thread).
    """
    import sqlite3
    import tempfile
    from pathlib import Path

    ti = _import()
    try:
        sqlite_sink: Callable[..., Any] = ti.sinks.SQLite
    except (AttributeError, ImportError) as error:
        raise Skip(f"sinks.SQLite not available ({type(error).__name__}: {error})") from error
    events = [ti.Event(id=str(i), payload={"value": i}) for i in range(n)]
    with tempfile.TemporaryDirectory(prefix="bench-sqlite-") as directory:
        path = str(Path(directory) / "ingest.sqlite")
        pipeline = ti.Pipeline(
            ti.sources.from_iterable(events),
            sink=sqlite_sink(path, table, workers=workers),
            max_batch=DEFAULT_MAX_BATCH,
        )
        del events
        report, elapsed = _run(pipeline, "trio")
        _check(report, n)
        connection = sqlite3.connect(path)
        try:
            (count,) = connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()
            journal = connection.execute("PRAGMA journal_mode").fetchone()[0]
        finally:
            connection.close()
    return {"elapsed": elapsed, "count": count, "journal_mode": journal}


def _reading_sink(ti: Any) -> Any:
    """A ``ti.Sink`` whose ``write_batch`` reads ``e.id`` and ``e.payload`` of every event."""

    class ReadingSink(ti.Sink):  # type: ignore[misc]  # ti is imported lazily (Any)
        def __init__(self) -> None:
            super().__init__()
            self.seen = 0

        async def write_batch(self, events: Sequence[Any]) -> None:
            seen = 0
            for e in events:
                if e.id and e.payload:
                    seen += 1
            self.seen += seen

    return ReadingSink()


def run_ingest_reading(n: int, backend: str = "trio") -> Measurement:
    """trio_ingest: prebuilt events -> map x3 -> a sink reading ``e.id``/``e.payload`` of each."""
    ti = _import()
    events = [ti.Event(id=str(i), payload={"value": i}) for i in range(n)]
    sink = _reading_sink(ti)
    pipeline = ti.Pipeline(ti.sources.from_iterable(events), *_maps(ti), sink=sink)
    del events
    report, elapsed = _run(pipeline, backend)
    _check(report, n)
    if sink.seen != n:
        raise AssertionError(f"the sink read {sink.seen} of {n} events")
    return {"elapsed": elapsed, "count": report.delivered}


CONTENDERS: dict[str, Callable[..., Measurement]] = {
    "trio_ingest": run_ingest,
    "trio_ingest_reading": run_ingest_reading,
    "trio_ingest_latency": run_ingest_latency,
    "trio_ingest_slow_sink": run_ingest_slow_sink,
    "trio_ingest_flaky": run_ingest_flaky,
    "trio_ingest_sqlite": run_ingest_sqlite,
}
