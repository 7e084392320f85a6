"""Scale-out over Kafka: ``trio-ingest worker --kafka`` processes in one consumer group.

Each worker is ``python -m trio_ingest worker tests.kafka_factory:build``
writing to one shared SQLite database: ``events`` keeps each id once (what an
idempotent sink stores), ``deliveries`` every write with the writer's pid, so
redeliveries are counted exactly. Event ids are ``topic/partition/offset``.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka_factory import GROUP_CONFIG, committed, consume_all, produce

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class Workers:
    """Worker processes of one group, started and stopped by the test."""

    def __init__(self, bootstrap: str, topic: str, tmp: Path, **options: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.group = f"{topic}-workers"
        self.tmp = tmp
        self.db = tmp / "out.sqlite"
        self.options = options
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *more: str) -> None:
        options = {"db": str(self.db), "dead": str(self.tmp / f"dead-{name}.jsonl"),
                   **self.options}
        args = [sys.executable, "-m", "trio_ingest", "worker", "tests.kafka_factory:build",
                "--kafka", self.bootstrap, "--topic", self.topic, "--group", self.group,
                "--consumer", name, "--commit-interval", "0.2", "--json",
                "--log-level", "warning", *more]
        for key, value in GROUP_CONFIG.items():
            args += ["-X", f"{key}={value}"]
        for key, value in options.items():
            args += ["-o", f"{key}={value}"]
        self.procs[name] = subprocess.Popen(
            args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def check_alive(self) -> None:
        """Fail with a worker's own error output if it exited on its own."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                _out, err = proc.communicate(timeout=30)
                raise AssertionError(
                    f"worker {name} exited with {proc.returncode}: {err.decode()[-3000:]}"
                )

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.kill()
        proc.communicate(timeout=30)

    def stop(self, name: str, timeout: float = 60) -> dict[str, Any]:
        """SIGTERM (a graceful stop); the worker's --json summary."""
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err.decode()[-3000:]
        return dict(json.loads(out))

    def close(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.communicate(timeout=30)
        self.procs.clear()

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        if not self.db.exists():
            return []
        with sqlite3.connect(self.db, timeout=60) as conn:
            try:
                return list(conn.execute(sql).fetchall())
            except sqlite3.OperationalError:
                return []  # the first worker has not created the tables yet

    def count(self, table: str) -> int:
        rows = self.query(f"SELECT count(*) FROM {table}")
        return int(rows[0][0]) if rows else 0

    def deliveries(self) -> list[tuple[int, int, int]]:
        """(partition, offset, pid) of every write, in no particular order."""
        out = []
        for ident, pid in self.query("SELECT id, pid FROM deliveries"):
            _, partition, offset = ident.rsplit("/", 2)
            out.append((int(partition), int(offset), int(pid)))
        return out


@pytest.fixture
def workers_factory(kafka_bootstrap: str, tmp_path: Path) -> Any:
    made: list[Workers] = []

    def make(topic: str, **options: str) -> Workers:
        w = Workers(kafka_bootstrap, topic, tmp_path, **options)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()


def produce_n(bootstrap: str, topic: str, n: int, size: int = 0) -> dict[int, int]:
    pad = "x" * size
    return produce(bootstrap, topic, [{"n": i, "pad": pad} for i in range(n)])


def test_sigkill_then_rerun_loses_nothing_and_redelivers_only_the_uncommitted(
    kafka_bootstrap: str, kafka_topics: Callable[[int], str], workers_factory: Any
) -> None:
    topic = kafka_topics(4)
    n = 8000
    ends = produce_n(kafka_bootstrap, topic, n)
    w = workers_factory(topic, latency="0.03", max_batch="100", capacity="1000")
    w.start("w1")
    wait_for(lambda: w.count("events") >= 2000, 60, "2000 events before the kill")
    w.kill("w1")  # SIGKILL: nothing gets to say goodbye
    at_kill = committed(kafka_bootstrap, w.group, topic, 4)
    before = {(p, o) for p, o, _ in w.deliveries()}
    w.start("w2")
    wait_for(lambda: w.count("events") == n, 90, "every event after the rerun")
    w.stop("w2")
    assert w.query("SELECT count(*), count(DISTINCT id) FROM events") == [(n, n)]  # 0 lost
    assert committed(kafka_bootstrap, w.group, topic, 4) == ends
    seen: dict[tuple[int, int], int] = {}
    for p, o, _ in w.deliveries():
        seen[(p, o)] = seen.get((p, o), 0) + 1
    twice = {k for k, c in seen.items() if c > 1}
    assert all(c <= 2 for c in seen.values())
    # duplicates only within the uncommitted window: delivered before the kill, past the
    # committed offset (a committed offset is never redelivered)
    for p, o in twice:
        assert (p, o) in before and o >= max(at_kill[p], 0), (p, o, at_kill[p])
    uncommitted = sum(1 for p, o in before if o >= max(at_kill[p], 0))
    assert len(twice) <= uncommitted


def test_two_workers_one_killed_the_survivor_takes_its_partitions(
    kafka_bootstrap: str, kafka_topics: Callable[[int], str], workers_factory: Any
) -> None:
    topic = kafka_topics(4)
    n = 8000
    ends: dict[int, int] = {}
    produced = 0

    def more(k: int) -> None:
        nonlocal produced
        batch = [{"n": i, "pad": ""} for i in range(produced, produced + k)]
        for part, end in produce(kafka_bootstrap, topic, batch).items():
            ends[part] = max(ends.get(part, 0), end)
        produced += k

    more(1000)
    w = workers_factory(topic, latency="0.03", max_batch="100", capacity="1000")
    w.start("a")
    w.start("b")
    pids = {w.pid("a"), w.pid("b")}
    # keep input ahead of the members until the group has rebalanced and both write: on a
    # loaded machine the first member could otherwise finish everything before b joins
    deadline = time.monotonic() + 90
    while {pid for _, _, pid in w.deliveries()} != pids:
        w.check_alive()
        writers = {pid for _, _, pid in w.deliveries()}
        assert time.monotonic() < deadline, (
            f"timed out waiting for both members writing: {len(writers)} wrote, "
            f"{w.count('events')} of {produced} events written"
        )
        if w.count("events") >= produced - 500:
            more(500)
        time.sleep(0.05)
    if produced < n:
        more(n - produced)
    n = produced
    a_parts = {p for p, _, pid in w.deliveries() if pid == w.pid("a")}
    survivor = w.pid("b")
    w.kill("a")
    wait_for(lambda: w.count("events") == n, 90, "every event, the survivor alone")
    summary = w.stop("b")
    assert w.query("SELECT count(*), count(DISTINCT id) FROM events") == [(n, n)]
    # the survivor wrote the dead member's partitions to their ends
    late = {p for p, _, pid in w.deliveries() if pid == survivor}
    assert a_parts <= late, (a_parts, late)
    assert committed(kafka_bootstrap, w.group, topic, 4) == ends
    assert summary["revokes"] >= 1


def test_rebalance_and_graceful_stop_under_load_hand_over_exactly_what_finished(
    kafka_bootstrap: str, kafka_topics: Callable[[int], str], workers_factory: Any,
    tmp_path: Path,
) -> None:
    """A slow sink keeps ~1000 events in flight, more than a rebalance takes: a source
    that let its revoked partitions go without waiting (or committing) would have them
    redelivered to the new owner. Here every event is written exactly once."""
    topic = kafka_topics(4)
    n = 6000
    lines = tmp_path / "in.jsonl"
    lines.write_text("".join(json.dumps({"id": f"e{i}", "n": i}) + "\n" for i in range(n)))
    out = subprocess.run(
        [sys.executable, "-m", "trio_ingest", "produce", str(lines), "--kafka", kafka_bootstrap,
         "--topic", topic, "--key-field", "n", "--json", "--log-level", "warning"],
        cwd=ROOT, capture_output=True, timeout=120, check=False,
    )
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    assert json.loads(out.stdout)["entries"] == n
    w = workers_factory(topic, latency="0.1", max_batch="50", capacity="1000")
    w.start("a")
    wait_for(lambda: w.count("events") >= 300, 60, "member a under way")
    w.start("b")  # a cooperative rebalance: a gives up two partitions mid-flight
    wait_for(lambda: any(pid == w.pid("b") for _, _, pid in w.deliveries()), 60,
             "member b writing")
    a_pid, b_pid = w.pid("a"), w.pid("b")
    a_summary = w.stop("a")  # graceful: drain, commit, leave; b takes the rest
    wait_for(lambda: w.count("events") == n, 120, "every event")
    w.stop("b")
    rows = w.deliveries()
    assert len(rows) == n  # 0 duplicated deliveries, not only 0 duplicated rows
    assert w.query("SELECT count(DISTINCT id) FROM events") == [(n,)]  # 0 lost
    assert a_summary["revokes"] >= 2 and a_summary["revoke_timeouts"] == 0
    # per partition, a wrote a prefix and b the rest: a committed exactly what it finished
    for p in range(4):
        owners = [pid for _, pid in sorted((o, pid) for q, o, pid in rows if q == p)]
        if a_pid in owners and b_pid in owners:
            assert owners == sorted(owners, key=lambda pid: pid != a_pid), p
    messages = consume_all(kafka_bootstrap, topic, n)
    assert sorted(dict(m.headers())["id"].decode() for m in messages) == sorted(
        f"e{i}" for i in range(n))


def test_slow_sink_fast_topic_memory_stays_flat_while_lag_grows(
    kafka_bootstrap: str, kafka_topics: Callable[[int], str], workers_factory: Any
) -> None:
    """Backpressure pauses the partitions: librdkafka holds no prefetch for them, so a
    worker far behind a fast topic keeps its memory (without pausing, librdkafka would
    prefetch up to queued.max.messages.kbytes, 64 MB by default)."""
    import psutil

    topic = kafka_topics(2)
    size = 2000
    first = produce_n(kafka_bootstrap, topic, 10_000, size)  # 20 MB
    w = workers_factory(topic, latency="0.5", max_batch="100", capacity="1000")
    w.start("slow")
    proc = psutil.Process(w.pid("slow"))
    wait_for(lambda: w.count("events") >= 200, 60, "the slow worker under way")

    def peak_rss(seconds: float) -> int:
        peak, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.05)
        return peak

    def lag(ends: dict[int, int]) -> int:
        done = committed(kafka_bootstrap, w.group, topic, 2)
        return sum(end - max(done[p], 0) for p, end in ends.items())

    before = peak_rss(2.0)
    lag_before = lag(first)
    second = produce_n(kafka_bootstrap, topic, 30_000, size)  # 60 MB more, fast
    ends = {p: first.get(p, 0) + second.get(p, 0) for p in range(2)}
    after = peak_rss(4.0)
    lag_after = lag(ends)
    assert lag_after - lag_before > 25_000  # the topic ran far ahead of the worker
    assert after - before < 25 * 2**20, (before, after)  # ... and memory did not follow
    summary = w.stop("slow")
    assert summary["pauses"] >= 1
