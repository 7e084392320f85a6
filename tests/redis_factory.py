"""Pipelines for the Redis scale-out tests (not a test module).

Run by ``python -m trio_ingest worker tests.redis_factory:build -o db=... -o dead=...``:
the worker hands its RedisStreams source to ``build``, which returns the pipeline.
"""

from __future__ import annotations

import os
from typing import Any

import trio_ingest as ti


def build(
    source: ti.Source,
    db: str,
    dead: str,
    table: str = "events",
    latency: str = "0",
    crash_log: str = "",
    **_ignored: str,
) -> ti.Pipeline:
    """SQLite sink (optionally slowed down), dead letters to a JSON Lines file.

    A payload with ``"poison": true`` kills the process (as a segfault or an
    out-of-memory kill would), after appending a line to ``crash_log``.
    """
    sink: ti.Sink = ti.sinks.SQLite(db, table, synchronous="NORMAL", busy_timeout=60.0)
    delay = float(latency)
    if delay:
        sink = ti.testing.FlakySink(sink, latency=(delay, delay))

    def check(payload: Any) -> Any:
        if isinstance(payload, dict) and payload.get("poison"):
            if crash_log:
                with open(crash_log, "a") as f:
                    f.write(f"{os.getpid()}\n")
            os._exit(3)
        return payload

    return ti.Pipeline(
        source,
        ti.map(check, name="check"),
        sink=sink,
        dead_letter=ti.sinks.JsonLines(dead, name="dead_letters"),
    )


def not_a_graph(source: ti.Source) -> str:
    """A factory that breaks the contract: returns no graph."""
    return "pipeline?"


def ignores_its_source(source: ti.Source) -> ti.Pipeline:
    """A factory that breaks the contract: its pipeline does not read the source."""
    return ti.Pipeline(ti.sources.from_iterable([1]), sink=ti.sinks.Memory())


# -- helpers shared by tests/test_redis_*.py ------------------------------------------


def redis_command(url: str, *args: Any) -> Any:
    """Run one Redis command synchronously (bookkeeping for tests), reply decoded to str.

    Runs its own Trio loop in a fresh thread, so it works from sync tests and,
    through ``anyio.to_thread.run_sync``, from async tests on either backend.
    """
    import threading

    import coredis
    import trio

    async def call() -> Any:
        async with coredis.Redis.from_url(url, decode_responses=True) as client:
            return await client.create_request(
                str(args[0]).encode(), *args[1:], callback=lambda r: r
            )

    box: list[Any] = []

    def run() -> None:
        try:
            box.append(trio.run(call))
        except BaseException as exc:  # re-raised in the caller's thread
            box.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


def pending_ids(url: str, stream: str, group: str, consumer: str | None = None) -> list[str]:
    """Entry ids in the group's pending list (of one consumer, or all)."""
    args: list[Any] = ["XPENDING", stream, group, "-", "+", 1_000_000]
    if consumer is not None:
        args.append(consumer)
    return [row[0] for row in redis_command(url, *args)]


class PrivateRedis:
    """A redis-server of our own (free port, own data dir, AOF on) that tests may kill."""

    def __init__(self, data_dir: str) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.data_dir = data_dir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: Any = None

    def start(self) -> None:
        import shutil
        import subprocess
        import time

        binary = shutil.which("redis-server")
        if binary is None:
            import pytest

            pytest.skip("redis-server is not installed")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.data_dir,
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
             "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                if redis_command(self.url, "PING") == "PONG":
                    return
            except Exception:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: a crash, not a clean shutdown (the AOF keeps what was fsync'd)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
