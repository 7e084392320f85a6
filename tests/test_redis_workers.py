"""Scale-out: several ``trio-ingest worker`` processes in one consumer group.

Each worker is ``python -m trio_ingest worker tests.redis_factory:build``
writing to one shared SQLite database (WAL: concurrent writers wait on its
busy timeout). The table's unique ids make "each id exactly once" checkable
whatever was redelivered; the group's pending list says what was acknowledged.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from redis_factory import pending_ids, redis_command

import trio_ingest as ti

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.fixture
def stream(redis_prefix: str) -> str:
    return redis_prefix


def produce(url: str, stream: str, payloads: list[dict[str, Any]], *,
            key: Callable[[dict[str, Any]], Any] | None = None,
            partitions: int | None = None) -> None:
    """Append events ``e<i>`` with the given payloads (through the RedisStreams sink)."""
    events = [ti.Event(id=f"e{i}", payload=p, key=key(p) if key else None)
              for i, p in enumerate(payloads)]
    sink = ti.sinks.RedisStreams(stream, url=url, max_batch=1000, partitions=partitions)
    pipeline = ti.Pipeline(ti.sources.from_iterable(events), sink=sink, max_batch=1000)
    report = anyio.run(pipeline.run, backend="trio")
    assert report.delivered == len(events)


class Workers:
    """Worker processes of one group, started and stopped by the test."""

    def __init__(self, url: str, stream: str, tmp: Path, *, claim_idle: float = 30.0,
                 extra: tuple[str, ...] = (), options: dict[str, str] | None = None) -> None:
        self.url = url
        self.stream = stream
        self.group = "workers"
        self.tmp = tmp
        self.db = tmp / "out.sqlite"
        self.claim_idle = claim_idle
        self.extra = extra
        self.options = options or {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.outputs: dict[str, list[dict[str, Any]]] = {}
        self.exits: dict[str, list[int]] = {}

    def dead_file(self, consumer: str) -> Path:
        return self.tmp / f"dead-{consumer}.jsonl"

    def start(self, consumer: str, *more: str) -> None:
        options = {"db": str(self.db), "dead": str(self.dead_file(consumer)), **self.options}
        args = [sys.executable, "-m", "trio_ingest", "worker", "tests.redis_factory:build",
                "--redis", self.url, "--group", self.group, "--consumer", consumer,
                "--stream", self.stream, "--claim-idle", str(self.claim_idle),
                "--json", "--log-level", "warning", *self.extra, *more]
        for key, value in options.items():
            args += ["-o", f"{key}={value}"]
        self.procs[consumer] = subprocess.Popen(
            args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    def reap(self, consumer: str) -> int:
        proc = self.procs.pop(consumer)
        out, err = proc.communicate(timeout=60)
        self.exits.setdefault(consumer, []).append(proc.returncode)
        if out.strip():
            self.outputs.setdefault(consumer, []).append(json.loads(out))
        # 0: a SIGTERM that drained; 3: the poison crash; -9: killed by the test; and -15
        # only for a worker stopped while still starting (a restarted one on a loaded
        # machine): it had not read anything, so it had nothing to drain
        started = bool(out.strip()) or b"Traceback" in err
        if proc.returncode == -signal.SIGTERM and not started:
            return 0
        if proc.returncode not in (0, 3, -signal.SIGKILL):
            raise AssertionError(f"{consumer} exited {proc.returncode}: {err.decode()[-3000:]}")
        return proc.returncode

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for consumer in list(self.procs):
            assert self.reap(consumer) == 0  # a graceful stop that drained exits 0

    def kill_all(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.communicate()
        self.procs.clear()

    def wait_registered(self, consumers: list[str], timeout: float = 30.0) -> None:
        """Until every consumer has made its first read (Redis lists it in the group)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                rows = redis_command(self.url, "XINFO", "CONSUMERS", self.stream, self.group)
            except Exception:
                rows = []  # no group yet
            names = {r["name"] if isinstance(r, dict) else r[1] for r in rows}
            if set(consumers) <= names:
                return
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    self.reap(name)
                    raise AssertionError(f"{name} exited early")
            assert time.monotonic() < deadline, f"workers not ready: {names}"
            time.sleep(0.05)

    def rows(self) -> tuple[int, int]:
        if not self.db.exists():
            return 0, 0
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            count, distinct = conn.execute("SELECT count(*), count(DISTINCT id) FROM events"
                                           ).fetchone()
            return int(count), int(distinct)
        except sqlite3.OperationalError:
            return 0, 0  # the table is not created yet
        finally:
            conn.close()

    def ids(self) -> set[str]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            return {r[0] for r in conn.execute("SELECT id FROM events")}
        finally:
            conn.close()

    def dead_letters(self) -> list[dict[str, Any]]:
        out = []
        for path in self.tmp.glob("dead-*.jsonl"):
            out += [json.loads(line) for line in path.read_text().splitlines() if line]
        return out

    def wait_until(self, condition: Callable[[], bool], timeout: float,
                   on_exit: Callable[[str, int], None] | None = None) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            for name, proc in list(self.procs.items()):
                if proc.poll() is not None:
                    code = self.reap(name)
                    if on_exit is None:
                        raise AssertionError(f"{name} exited unexpectedly ({code})")
                    on_exit(name, code)
            assert time.monotonic() < deadline, f"timed out; rows={self.rows()}"
            time.sleep(0.05)

    def settled(self, n: int) -> bool:
        return self.rows()[1] >= n and not pending_ids(self.url, self.stream, self.group)

    def total(self, field: str) -> int:
        return sum(o.get(field, 0) for runs in self.outputs.values() for o in runs)


@pytest.fixture
def workers_factory(redis_url: str, stream: str, tmp_path: Path) -> Iterator[Any]:
    made: list[Workers] = []

    def make(**options: Any) -> Workers:
        w = Workers(redis_url, stream, tmp_path, **options)
        made.append(w)
        return w

    yield make
    for w in made:
        w.kill_all()


def test_three_workers_share_a_stream_and_store_each_id_once(
    redis_url: str, stream: str, workers_factory: Any
) -> None:
    n = 100_000
    workers = workers_factory()
    names = ["w0", "w1", "w2"]
    for name in names:
        workers.start(name)
    workers.wait_registered(names)
    produce(redis_url, stream, [{"seq": i} for i in range(n)])
    workers.wait_until(lambda: workers.settled(n), timeout=90)
    workers.stop_all()
    assert workers.rows() == (n, n)
    assert pending_ids(redis_url, stream, workers.group) == []
    per_worker = {name: workers.outputs[name][0]["delivered"] for name in names}
    assert sum(per_worker.values()) == n  # nothing was claimed or redelivered: no duplicates
    assert all(count > 0 for count in per_worker.values()), per_worker
    assert workers.total("acked") == n


def test_sigkilled_worker_is_taken_over_after_claim_idle(
    redis_url: str, stream: str, workers_factory: Any
) -> None:
    n = 30_000
    workers = workers_factory(claim_idle=1.0, options={"latency": "0.03"})
    names = ["w0", "w1", "w2"]
    for name in names:
        workers.start(name)
    workers.wait_registered(names)
    produce(redis_url, stream, [{"seq": i} for i in range(n)])
    workers.wait_until(lambda: workers.rows()[1] >= n // 4, timeout=60)
    # freeze w0 first, so that what it holds cannot change between reading and killing
    # (reading first raced with w0 acknowledging those very entries)
    held: list[str] = []
    give_up = time.monotonic() + 20
    while time.monotonic() < give_up:  # freeze it while it holds entries (not between reads)
        workers.procs["w0"].send_signal(signal.SIGSTOP)
        killed_at = time.monotonic()
        held = pending_ids(redis_url, stream, workers.group, "w0")
        if held:
            break
        workers.procs["w0"].send_signal(signal.SIGCONT)
        time.sleep(0.01)
    assert held, "w0 held nothing in flight when it was killed"
    workers.procs["w0"].send_signal(signal.SIGKILL)
    assert workers.reap("w0") == -signal.SIGKILL
    workers.wait_until(lambda: workers.settled(n), timeout=90)
    taken_over = time.monotonic() - killed_at
    workers.stop_all()
    assert workers.rows() == (n, n)
    assert pending_ids(redis_url, stream, workers.group) == []
    assert workers.total("claimed") >= len(held)
    # nobody took them before they were idle claim_idle; idle counts from their last
    # keepalive, which is at most claim_idle / 3 older than the kill
    assert taken_over >= 1.0 * 2 / 3 - 0.05
    # the survivors stored the killed worker's unfinished entries
    by_entry = {eid: fields[fields.index("id") + 1] for eid, fields in
                redis_command(redis_url, "XRANGE", stream, "-", "+")}
    assert {by_entry[eid] for eid in held} <= workers.ids()


def test_a_crashing_entry_is_dead_lettered_after_max_deliveries_and_the_rest_flows(
    redis_url: str, stream: str, workers_factory: Any, tmp_path: Path
) -> None:
    """A poison entry kills every worker that processes it; a supervisor restarts them."""
    n, poison = 6_000, 2_500
    crash_log = tmp_path / "crashes.log"
    workers = workers_factory(claim_idle=2.0, extra=("--max-deliveries", "3"),
                              options={"crash_log": str(crash_log), "latency": "0.01"})
    names = ["w0", "w1", "w2"]
    for name in names:
        workers.start(name)
    workers.wait_registered(names)
    produce(redis_url, stream, [{"seq": i, "poison": i == poison} for i in range(n)])

    def restart(name: str, code: int) -> None:
        assert code == 3, f"{name} exited {code}"
        workers.start(name)  # same consumer name: it resumes its pending entries

    workers.wait_until(lambda: workers.settled(n - 1) and bool(workers.dead_letters()),
                       timeout=90, on_exit=restart)
    workers.stop_all()
    crashes = crash_log.read_text().split()
    assert len(crashes) == 3  # delivered (and crashed on) exactly max_deliveries times
    letters = workers.dead_letters()
    assert [d["event"]["id"] for d in letters] == [f"e{poison}"]  # no innocent bystander
    assert letters[0]["error_type"] == "PoisonEntry"
    assert letters[0]["error"].startswith("delivered 4 times (max_deliveries=3): ")
    assert workers.ids() == {f"e{i}" for i in range(n)} - {f"e{poison}"}
    assert pending_ids(redis_url, stream, workers.group) == []


def test_graceful_stop_then_restart_resumes_its_own_pending_entries(
    redis_url: str, stream: str, workers_factory: Any
) -> None:
    """SIGTERM drains and acknowledges what was read; a restart picks up the rest."""
    n = 20_000
    workers = workers_factory(options={"latency": "0.02"})
    workers.start("w0")
    workers.wait_registered(["w0"])
    produce(redis_url, stream, [{"seq": i} for i in range(n)])
    workers.wait_until(lambda: workers.rows()[1] >= 2_000, timeout=60)
    workers.procs["w0"].send_signal(signal.SIGTERM)
    assert workers.reap("w0") == 0
    first = workers.outputs["w0"][0]
    stored_after_stop = workers.rows()[1]
    assert first["delivered"] == first["received"] == first["acked"] == stored_after_stop
    assert first["in_flight"] == 0
    # acknowledged = stored: what is still pending was never handed to the pipeline
    left = pending_ids(redis_url, stream, workers.group, "w0")
    assert stored_after_stop < n
    workers.start("w0")
    workers.wait_until(lambda: workers.settled(n), timeout=60)
    workers.stop_all()
    second = workers.outputs["w0"][1]
    assert workers.rows() == (n, n)
    assert first["acked"] + second["acked"] == n
    assert second["claimed"] == 0 and len(left) <= 1_000


def test_partitioned_workers_keep_each_key_in_order(
    redis_url: str, stream: str, workers_factory: Any
) -> None:
    """Static assignment: worker i of 2 owns partitions p % 2 == i, so a key has one reader."""
    n, partitions = 20_000, 4
    workers = workers_factory()
    for i in range(2):
        workers.start(f"w{i}", "--partitions", str(partitions), "--workers", "2",
                      "--worker-index", str(i))
    produce(redis_url, stream, [{"seq": i, "user": f"u{i % 50}"} for i in range(n)],
            key=lambda p: p["user"], partitions=partitions)
    workers.wait_until(lambda: workers.rows()[1] >= n, timeout=60)
    workers.stop_all()
    conn = sqlite3.connect(workers.db)
    try:
        rows = conn.execute("SELECT key, payload FROM events ORDER BY rowid").fetchall()
    finally:
        conn.close()
    per_key: dict[str, list[int]] = {}
    for key, payload in rows:
        per_key.setdefault(key, []).append(json.loads(payload)["seq"])
    assert len(rows) == n and len(per_key) == 50
    # stored in the order produced, key by key (rows of different keys interleave freely)
    assert all(seqs == sorted(seqs) for seqs in per_key.values())
    for p in range(partitions):
        assert pending_ids(redis_url, f"{stream}:{p}", workers.group) == []
    assert workers.outputs["w0"][0]["streams"] == [f"{stream}:0", f"{stream}:2"]
    assert workers.outputs["w1"][0]["streams"] == [f"{stream}:1", f"{stream}:3"]
