"""Metrics overhead: throughput with per-batch statistics recorded vs not, in the same process.

``python -m benchmarks.bench_metrics_overhead [--events N] [--repeat K] [--out FILE]``

The baseline is the same pipeline (the suite's three per-event maps into a Null
sink, see ``benchmarks._workload``) with the runtime's recording switched off:
``NodeStats.record_batch`` and ``Histogram.observe`` replaced by no-ops for the
"off" runs. On and off runs alternate, so drifts of the machine hit both; the
figure is the median of each. Run at the default batch size (256) and at a
small one (16: sixteen times more batches per event, the worst case for a
per-batch cost). Because A/B runs on a shared 2-core machine scatter by more
than the effect, the overhead is also computed from the recording calls the
run made times their cost timed in a tight loop. Throughput is counted per
CPU second of the process (the run is one CPU-bound thread; on a shared
machine wall time mostly measures the neighbours), wall-clock figures are
written too. Writes its figures as JSON
to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import platform
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trio

import trio_ingest as ti
from trio_ingest.runtime._stats import Histogram, NodeStats

from ._workload import STAGES, payloads

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "metrics_overhead.json"


@contextlib.contextmanager
def recording_disabled() -> Iterator[None]:
    """Make the runtime's per-batch recording a no-op (the baseline of this benchmark)."""
    record_batch, observe = NodeStats.record_batch, Histogram.observe

    def _no_record(self: NodeStats, n_in: int, n_out: int, seconds: float) -> None:
        pass

    def _no_observe(self: Histogram, value: float) -> None:
        pass

    NodeStats.record_batch = _no_record  # type: ignore[method-assign]
    Histogram.observe = _no_observe  # type: ignore[method-assign]
    try:
        yield
    finally:
        NodeStats.record_batch = record_batch  # type: ignore[method-assign]
        Histogram.observe = observe  # type: ignore[method-assign]


def one_run(n: int, max_batch: int) -> tuple[float, float, ti.RunReport]:
    """Events per CPU second and per wall second of one run over ``n`` prebuilt payloads."""
    items = payloads(n)
    pipeline = ti.Pipeline(
        ti.sources.from_iterable(items),
        *(ti.map(fn) for fn in STAGES),
        sink=ti.sinks.Null(),
        max_batch=max_batch,
    )
    gc.collect()
    started, cpu_started = time.perf_counter(), time.process_time()
    report = trio.run(pipeline.run)
    cpu = time.process_time() - cpu_started
    elapsed = time.perf_counter() - started
    if report.delivered != n:
        raise SystemExit(f"the pipeline delivered {report.delivered} of {n} events")
    return n / cpu, n / elapsed, report


def cost_of_recording(report: ti.RunReport, calls: int = 200_000) -> float:
    """CPU seconds the recording calls of ``report``'s run cost, timed in isolation.

    Every ``record_batch`` (one per node and batch) and every end-to-end
    ``observe`` (two per sink batch) is timed here in a tight loop, and
    multiplied by the number of calls the run made. Contention from other
    processes inflates both sides alike, so this ratio is the steady figure.
    """
    stats = NodeStats("bench", "map")
    histogram = Histogram()
    started = time.process_time()
    for _ in range(calls):
        stats.record_batch(256, 256, 1.5e-4)
    per_record = (time.process_time() - started) / calls
    started = time.process_time()
    for _ in range(calls):
        histogram.observe(2.5e-3)
    per_observe = (time.process_time() - started) / calls
    batches = sum(node.batches for node in report.nodes.values())
    return batches * per_record + report.latency.count * per_observe


def measure(n: int, max_batch: int, repeat: int) -> dict[str, Any]:
    on: list[float] = []
    off: list[float] = []
    on_wall: list[float] = []
    off_wall: list[float] = []
    estimates: list[float] = []
    one_run(min(n, 20_000), max_batch)  # warm up imports and caches
    for _ in range(repeat):
        rate, wall, report = one_run(n, max_batch)
        assert report.nodes["null"].batches > 0  # recording really on
        on.append(rate)
        on_wall.append(wall)
        estimates.append(cost_of_recording(report) / (n / rate) * 100)
        with recording_disabled():
            rate, wall, report = one_run(n, max_batch)
        assert report.nodes["null"].batches == 0  # and really off
        off.append(rate)
        off_wall.append(wall)
    on_median, off_median = statistics.median(on), statistics.median(off)
    return {
        "overhead_percent_from_call_costs": statistics.median(estimates),
        "overhead_percent_best_runs": (1 - max(on) / max(off)) * 100,
        "max_batch": max_batch,
        "events": n,
        "repeat": repeat,
        # CPU time: the pipeline is one CPU-bound thread, and CPU seconds do not count
        # the time other processes on a busy machine take from it
        "events_per_cpu_second_recording": on_median,
        "events_per_cpu_second_not_recording": off_median,
        "overhead_percent": (1 - on_median / off_median) * 100,
        "events_per_wall_second_recording": statistics.median(on_wall),
        "events_per_wall_second_not_recording": statistics.median(off_wall),
        "runs_recording": on,
        "runs_not_recording": off,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    results = [measure(args.events, max_batch, args.repeat) for max_batch in (256, 16)]
    print("events per CPU second, median of alternating runs; overhead three ways:")
    print("A/B of medians, A/B of best runs, and recording calls x their timed cost")
    print(
        f"{'max_batch':>9}  {'recording':>12}  {'not recording':>14}  {'A/B med':>8}  "
        f"{'A/B best':>8}  {'calls':>6}"
    )
    for r in results:
        print(
            f"{r['max_batch']:>9}  {r['events_per_cpu_second_recording']:>10,.0f}/s  "
            f"{r['events_per_cpu_second_not_recording']:>12,.0f}/s  "
            f"{r['overhead_percent']:>7.1f}%  {r['overhead_percent_best_runs']:>7.1f}%  "
            f"{r['overhead_percent_from_call_costs']:>5.2f}%"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "metrics_overhead",
                "python": platform.python_version(),
                "machine": platform.machine(),
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
