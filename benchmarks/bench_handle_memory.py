"""The embedding handle's memory over many sends: RSS after each checkpoint count of sends.

A serving pipeline (``handle.send`` one payload at a time -> map -> Null sink) must keep
flat memory however long it serves. Prints and writes RSS (MB) at each of ``--at``
(default 1M and 10M sends) to ``benchmarks/results/handle_memory.json``. Run:
``python -m benchmarks.bench_handle_memory [--at 1000000 10000000]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import psutil
import trio

import trio_ingest as ti


async def serve(points: list[int]) -> list[dict[str, float]]:
    process = psutil.Process()
    pipeline = ti.Pipeline(ti.sources.from_iterable([]), ti.map(lambda p: p), sink=ti.sinks.Null())
    out: list[dict[str, float]] = []
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(pipeline.serve)
        sent = 0
        start = time.perf_counter()
        for point in sorted(points):
            while sent < point:
                await handle.send(sent)
                sent += 1
            rss = process.memory_info().rss / 1e6
            out.append({"sends": sent, "rss_mb": rss, "seconds": time.perf_counter() - start})
            print(f"{sent:>12,} sends  RSS {rss:8.1f} MB  ({time.perf_counter() - start:.0f} s)")
        report = await handle.stop()
        assert report.balanced and report.in_flight == 0
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--at", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    result = trio.run(serve, args.at)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "handle_memory.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
