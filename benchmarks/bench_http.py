"""HTTP ingest: req/s and p99 of ``sources.HTTP`` vs a bare ASGI handler; validate vs msgspec.

``python -m benchmarks.bench_http [--quick] [--seconds S] [--connections C] [--repeat R]
[--out FILE]``

Load comes from ``wrk`` (the Debian package; one thread, C keep-alive connections,
POSTing one JSON object of five fields) on loopback, against a server process
that runs on Trio with Hypercorn; the rows are interleaved ``--repeat`` times and
the medians reported:

- ``bare ASGI`` (the baseline): an ASGI app on the same Hypercorn that reads the
  body, parses it with orjson and answers a small JSON; no pipeline.
- ``HTTP -> Null, ack=accept`` and ``ack=commit``: ``Pipeline(sources.HTTP(...),
  sink=sinks.Null())``; the answer waits until the event is in the first edge /
  finished by the sink.
- ``HTTP -> SQLite, ack=accept`` and ``ack=commit``: the same into the SQLite sink
  (``synchronous=NORMAL``): the latency cost of a truthful ack is the commit row's
  p50/p99 against the accept row's.

Goal (issue 15): HTTP -> Null >= 0.8x the bare handler's requests/s. The server's
CPU seconds per request are reported too (``psutil``): on a shared machine wall-clock
req/s swings with the neighbours, while CPU per request measures what a request costs.

``validate``: ``ti.validate(Struct)`` against a plain loop calling
``msgspec.convert`` on each payload (goal: >= 0.8x the loop's events/s), two ways:
the stage's own step time (its ``busy_seconds`` in the report) against the loop's
wall time, and the marginal CPU of a whole run (``from_iterable -> validate -> Null``
minus ``from_iterable -> Null``, the same events) against the loop's CPU. The input
is frozen out of the garbage collector (``gc.freeze``) for both. Figures go to
``benchmarks/results/http.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "http.json"
BODY = '{"user": "u-1234", "action": "click", "amount": 12.5, "tags": ["a", "b"], "n": 7}'
SERVERS = ("bare", "null-accept", "null-commit", "sqlite-accept", "sqlite-commit")
LABELS = {
    "bare": "bare ASGI (orjson parse)",
    "null-accept": "HTTP -> Null, ack=accept",
    "null-commit": "HTTP -> Null, ack=commit",
    "sqlite-accept": "HTTP -> SQLite, ack=accept",
    "sqlite-commit": "HTTP -> SQLite, ack=commit",
}


# -- the server process ---------------------------------------------------------------


async def _bare_app(scope: Any, receive: Any, send: Any) -> None:
    import orjson

    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].removeprefix("lifespan.")
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = b"".join(chunks)
    n = 1
    if scope["method"] == "POST":
        value = orjson.loads(body)
        n = len(value) if isinstance(value, list) else 1
    data = orjson.dumps({"accepted": n})
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]})
    await send({"type": "http.response.body", "body": data})


def serve(kind: str, port: int, workdir: str) -> None:
    """Run one server until SIGTERM (the child process of the benchmark)."""
    import signal

    import trio

    import trio_ingest as ti

    async def main() -> None:
        if kind == "bare":
            from hypercorn.config import Config
            from hypercorn.trio import serve as hyper

            config = Config()
            config.bind = [f"127.0.0.1:{port}"]
            config.accesslog = None
            await hyper(_bare_app, config, mode="asgi")  # type: ignore[arg-type]
            return
        sink_kind, ack = kind.split("-")
        source = ti.sources.HTTP(port=port, ack=ack)
        sink: ti.Sink = ti.sinks.Null()
        if sink_kind == "sqlite":
            sink = ti.sinks.SQLite(Path(workdir) / "bench.db", "bench_http", synchronous="NORMAL")
        pipeline = ti.Pipeline(source, sink=sink)
        async with trio.open_nursery() as nursery:

            async def on_term() -> None:
                with trio.open_signal_receiver(signal.SIGTERM) as signals:
                    async for _ in signals:
                        pipeline.request_stop()
                        return

            nursery.start_soon(on_term)
            await pipeline.run()
            nursery.cancel_scope.cancel()

    trio.run(main)


# -- the load --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def server(kind: str, workdir: str) -> Iterator[tuple[int, int]]:
    port = _free_port()
    child = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bench_http", "--serve", kind, "--port", str(port),
         "--workdir", workdir],
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline or child.poll() is not None:
                    raise RuntimeError(f"the {kind} server did not start") from None
                time.sleep(0.05)
        yield port, child.pid
    finally:
        child.terminate()
        try:
            child.wait(20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    assert match is not None, text
    return float(match[1]) * _UNITS[match[2]]


def _cpu(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def wrk(port: int, seconds: int, connections: int, pid: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\n'
            f"wrk.body = {json.dumps(BODY)}\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
    cpu_before = _cpu(pid)
    try:
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name,
             f"http://127.0.0.1:{port}/events"],
            capture_output=True, text=True, check=True, timeout=seconds + 30,
        ).stdout
    finally:
        os.unlink(script.name)
    cpu = _cpu(pid) - cpu_before
    requests = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    latency = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.MULTILINE))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:(.*)", out)
    return {
        "requests_per_second": rps,
        "p50_ms": round(_seconds(latency["50"]) * 1e3, 3),
        "p99_ms": round(_seconds(latency["99"]) * 1e3, 3),
        # the server's own CPU per request: what a request costs, whatever the neighbours do
        "server_cpu_us_per_request": round(cpu / requests * 1e6, 1) if requests else None,
        "non_2xx": int(non2xx[1]) if non2xx else 0,
        "socket_errors": errors[1].strip() if errors else "",
    }


# -- validate against msgspec.convert ------------------------------------------------------


def bench_validate(n: int, repeat: int, *, tracked: bool = True) -> dict[str, Any]:
    import msgspec
    import trio

    import trio_ingest as ti

    class Click(msgspec.Struct, gc=tracked):  # gc=False: msgspec's knob for untracked Structs
        user: str
        action: str
        amount: float
        tags: list[str]
        n: int

    payloads = [json.loads(BODY) | {"n": i} for i in range(n)]
    # the input is fixture data: keep the collector from walking it in one contender only
    gc.collect()
    gc.freeze()

    def plain() -> float:
        convert = msgspec.convert
        started = time.process_time()
        for p in payloads:  # each result dropped, as the pipeline's Null sink drops them
            convert(p, Click)
        return time.process_time() - started

    busy_s: list[float] = []

    def pipeline(*stages: Any) -> float:
        p = ti.Pipeline(ti.sources.from_iterable(payloads), *stages, sink=ti.sinks.Null())
        started = time.process_time()
        report = trio.run(p.run)
        took = time.process_time() - started
        assert report.delivered == n
        if stages:
            busy_s.append(report.nodes["validate"].busy_seconds)
        return took

    def plain_wall() -> float:
        convert = msgspec.convert
        started = time.perf_counter()
        for p in payloads:
            convert(p, Click)
        return time.perf_counter() - started

    plain_s, with_s, without_s, wall_s = [], [], [], []
    for _ in range(repeat):
        plain_s.append(plain())
        wall_s.append(plain_wall())
        without_s.append(pipeline())
        with_s.append(pipeline(ti.validate(Click)))
    loop = statistics.median(plain_s)
    marginal = statistics.median(with_s) - statistics.median(without_s)
    busy, wall = statistics.median(busy_s), statistics.median(wall_s)
    result = {
        "struct": f"msgspec.Struct, gc={tracked}",
        "events": n,
        # the stage's own step time (convert, batch assembly, counters; the runtime's clock)
        # against the loop's wall time: the cost of validate itself, without the run around it
        "plain_convert_events_per_second": round(n / wall),
        "validate_step_events_per_second": round(n / busy),
        "ratio_validate_step_to_plain_loop": round(wall / busy, 3),
        # and in a whole run: validate's extra CPU over the same run without it (this also
        # charges the garbage collector's work on the Structs the batches keep alive)
        "plain_convert_events_per_cpu_second": round(n / loop),
        "validate_marginal_events_per_cpu_second": round(n / marginal) if marginal > 0 else 0,
        "pipeline_without_validate_events_per_cpu_second": round(n / statistics.median(without_s)),
        "pipeline_with_validate_events_per_cpu_second": round(n / statistics.median(with_s)),
        "ratio_validate_to_plain_loop": round(loop / marginal, 3) if marginal > 0 else None,
    }
    gc.unfreeze()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port, args.workdir)
        return 0
    seconds = 2 if args.quick else args.seconds
    repeat = 1 if args.quick else args.repeat
    results: dict[str, Any] = {
        "benchmark": "http",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_average_1m": round(os.getloadavg()[0], 2)},
        "load": {"tool": "wrk", "threads": 1, "connections": args.connections,
                 "seconds": seconds, "rounds": repeat, "body": BODY},
        "servers": {},
    }
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk): skipping the HTTP rows", flush=True)
    else:
        runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in SERVERS}
        with tempfile.TemporaryDirectory() as workdir:
            for _ in range(repeat):  # interleaved rounds: a drift of the machine hits all rows
                for kind in SERVERS:
                    with server(kind, workdir) as (port, pid):
                        wrk(port, 1, args.connections, pid)  # warm up
                        row = wrk(port, seconds, args.connections, pid)
                    runs[kind].append(row)
                    print(f"{LABELS[kind]:<28} {row['requests_per_second']:>9.0f} req/s  "
                          f"p50 {row['p50_ms']:.2f} ms  p99 {row['p99_ms']:.2f} ms  "
                          f"server CPU {row['server_cpu_us_per_request']} us/req  "
                          f"non-2xx {row['non_2xx']}", flush=True)
        for kind, rows in runs.items():
            results["servers"][kind] = {
                "label": LABELS[kind],
                "requests_per_second": statistics.median(r["requests_per_second"] for r in rows),
                "p50_ms": statistics.median(r["p50_ms"] for r in rows),
                "p99_ms": statistics.median(r["p99_ms"] for r in rows),
                "server_cpu_us_per_request": statistics.median(
                    r["server_cpu_us_per_request"] for r in rows
                ),
                "non_2xx": sum(r["non_2xx"] for r in rows),
                "runs": rows,
            }
        bare = results["servers"]["bare"]["requests_per_second"]
        for kind in SERVERS[1:]:
            row = results["servers"][kind]
            row["ratio_to_bare"] = round(row["requests_per_second"] / bare, 3)
            # requests per server CPU second, relative to the bare handler's
            row["cpu_ratio_to_bare"] = round(
                results["servers"]["bare"]["server_cpu_us_per_request"]
                / row["server_cpu_us_per_request"], 3,
            )
        commit, accept = results["servers"]["sqlite-commit"], results["servers"]["sqlite-accept"]
        results["truthful_ack_cost_sqlite_ms"] = {
            "p50": round(commit["p50_ms"] - accept["p50_ms"], 3),
            "p99": round(commit["p99_ms"] - accept["p99_ms"], 3),
        }
    n, rounds = (20_000, 1) if args.quick else (200_000, 5)
    results["validate"] = bench_validate(n, rounds)
    results["validate_untracked_struct"] = bench_validate(n, rounds, tracked=False)
    print(json.dumps([results["validate"], results["validate_untracked_struct"]], indent=2),
          flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
