"""Programs the crash scenarios run in a subprocess, to kill, signal or measure them.

Two ways in, both usable from a bare interpreter (this file imports only
trio_ingest and the standard library, never the test package):

* factories for ``trio-ingest run tests/reliability/_programs.py:<factory>``,
  configured through ``RELIABILITY_*`` environment variables (a factory takes
  no arguments): :func:`file_to_sqlite`;
* ``python tests/reliability/_programs.py <command> ...`` for the programs
  that patch something first or measure themselves: ``torn`` (kills itself in
  the middle of its N-th checkpoint write) and ``overload`` (a source ten
  times faster than its sink; prints its peak RSS).

Every delivering sink here is :class:`LoggedSQLite`: the SQLite sink plus an
append-only log of the ids each successful write delivered, from which the
tests count redeliveries across crashes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

import anyio

import trio_ingest as ti


class LoggedSQLite(ti.sinks.SQLite):
    """The SQLite sink; after each write returns, its ids are appended to ``log_path``.

    A run marks its start in the log with a line ``"--- <pid>"``. A kill between
    the database commit and the log append loses that batch's log lines: the
    log can under-count deliveries, never over-count them.
    """

    def __init__(self, path: str, table: str, log_path: str, **options: Any) -> None:
        super().__init__(path, table, **options)
        self.log_path = log_path
        self._log: int | None = None

    async def open(self) -> None:
        await super().open()
        self._log = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(self._log, f"--- {os.getpid()}\n".encode())

    async def write_batch(self, events: Sequence[ti.Event]) -> None:
        await super().write_batch(events)
        assert self._log is not None
        os.write(self._log, "".join(f"{e.id}\n" for e in events).encode())

    async def aclose(self) -> None:
        log, self._log = self._log, None
        if log is not None:
            os.close(log)
        await super().aclose()


class HangAfter(LoggedSQLite):
    """Writes ``good`` batches, then hangs in every write until cancelled."""

    def __init__(self, *args: Any, good: int, **options: Any) -> None:
        super().__init__(*args, **options)
        self.good = good
        self.writes = 0

    async def write_batch(self, events: Sequence[ti.Event]) -> None:
        self.writes += 1
        if self.writes > self.good:
            await anyio.sleep_forever()
        await super().write_batch(events)


def _env(name: str, default: str | None = None) -> str:
    value = os.environ.get(f"RELIABILITY_{name}", default)
    if value is None:
        raise SystemExit(f"RELIABILITY_{name} is not set")
    return value


def file_to_sqlite() -> ti.Pipeline:
    """A checkpointed JSON Lines file into SQLite, with a JSON Lines dead-letter file.

    Environment: ``RELIABILITY_INPUT``, ``_DB``, ``_CHECKPOINT``, ``_DEAD``,
    ``_LOG`` (paths); ``_BATCH``, ``_CAPACITY``, ``_RATE`` (lines/s, optional),
    ``_SHUTDOWN`` (seconds), ``_HANG_AFTER`` (writes before the sink hangs).
    """
    batch = int(_env("BATCH", "50"))
    rate = os.environ.get("RELIABILITY_RATE")
    source = ti.sources.JsonLines(
        _env("INPUT"),
        checkpoint=_env("CHECKPOINT"),
        commit_interval=0.05,
        rate=float(rate) if rate else None,
    )
    hang = os.environ.get("RELIABILITY_HANG_AFTER")
    sink: ti.Sink
    if hang:
        sink = HangAfter(_env("DB"), "events", _env("LOG"), good=int(hang), max_batch=batch)
    else:
        sink = LoggedSQLite(_env("DB"), "events", _env("LOG"), max_batch=batch)
    return ti.Pipeline(
        source,
        sink=sink,
        dead_letter=ti.sinks.JsonLines(_env("DEAD")),
        capacity=int(_env("CAPACITY", "500")),
        max_batch=batch,
        shutdown_timeout=float(_env("SHUTDOWN", "10")),
    )


# -- torn: die in the middle of a checkpoint write ------------------------------------


def _torn(args: argparse.Namespace) -> None:
    """Ingest like :func:`file_to_sqlite`, killing this process inside checkpoint write N.

    ``--where replace``: the new checkpoint is complete and fsync'd in its
    temporary file, the rename has not happened. ``--where write``: the
    temporary file holds half of the new checkpoint, not yet fsync'd. Each
    completed checkpoint's offset is appended to ``--commits`` first, so the
    test knows which one was the last complete.
    """
    real_replace, real_fsync = os.replace, os.fsync
    count = 0

    def replace(src: Any, dst: Any) -> None:
        nonlocal count
        if os.fspath(dst) == args.checkpoint:
            count += 1
            if count == args.kill_at and args.where == "replace":
                os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)
        if os.fspath(dst) == args.checkpoint:
            with open(args.checkpoint, encoding="utf-8") as f:
                offset = json.load(f)["offset"]
            with open(args.commits, "a", encoding="utf-8") as log:
                log.write(f"{offset}\n")

    def fsync(fd: int) -> None:
        if args.where == "write" and count + 1 == args.kill_at:
            path = os.readlink(f"/proc/self/fd/{fd}")
            if path.endswith(".tmp"):
                size = os.fstat(fd).st_size
                os.ftruncate(fd, size // 2)  # a torn temporary file...
                os.kill(os.getpid(), signal.SIGKILL)  # ...and the crash
        real_fsync(fd)

    # the checkpoint writer calls os.replace / os.fsync; this process does nothing else
    # with them that matters (the fsync of other files passes through)
    os.replace = replace  # type: ignore[assignment]
    os.fsync = fsync  # type: ignore[assignment]
    source = ti.sources.JsonLines(args.input, checkpoint=args.checkpoint, commit_interval=0)
    pipeline = ti.Pipeline(
        source,
        sink=LoggedSQLite(args.db, "events", args.log, max_batch=args.batch),
        dead_letter=ti.sinks.JsonLines(args.dead),
        capacity=args.batch * 4,
        max_batch=args.batch,
    )
    report = anyio.run(pipeline.run, backend="trio")
    sys.stdout.write(json.dumps(report.summary()) + "\n")


# -- overload: a source ten times faster than the sink --------------------------------


class SlowSink(ti.Sink):
    """Sleeps ``delay`` seconds per write of at most ``max_batch`` events; stores nothing."""

    name = "slow"

    def __init__(self, delay: float, **options: Any) -> None:
        super().__init__(**options)
        self.delay = delay
        self.count = 0

    async def write_batch(self, events: Sequence[ti.Event]) -> None:
        await anyio.sleep(self.delay)
        self.count += len(events)


def _overload(args: argparse.Namespace) -> None:
    """Push ``--events`` events of ``--payload`` bytes into a sink ~10x slower than the source."""
    pad = "x" * args.payload

    def payload(seq: int, _rng: Any) -> dict[str, Any]:
        return {"seq": seq, "pad": pad + str(seq)}  # a fresh string per event

    # measure the bare source speed first, so the sink can be made ten times slower
    probe = ti.sources.synthetic(20_000, payload=payload, seed=1)
    started = time.perf_counter()

    async def drain() -> None:
        while await probe.read(args.batch) is not None:
            pass

    anyio.run(drain, backend="trio")
    source_rate = 20_000 / (time.perf_counter() - started)
    sink_rate = source_rate / 10
    delay = args.batch / sink_rate
    sink = SlowSink(delay, max_batch=args.batch)
    pipeline = ti.Pipeline(
        ti.sources.synthetic(args.events, payload=payload, seed=2),
        ti.map(lambda p: p),
        sink=sink,
        capacity=args.capacity,
        max_batch=args.batch,
    )
    bound = pipeline.memory_bound()
    samples: list[int] = []
    rss_before = _rss_kb()

    async def main() -> ti.RunReport:
        async with anyio.create_task_group() as tg:

            async def sample() -> None:
                while True:
                    samples.append(_rss_kb())
                    await anyio.sleep(0.05)

            tg.start_soon(sample)
            report = await pipeline.run()
            tg.cancel_scope.cancel()
        return report

    report = anyio.run(main, backend="trio")
    sys.stdout.write(
        json.dumps(
            {
                "events": args.events,
                "delivered": sink.count,
                "received": report.received,
                "balanced": report.balanced,
                "completed": report.completed,
                "elapsed": report.elapsed,
                "source_rate": source_rate,
                "sink_rate": sink_rate,
                "throughput": report.throughput,
                "memory_bound": bound,
                "blocked_seconds": report.blocked_seconds,
                "edges": {
                    name: {"blocked_seconds": e.blocked_seconds, "peak_depth": e.peak_depth}
                    for name, e in report.edges.items()
                },
                "peak_depth": max(e.peak_depth for e in report.edges.values()),
                "capacity": args.capacity,
                # VmHWM, not ru_maxrss: after fork+exec ru_maxrss still counts the parent's
                # memory (Linux keeps the old image's high-water mark), VmHWM is this image's
                "peak_rss_kb": _peak_rss_kb(),
                "sampled_peak_rss_kb": max(samples, default=0),
                "rss_before_run_kb": rss_before,
            }
        )
        + "\n"
    )


def _peak_rss_kb() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _rss_kb() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="_programs.py")
    commands = parser.add_subparsers(dest="command", required=True)
    torn = commands.add_parser("torn")
    for name in ("input", "db", "checkpoint", "dead", "log", "commits"):
        torn.add_argument(f"--{name}", required=True)
    torn.add_argument("--kill-at", type=int, required=True)
    torn.add_argument("--where", choices=["replace", "write"], required=True)
    torn.add_argument("--batch", type=int, default=20)
    overload = commands.add_parser("overload")
    overload.add_argument("--events", type=int, required=True)
    overload.add_argument("--payload", type=int, default=512)
    overload.add_argument("--batch", type=int, default=64)
    overload.add_argument("--capacity", type=int, default=1_000)
    args = parser.parse_args(argv)
    {"torn": _torn, "overload": _overload}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
