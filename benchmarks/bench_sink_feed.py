"""Feeding sinks: 3 per-event maps -> a sink, against a plain loop doing the same work, same run.

Three contenders over the same prebuilt events (:mod:`benchmarks._workload`):

- ``plain``: the baseline. A Python loop applies the three stage functions and, in
  batches of 256, reads ``id`` and ``payload`` of every result as a sink would.
- ``null``: trio_ingest, ``from_iterable(events) -> map x3 -> sinks.Null()``.
- ``reading``: trio_ingest, the same into a ``ti.Sink`` subclass whose ``write_batch``
  reads ``e.id`` and ``e.payload`` of every event (any real sink does).

Figures are the medians of ``--repeat`` runs, as events/s and as ratios to ``plain``;
they are written to ``benchmarks/results/sink_feed.json``. Run:
``python -m benchmarks.bench_sink_feed [--n 1000000] [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

import trio_ingest as ti

from ._workload import BATCH, STAGES

F1, F2, F3 = STAGES


def make_events(n: int) -> list[ti.Event]:
    return [ti.Event(id=str(i), payload={"value": i}) for i in range(n)]


def run_plain(events: list[ti.Event]) -> float:
    """The baseline: the maps and the sink's reads in one loop, batches of 256."""
    start = time.perf_counter()
    seen = 0
    for lo in range(0, len(events), BATCH):
        out = [(e.id, F3(F2(F1(e.payload)))) for e in events[lo : lo + BATCH]]
        for ident, payload in out:
            if ident and payload:
                seen += 1
    assert seen == len(events)
    return time.perf_counter() - start


class Reading(ti.Sink):
    """Reads ``e.id`` and ``e.payload`` of every event, as any real sink does."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    async def write_batch(self, events: Sequence[ti.Event]) -> None:
        seen = 0
        for e in events:
            if e.id and e.payload:
                seen += 1
        self.seen += seen


def run_pipeline(events: list[ti.Event], sink: ti.Sink) -> float:
    pipeline = ti.Pipeline(
        ti.sources.from_iterable(events), *(ti.map(f) for f in STAGES), sink=sink
    )
    start = time.perf_counter()
    report = trio.run(pipeline.run)
    elapsed = time.perf_counter() - start
    assert report.delivered == len(events) and report.balanced, report.summary()
    return elapsed


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    events = make_events(args.n)
    times: dict[str, list[float]] = {"plain": [], "null": [], "reading": []}
    for _ in range(args.repeat):  # interleaved, so drift of the machine hits all alike
        times["plain"].append(run_plain(events))
        times["null"].append(run_pipeline(events, ti.sinks.Null()))
        sink = Reading()
        times["reading"].append(run_pipeline(events, sink))
        assert sink.seen == args.n
    rates = {name: args.n / statistics.median(t) for name, t in times.items()}
    result = {
        "n": args.n,
        "repeat": args.repeat,
        "events_per_s": rates,
        "ratio_to_plain": {name: rates[name] / rates["plain"] for name in rates},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sink_feed.json").write_text(json.dumps(result, indent=2))
    for name, rate in rates.items():
        print(f"{name:8s} {rate:12,.0f} ev/s  {rate / rates['plain']:.2f}x plain")
    return result


if __name__ == "__main__":
    main()
