"""Tumbling-window sum per key over N events: trio_ingest vs a plain dict loop vs bytewax.

The same events (1,000 keys, event times advancing 1 ms per event, up to 2 s of
disorder) are summed per key in 10 s tumbling windows with ``max_delay=2``:
by a plain Python dict loop (the ceiling), by ``ti.windows.tumbling`` from an
in-memory source to a Null sink, and by bytewax's ``fold_window`` when bytewax
is installed, in the same run. Prints events/s and the ratio to the plain loop,
and writes them to ``benchmarks/results/windows.json``. Run:
``python -m benchmarks.bench_windows [--events 1000000]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import trio

import trio_ingest as ti

SIZE = 10.0
DELAY = 2.0


def workload(n: int, seed: int = 1) -> list[tuple[str, float, float]]:
    rng = random.Random(seed)
    keys = [f"k{i}" for i in range(1000)]
    return [
        (keys[rng.randrange(1000)], float(rng.randrange(100)), i * 0.001 - rng.random() * DELAY)
        for i in range(n)
    ]


def plain_loop(rows: list[tuple[str, float, float]]) -> int:
    """The ceiling: a dict of sums per (key, start), the same lateness rule, results at the end."""
    sums: dict[tuple[str, float], float] = {}
    top = -math.inf
    late = 0
    for key, amount, t in rows:
        start = math.floor(t / SIZE) * SIZE
        if start + SIZE <= top - DELAY:
            late += 1
            continue
        k = (key, start)
        sums[k] = sums.get(k, 0.0) + amount
        if t > top:
            top = t
    return len(sums)


def trio_ingest_input(rows: list[tuple[str, float, float]]) -> list[ti.Event]:
    return [
        ti.Event(f"e{i}", {"user": k, "amount": a}, event_time=t)
        for i, (k, a, t) in enumerate(rows)
    ]


def trio_ingest_run(events: list[ti.Event]) -> int:
    win = ti.windows.tumbling(
        SIZE, key=lambda p: p["user"], agg=ti.agg.sum("amount"), max_delay=DELAY, name="spend"
    )
    sink = ti.sinks.Null()
    pipeline = ti.Pipeline(
        ti.sources.from_iterable(events), win, sink=sink, dead_letter=ti.sinks.Null()
    )
    report = trio.run(pipeline.run)
    assert report.in_flight == 0
    return report.delivered


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def bytewax_input(rows: list[tuple[str, float, float]]) -> list[Any]:
    return [(k, {"amount": a, "ts": EPOCH + timedelta(seconds=t)}) for k, a, t in rows]


def bytewax_run(items: list[Any]) -> int | None:
    try:
        import bytewax.operators as op
        from bytewax.dataflow import Dataflow
        from bytewax.operators.windowing import EventClock, TumblingWindower, fold_window
        from bytewax.testing import TestingSink, TestingSource, run_main
    except ImportError:
        return None
    epoch = EPOCH
    flow = Dataflow("windows")
    stream = op.input("in", flow, TestingSource(items, batch_size=256))
    clock = EventClock(
        lambda p: p["ts"], wait_for_system_duration=timedelta(seconds=DELAY)
    )
    windower = TumblingWindower(length=timedelta(seconds=SIZE), align_to=epoch)
    out = fold_window(
        "sum", stream, clock, windower, float, lambda acc, p: acc + p["amount"], lambda a, b: a + b
    )
    got: list[Any] = []
    op.output("out", out.down, TestingSink(got))
    run_main(flow)
    return len(got)


def timed(fn: Callable[[Any], Any], rows: Any) -> tuple[float, Any]:
    # every contender starts with no garbage-collection debt: the inputs built for all
    # of them would otherwise make a full collection land in whichever runs next
    gc.collect()
    start = time.perf_counter()
    result = fn(rows)
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--bytewax-events", type=int, default=100_000,
        help="bytewax runs over the first N events only (it is ~100x slower here)",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    rows = workload(args.events)
    figures: dict[str, Any] = {"events": args.events}
    base, windows = timed(plain_loop, rows)
    figures["plain loop"] = {
        "seconds": base, "events_per_s": args.events / base, "windows": windows
    }
    contenders: list[tuple[str, Callable[[Any], Any], Any]] = [
        ("trio_ingest", trio_ingest_run, trio_ingest_input(rows)),
        ("bytewax", bytewax_run, bytewax_input(rows[: args.bytewax_events])),
    ]
    for name, fn, prepared in contenders:  # inputs built beforehand, as the plain loop's are
        took, got = timed(fn, prepared)
        if got is None:
            continue
        rate = len(prepared) / took
        figures[name] = {
            "events": len(prepared),
            "seconds": took,
            "events_per_s": rate,
            "vs_plain_loop": rate / figures["plain loop"]["events_per_s"],
            "windows": got,
        }
    for name, value in figures.items():
        if isinstance(value, dict):
            ratio = value.get("vs_plain_loop", 1.0)
            print(
                f"{name:<12} {value['events_per_s']:>12,.0f} events/s  {ratio:5.2f}x plain loop"
                f"  ({value['windows']:,} windows)"
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "windows.json").write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
