"""Redis Streams scale-out: events/s consumed+acked by 1 and 2 worker processes; produce rate.

``python -m benchmarks.bench_redis [--quick] [--repeat N] [--url URL] [--out FILE]``

One stream of N events (300k; quick: 50k) written by ``sinks.RedisStreams``,
then consumed by a consumer group, each configuration on a fresh group of
the same stream, in the same run:

- ``coredis script`` (the baseline): per process, a plain coredis loop on
  Trio, ``XREADGROUP COUNT 256 BLOCK 100`` then ``XACK`` of what it read;
- ``redis-py script`` (reference): the same loop with redis-py (hiredis
  parser when installed), synchronous; and ``redis-py in threads``: that loop
  on Trio, each call in a worker thread (how a Trio source would use it);
- ``trio_ingest worker``: per process, ``trio-ingest worker`` running
  ``Pipeline(sources.RedisStreams(...), sink=sinks.Null())`` (decoding every
  entry into an Event, acking after the sink, as in production).

Each with 1 and 2 processes (this machine has 2 cores, shared with Redis).
Every consumer first registers in the group and blocks on an empty group; the
clock starts when the bench moves the group back to the start of the stream
(``XGROUP SETID 0``, plus one entry to wake the blocked readers) and stops
when Redis reports every entry delivered and acknowledged. Configurations
are interleaved, ``--repeat`` times; the median is reported.

Produce: ``sinks.RedisStreams`` in a pipeline from prebuilt events (Lua
XADD per batch of 1000) against a plain coredis pipelined XADD loop.

Goals (issue 7): trio_ingest >= 0.8x the coredis script per process, and
2 processes >= 1.6x one. Figures go to ``benchmarks/results/redis.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
import trio

import trio_ingest as ti

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "redis.json"
ROOT = Path(__file__).resolve().parent.parent
COUNT = 256


def null_pipeline(source: ti.Source) -> ti.Pipeline:
    """The worker factory under test: every entry decoded, then discarded."""
    return ti.Pipeline(source, sink=ti.sinks.Null())


def _payload(i: int) -> dict[str, Any]:
    return {"seq": i, "sensor": f"sensor-{i % 64}", "value": (i * 7919) % 1000 / 10.0}


def _events(n: int) -> list[ti.Event]:
    now = time.time()
    return [ti.Event(id=f"ev-{i}", payload=_payload(i), key=f"sensor-{i % 64}", event_time=now)
            for i in range(n)]


# -- a tiny synchronous Redis helper for the bench itself ---------------------------


def _call(url: str, *args: Any) -> Any:
    import coredis

    async def run() -> Any:
        async with coredis.Redis.from_url(url, decode_responses=True) as client:
            return await client.create_request(str(args[0]).encode(), *args[1:],
                                               callback=lambda r: r)

    return trio.run(run)


# -- produce -------------------------------------------------------------------------


def produce_trio_ingest(url: str, stream: str, events: list[ti.Event]) -> float:
    """sinks.RedisStreams from prebuilt events; returns events/s."""
    sink = ti.sinks.RedisStreams(stream, url=url)
    pipeline = ti.Pipeline(ti.sources.from_iterable(events), sink=sink, max_batch=1000)
    started = time.perf_counter()
    report = trio.run(pipeline.run)
    elapsed = time.perf_counter() - started
    assert report.delivered == len(events)
    return len(events) / elapsed


def produce_coredis(url: str, stream: str, events: list[ti.Event]) -> float:
    """A plain coredis pipelined XADD loop (1000 per pipeline), same fields; events/s."""
    import coredis

    async def run() -> float:
        async with coredis.Redis.from_url(url) as client:
            started = time.perf_counter()
            for start in range(0, len(events), 1000):
                async with client.pipeline(transaction=False) as pipe:
                    for e in events[start:start + 1000]:
                        pipe.xadd(stream, {
                            "id": e.id, "event_time": repr(e.event_time),
                            "payload": json.dumps(e.payload), "key": json.dumps(e.key),
                        })
            return len(events) / (time.perf_counter() - started)

    return trio.run(run)


# -- the baseline consumers (run as subprocesses of this module) ---------------------


async def _coredis_loop(url: str, stream: str, group: str, consumer: str) -> None:
    import coredis

    async with coredis.Redis.from_url(url) as client:
        await client.xgroup_createconsumer(stream, group, consumer)
        key = stream.encode()
        while True:
            reply = await client.xreadgroup(group, consumer, {stream: ">"}, count=COUNT,
                                            block=100)
            if reply:
                await client.xack(stream, group, [e.identifier for e in reply[key]])


def _redispy_loop(url: str, stream: str, group: str, consumer: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    client.xgroup_createconsumer(stream, group, consumer)
    while True:
        reply = client.xreadgroup(group, consumer, {stream: ">"}, count=COUNT, block=100)
        if reply:
            client.xack(stream, group, *[entry_id for entry_id, _ in reply[0][1]])


async def _redispy_thread_loop(url: str, stream: str, group: str, consumer: str) -> None:
    """redis-py called from Trio through worker threads, as a Trio source would have to."""
    import redis

    client = redis.Redis.from_url(url)
    await trio.to_thread.run_sync(client.xgroup_createconsumer, stream, group, consumer)

    def read() -> Any:
        return client.xreadgroup(group, consumer, {stream: ">"}, count=COUNT, block=100)

    while True:
        reply = await trio.to_thread.run_sync(read)
        if reply:
            ids = [entry_id for entry_id, _ in reply[0][1]]
            await trio.to_thread.run_sync(client.xack, stream, group, *ids)


async def _api_loop(url: str, stream: str, group: str, consumer: str) -> None:
    """The worker's pipeline through the Python API, without the CLI around it."""
    source = ti.sources.RedisStreams(stream, group, consumer, url=url)
    await null_pipeline(source).run()


def _consumer_command(kind: str, url: str, stream: str, group: str, consumer: str) -> list[str]:
    if kind == "trio_ingest":
        return [sys.executable, "-m", "trio_ingest", "worker",
                "benchmarks.bench_redis:null_pipeline", "--redis", url, "--group", group,
                "--consumer", consumer, "--stream", stream, "--quiet"]
    return [sys.executable, "-m", "benchmarks.bench_redis", "--consumer-loop", kind,
            "--url", url, "--stream", stream, "--group", group, "--consumer", consumer]


async def _release_and_wait(url: str, stream: str, group: str) -> float:
    """Rewind the group to the stream's start, wake the readers; seconds until all is acked."""
    import coredis

    async with coredis.Redis.from_url(url, decode_responses=True) as client:
        await client.create_request(b"XGROUP", "SETID", stream, group, "0", callback=_raw)
        started = time.perf_counter()
        last = await client.create_request(b"XADD", stream, "*", "id", f"kick-{group}",
                                           "payload", "null", callback=_raw)
        while True:
            for info in await client.create_request(b"XINFO", "GROUPS", stream,
                                                    callback=_raw):
                if info["name"] == group:
                    if info["last-delivered-id"] == last and int(info["pending"]) == 0:
                        return time.perf_counter() - started
            await trio.sleep(0.005)


def _raw(response: Any) -> Any:
    return response


def consume(kind: str, processes: int, url: str, stream: str, n: int) -> tuple[float, float]:
    """Start ``processes`` consumers of ``kind`` on a fresh group; time them draining ``n``.

    Returns events/s, and the consumers' CPU microseconds per event (user +
    system, all processes): the cost that does not depend on what else the
    machine is running.
    """
    group = f"bench-{kind}-{processes}-{uuid.uuid4().hex[:6]}"
    _call(url, "XGROUP", "CREATE", stream, group, "$")
    consumers = [f"c{i}" for i in range(processes)]
    procs = [subprocess.Popen(_consumer_command(kind, url, stream, group, c), cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for c in consumers]
    try:
        deadline = time.monotonic() + 60
        while True:  # every consumer registered, hence about to block on the empty group
            names = {row["name"] if isinstance(row, dict) else row[1]
                     for row in _call(url, "XINFO", "CONSUMERS", stream, group)}
            if set(consumers) <= names:
                break
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{kind} consumer died: {p.stderr.read().decode()[-2000:]}"
                                       if p.stderr else f"{kind} consumer died")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind} consumers did not start")
            time.sleep(0.05)
        time.sleep(0.5)
        watched = [psutil.Process(p.pid) for p in procs]
        cpu_before = sum(_cpu(w) for w in watched)
        elapsed = trio.run(_release_and_wait, url, stream, group)
        cpu = sum(_cpu(w) for w in watched) - cpu_before
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        _call(url, "XGROUP", "DESTROY", stream, group)
    return (n + 1) / elapsed, cpu / (n + 1) * 1e6


def _cpu(process: Any) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


# -- the run -------------------------------------------------------------------------


def _redispy_available() -> tuple[bool, str]:
    try:
        import redis
    except ImportError:
        return False, "redis-py is not installed"
    hiredis = getattr(getattr(redis, "utils", None), "HIREDIS_AVAILABLE", False)
    return True, f"redis-py {redis.__version__}, hiredis {'on' if hiredis else 'off'}"


def run_all(*, quick: bool = False, repeat: int | None = None, url: str = DEFAULT_URL
            ) -> dict[str, Any]:
    """Run every measurement; returns the figures (also what is written to the JSON file)."""
    n = 50_000 if quick else 300_000
    repeat = repeat or (1 if quick else 3)
    stream = f"bench-redis-{uuid.uuid4().hex[:8]}"
    events = _events(n)
    redispy, redispy_note = _redispy_available()
    kinds = ["coredis", "trio_ingest"] + (["redispy", "redispy_thread"] if redispy else [])
    figures: dict[str, Any] = {"produce": {}, "consume": {}}
    try:
        produce: dict[str, list[float]] = {"trio_ingest": [], "coredis": []}
        for _ in range(repeat):
            _call(url, "DEL", stream)
            produce["coredis"].append(produce_coredis(url, stream, events))
            _call(url, "DEL", stream)
            produce["trio_ingest"].append(produce_trio_ingest(url, stream, events))
        figures["produce"] = {k: statistics.median(v) for k, v in produce.items()}
        figures["produce_runs"] = produce
        runs: dict[str, list[float]] = {f"{k}x{p}": [] for k in kinds for p in (1, 2)}
        cpu: dict[str, list[float]] = {f"{k}x{p}": [] for k in kinds for p in (1, 2)}
        for _ in range(repeat):
            for kind in kinds:
                for processes in (1, 2):
                    rate, us = consume(kind, processes, url, stream, n)
                    runs[f"{kind}x{processes}"].append(rate)
                    cpu[f"{kind}x{processes}"].append(us)
                    print(f"  {kind} x{processes}: {rate:,.0f} events/s, "
                          f"{us:.1f} CPU us/event", flush=True)
        figures["consume"] = {k: statistics.median(v) for k, v in runs.items()}
        figures["consume_cpu_us_per_event"] = {k: statistics.median(v) for k, v in cpu.items()}
        figures["consume_runs"] = runs
    finally:
        _call(url, "DEL", stream)
    c = figures["consume"]
    figures["ratios"] = {
        "trio_ingest_vs_coredis_1_process": c["trio_ingestx1"] / c["coredisx1"],
        "trio_ingest_vs_coredis_2_processes": c["trio_ingestx2"] / c["coredisx2"],
        "trio_ingest_2_vs_1_processes": c["trio_ingestx2"] / c["trio_ingestx1"],
        "coredis_2_vs_1_processes": c["coredisx2"] / c["coredisx1"],
        "cpu_per_event_trio_ingest_vs_coredis": (
            figures["consume_cpu_us_per_event"]["trio_ingestx1"]
            / figures["consume_cpu_us_per_event"]["coredisx1"]),
        "produce_trio_ingest_vs_coredis_pipeline":
            figures["produce"]["trio_ingest"] / figures["produce"]["coredis"],
    }
    if redispy:
        figures["ratios"]["redispy_vs_coredis_1_process"] = c["redispyx1"] / c["coredisx1"]
        figures["ratios"]["redispy_thread_vs_coredis_1_process"] = (
            c["redispy_threadx1"] / c["coredisx1"])
    figures["goals"] = {
        "per_process_>=0.8x_coredis": figures["ratios"]["trio_ingest_vs_coredis_1_process"] >= 0.8,
        "2_processes_>=1.6x_one": figures["ratios"]["trio_ingest_2_vs_1_processes"] >= 1.6,
    }
    figures["config"] = {
        "events": n, "repeat": repeat, "count_per_read": COUNT, "quick": quick,
        "redis_py": redispy_note,
    }
    return figures


def _environment(url: str) -> dict[str, Any]:
    info = _call(url, "INFO", "server")
    version = next((line.split(":", 1)[1].strip() for line in str(info).splitlines()
                    if line.startswith("redis_version:")), "?")
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "redis_server": version,
        "coredis": metadata.version("coredis"),
        "trio": metadata.version("trio"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_redis",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="50k events, one run each")
    parser.add_argument("--repeat", type=int, default=None, help="runs per configuration")
    parser.add_argument("--url", default=DEFAULT_URL, help="Redis URL")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file to write")
    # internal: the baseline consumer loops run as subprocesses of this module
    parser.add_argument("--consumer-loop", choices=["coredis", "redispy", "redispy_thread", "api"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--stream", help=argparse.SUPPRESS)
    parser.add_argument("--group", help=argparse.SUPPRESS)
    parser.add_argument("--consumer", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.consumer_loop:  # runs until the bench terminates it (SIGTERM's default action)
        if args.consumer_loop == "coredis":
            trio.run(_coredis_loop, args.url, args.stream, args.group, args.consumer)
        elif args.consumer_loop == "api":
            trio.run(_api_loop, args.url, args.stream, args.group, args.consumer)
        elif args.consumer_loop == "redispy_thread":
            trio.run(_redispy_thread_loop, args.url, args.stream, args.group, args.consumer)
        else:
            _redispy_loop(args.url, args.stream, args.group, args.consumer)
        return 0
    try:
        env = _environment(args.url)
    except Exception as exc:  # noqa: BLE001 -- any failure means no server to measure
        print(f"error: Redis is not reachable at {args.url}: {exc}", file=sys.stderr)
        return 1
    print(f"bench_redis: {'quick' if args.quick else 'full'} run against {args.url}", flush=True)
    figures = run_all(quick=args.quick, repeat=args.repeat, url=args.url)
    figures["environment"] = env
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(figures, indent=2) + "\n")
    tmp.replace(args.out)
    p, c, r = figures["produce"], figures["consume"], figures["ratios"]
    print(f"produce: trio_ingest {p['trio_ingest']:,.0f}/s, coredis pipeline "
          f"{p['coredis']:,.0f}/s")
    for key, value in c.items():
        us = figures["consume_cpu_us_per_event"][key]
        print(f"consume {key}: {value:,.0f} events/s ({us:.1f} CPU us/event)")
    for key, value in r.items():
        print(f"{key}: {value:.2f}")
    print(f"goals: {figures['goals']}  ->  {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
