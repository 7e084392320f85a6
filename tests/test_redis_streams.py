"""Redis Streams source and sink against the real server: one process, both backends.

The multi-process scale-out (workers, SIGKILL, crashing poison) is in
test_redis_workers.py.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from redis_factory import PrivateRedis, pending_ids, redis_command

import trio_ingest as ti
from trio_ingest.sinks._redis import partition_of
from trio_ingest.sources._redis import ISOLATE_FROM_DELIVERY, StreamEntries, partition_streams

# coredis 6.9 creates a connection's memory streams in __init__ and closes them only
# once connected: every failed connection attempt (tested here on purpose) leaves six
# unclosed streams whose __del__ warns. Collect them within the test that made them.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <function MemoryObject(Send|Receive)Stream.__del__"
    ":pytest.PytestUnraisableExceptionWarning"
)


@pytest.fixture(autouse=True)
def _collect_failed_connections() -> Iterator[None]:
    yield
    gc.collect()


async def acmd(url: str, *args: Any) -> Any:
    return await anyio.to_thread.run_sync(lambda: redis_command(url, *args))


@pytest.fixture
def prefix(redis_prefix: str) -> str:
    return redis_prefix


async def produce(url: str, stream: str, events: Sequence[ti.Event], **options: Any) -> None:
    sink = ti.sinks.RedisStreams(stream, url=url, **options)
    report = await ti.Pipeline(ti.sources.from_iterable(list(events)), sink=sink).run()
    assert report.delivered == len(events)


async def wait_until(condition: Any, timeout: float) -> None:
    """Poll ``condition()`` (a counter of a sink) until it holds."""
    with anyio.fail_after(timeout):
        while not condition():  # noqa: ASYNC110 -- polling a counter
            await anyio.sleep(0.02)


async def consume_until(
    pipeline: ti.Pipeline, done: Any, *, timeout: float = 20.0, stop_timeout: float = 10.0
) -> ti.RunReport:
    """Serve ``pipeline`` until ``done()`` holds, then stop it gracefully."""
    async with anyio.create_task_group() as tg:
        handle = await tg.start(pipeline.serve)
        await wait_until(done, timeout)
        return await handle.stop(stop_timeout)


def entry_ids(url: str, stream: str) -> dict[str, str]:
    """Entry id -> event id (the ``id`` field) of every entry of ``stream``."""
    out = {}
    for entry_id, fields in redis_command(url, "XRANGE", stream, "-", "+"):
        values = dict(zip(fields[::2], fields[1::2], strict=True))
        out[entry_id] = values.get("id", "")
    return out


# -- configuration ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"streams": []}, "'streams'"),
        ({"streams": ["a", "a"]}, "'streams' must not repeat"),
        ({"group": ""}, "'group'"),
        ({"consumer": ""}, "'consumer'"),
        ({"block": 2.0}, "'block' must be in (0, 1]"),
        ({"block": 0}, "'block'"),
        ({"claim_idle": 0}, "'claim_idle' must be > 0: 0"),
        ({"claim_interval": -1.0}, "'claim_interval'"),
        ({"max_deliveries": 0}, "'max_deliveries' must be >= 1: 0"),
        ({"url": "http://x"}, "'url'"),
        ({"timeout": 0}, "'timeout'"),
        ({"reconnect": 3}, "'reconnect'"),
    ],
)
def test_source_options_are_checked_before_connecting(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"streams": "s", "group": "g", "consumer": "c", **kwargs}
    with pytest.raises(ti.ConfigError) as info:
        ti.sources.RedisStreams(args.pop("streams"), args.pop("group"), args.pop("consumer"),
                                **args)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stream": ""}, "'stream'"),
        ({"maxlen": 0}, "'maxlen' must be >= 1 or None: 0"),
        ({"partitions": 0}, "'partitions' must be >= 1 or None: 0"),
        ({"url": "localhost:6379"}, "'url'"),
    ],
)
def test_sink_options_are_checked(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"stream": "s", **kwargs}
    with pytest.raises(ti.ConfigError) as info:
        ti.sinks.RedisStreams(args.pop("stream"), **args)
    assert message in str(info.value)


def test_static_partition_assignment_covers_each_partition_once() -> None:
    for partitions in (1, 4, 7, 16):
        for workers in range(1, partitions + 1):
            assigned = [partition_streams("s", partitions, i, workers) for i in range(workers)]
            flat = [s for names in assigned for s in names]
            assert sorted(flat) == sorted(f"s:{p}" for p in range(partitions))
            assert all(names for names in assigned)
    assert partition_streams("s", 8, 1, 3) == ["s:1", "s:4", "s:7"]
    with pytest.raises(ti.ConfigError, match="'workers' must be <= 'partitions' \\(2\\): 3"):
        partition_streams("s", 2, 0, 3)
    with pytest.raises(ti.ConfigError, match=r"'worker_index' must be in \[0, 2\): 2"):
        partition_streams("s", 4, 2, 2)


# -- round trips ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_events_round_trip_through_a_stream(redis_url: str, prefix: str) -> None:
    stream = f"{prefix}:s"
    sent = [
        ti.Event(id=f"e{i}", payload={"n": i, "nested": [1, {"é": None}]},
                 key=[None, "k", i % 3, ("a", 1)][i % 4], event_time=1000.0 + i / 8,
                 headers={"source": "test"} if i % 2 else {})
        for i in range(600)
    ]
    await produce(redis_url, stream, sent, max_batch=64)
    assert redis_command(redis_url, "XLEN", stream) == 600
    source = ti.sources.RedisStreams(stream, "g", "c1", url=redis_url, claim_interval=0.1)
    got = ti.sinks.Memory()
    report = await consume_until(ti.Pipeline(source, sink=got),
                                 lambda: len(got.events) >= 600 and source.lag() == 0)
    assert report.delivered == 600 and report.dead_lettered == 0
    by_id = {e.id: e for e in got.events}
    for e in sent:
        back = by_id[e.id]
        # a tuple key comes back as a JSON list: keys are stored as JSON
        key = list(e.key) if isinstance(e.key, tuple) else e.key
        assert (back.payload, back.key, back.event_time, dict(back.headers)) == (
            e.payload, key, e.event_time, dict(e.headers))
    assert pending_ids(redis_url, stream, "g") == []
    assert source.acked == 600
    assert isinstance(report.committed["redis"], StreamEntries)


@pytest.mark.anyio
async def test_foreign_and_malformed_entries(redis_url: str, prefix: str) -> None:
    """Entries not written by the sink become dict payloads; bad ones are dead-lettered."""
    stream = f"{prefix}:s"
    plain = await acmd(redis_url, "XADD", stream, "*", "id", "x1", "name", "bob")
    no_id = await acmd(redis_url, "XADD", stream, "*", "name", "al")
    bad_json = await acmd(redis_url, "XADD", stream, "*", "id", "bad1", "payload", "{nope")
    bad_headers = await acmd(redis_url, "XADD", stream, "*", "id", "bad2", "payload", "1",
                             "headers", "[1]")
    bad_time = await acmd(redis_url, "XADD", stream, "*", "id", "bad3", "payload", "1",
                          "event_time", "soon")
    good = await acmd(redis_url, "XADD", stream, "*", "id", "ok", "payload", '{"a": 1}')
    # not strict JSON, but what json.loads accepts is accepted (the fast parser defers)
    await acmd(redis_url, "XADD", stream, "*", "id", "nan", "payload", ' {"v": NaN} ')
    source = ti.sources.RedisStreams(stream, "g", "c1", url=redis_url)
    got, dead = ti.sinks.Memory(), ti.sinks.Memory()
    report = await consume_until(
        ti.Pipeline(source, sink=got, dead_letter=dead),
        lambda: len(got.events) + len(dead.events) >= 7,
    )
    assert report.received == 7 and report.delivered == 4 and report.dead_lettered == 3
    events = {e.id: e for e in got.events}
    assert events["x1"].payload == {"name": "bob"}
    assert events[f"{stream}/{no_id}"].payload == {"name": "al"}
    assert events[f"{stream}/{no_id}"].event_time == int(no_id.split("-")[0]) / 1000
    assert events["ok"].payload == {"a": 1}
    assert math.isnan(events["nan"].payload["v"])
    assert plain and good
    letters = {e.id: e.payload for e in dead.events}
    assert set(letters) == {"bad1", "bad2", "bad3"}
    assert letters["bad1"].error_type == "json.decoder.JSONDecodeError"
    assert letters["bad1"].error.startswith(f"bad entry {stream}/{bad_json}:")
    assert "'headers' must be a JSON object" in letters["bad2"].error
    assert f"{stream}/{bad_headers}" in letters["bad2"].error
    assert letters["bad3"].error_type == "ValueError" and bad_time in letters["bad3"].error
    assert letters["bad1"].node == "redis"
    # dead-lettered entries belong to their read: acknowledged with it
    assert pending_ids(redis_url, stream, "g") == []


@pytest.mark.anyio
async def test_partitioned_streams_keep_each_key_in_order(redis_url: str, prefix: str) -> None:
    base = f"{prefix}:p"
    sent = [ti.Event(id=str(i), payload={"seq": i}, key=f"user-{i % 13}") for i in range(3000)]
    await produce(redis_url, base, sent, partitions=4, max_batch=100)
    for p in range(4):
        ids = entry_ids(redis_url, f"{base}:{p}").values()
        seqs = [int(i) for i in ids]
        assert seqs == sorted(seqs)  # one producer: each partition in send order
        assert all(partition_of(sent[s], 4) == p for s in seqs)
    # two workers, static assignment: partitions 0, 2 and 1, 3
    sinks = [ti.sinks.Memory(), ti.sinks.Memory()]
    sources = [ti.sources.RedisStreams(partition_streams(base, 4, i, 2), "g", f"w{i}",
                                       url=redis_url) for i in range(2)]
    async with anyio.create_task_group() as tg:
        handles = [await tg.start(ti.Pipeline(src, sink=sink).serve)
                   for src, sink in zip(sources, sinks, strict=True)]
        await wait_until(lambda: sum(len(s.events) for s in sinks) >= 3000, 20)
        for handle in handles:
            await handle.stop()
    seen = [e.id for s in sinks for e in s.events]
    assert sorted(seen, key=int) == [str(i) for i in range(3000)]
    for sink in sinks:
        per_key: dict[str, list[int]] = {}
        for e in sink.events:
            per_key.setdefault(e.key, []).append(e.payload["seq"])
        assert all(seqs == sorted(seqs) for seqs in per_key.values())
    keys = [{e.key for e in s.events} for s in sinks]
    assert not keys[0] & keys[1]  # a key lives in one partition, so with one worker


# -- acknowledgement, restart, claims, poison -----------------------------------------


class GateSink(ti.Sink):
    """Writes the first ``limit`` events, then hangs: a stop cannot finish what follows."""

    def __init__(self, limit: int) -> None:
        super().__init__(name="gate")
        self.limit = limit
        self.events: list[ti.Event] = []

    async def write_batch(self, events: Sequence[ti.Event]) -> None:
        room = self.limit - len(self.events)
        if room < len(events):
            self.events.extend(events[: max(room, 0)])
            await anyio.sleep_forever()
        self.events.extend(events)


@pytest.mark.anyio
async def test_stop_acks_exactly_what_finished_and_a_restart_resumes_pending_first(
    redis_url: str, prefix: str
) -> None:
    stream = f"{prefix}:s"
    n = 3000
    await produce(redis_url, stream, [ti.Event(id=f"e{i}", payload=i) for i in range(n)])
    by_entry = entry_ids(redis_url, stream)
    gate = GateSink(limit=1000)
    source = ti.sources.RedisStreams(stream, "g", "c1", url=redis_url, claim_idle=60)
    pipeline = ti.Pipeline(source, sink=gate, capacity=300, max_batch=100)
    async with anyio.create_task_group() as tg:
        handle = await tg.start(pipeline.serve)
        await wait_until(lambda: len(gate.events) >= 1000, 20)
        await anyio.sleep(0.1)
        report = await handle.stop(0.3)  # the gate hangs: the deadline cuts the drain short
    assert report.in_flight > 0 and not report.completed
    written = {e.id for e in gate.events}
    pending = pending_ids(redis_url, stream, "g", "c1")
    last = _entry_order(_last_delivered(redis_url, stream, "g"))
    delivered = [eid for eid in by_entry if _entry_order(eid) <= last]
    acked = [eid for eid in delivered if eid not in set(pending)]
    # nothing unfinished was acknowledged ...
    assert {by_entry[eid] for eid in acked} <= written
    assert source.acked == len(acked) > 0
    # ... and what finished without its ack (a read only partly written) stays pending
    assert written - {by_entry[eid] for eid in acked} <= {by_entry[eid] for eid in pending}
    assert pending

    again = ti.sinks.Memory()
    restarted = ti.sources.RedisStreams(stream, "g", "c1", url=redis_url, claim_idle=60)
    await consume_until(ti.Pipeline(restarted, sink=again),
                        lambda: len({e.id for e in again.events} | written) >= n)
    first = [e.id for e in again.events[: len(pending)]]
    assert first == [by_entry[eid] for eid in sorted(pending, key=_entry_order)]
    assert {e.id for e in again.events} | written == {f"e{i}" for i in range(n)}
    assert pending_ids(redis_url, stream, "g") == []


def _entry_order(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


def _last_delivered(url: str, stream: str, group: str) -> str:
    for g in redis_command(url, "XINFO", "GROUPS", stream):
        fields = g if isinstance(g, dict) else dict(zip(g[::2], g[1::2], strict=True))
        if fields["name"] == group:
            return str(fields["last-delivered-id"])
    raise AssertionError(f"no group {group}")


@pytest.mark.anyio
async def test_entries_of_a_dead_consumer_are_claimed_after_claim_idle(
    redis_url: str, prefix: str
) -> None:
    stream = f"{prefix}:s"
    await produce(redis_url, stream, [ti.Event(id=f"e{i}", payload=i) for i in range(500)])
    await acmd(redis_url, "XGROUP", "CREATE", stream, "g", "0")
    # a consumer takes 200 entries and dies without acknowledging them; they are idle
    # from that read on, so the clock starts before it
    started = time.monotonic()
    await acmd(redis_url, "XREADGROUP", "GROUP", "g", "dead", "COUNT", 200, "STREAMS", stream,
               ">")
    assert len(pending_ids(redis_url, stream, "g", "dead")) == 200
    source = ti.sources.RedisStreams(stream, "g", "alive", url=redis_url, claim_idle=0.5,
                                     claim_interval=0.1)
    got = ti.sinks.Memory()
    await consume_until(ti.Pipeline(source, sink=got), lambda: len(got.ids) >= 500)
    assert got.ids == {f"e{i}" for i in range(500)}
    assert source.claimed == 200
    assert time.monotonic() - started >= 0.5  # not before they were idle claim_idle
    assert pending_ids(redis_url, stream, "g") == []
    # the new entries came first: the dead consumer's were not idle yet
    assert [e.id for e in got.events[:300]] == [f"e{i}" for i in range(200, 500)]


@pytest.mark.anyio
async def test_poison_entry_is_dead_lettered_after_max_deliveries(
    redis_url: str, prefix: str
) -> None:
    stream = f"{prefix}:s"
    await produce(redis_url, stream, [ti.Event(id=f"e{i}", payload=i) for i in range(50)])
    await acmd(redis_url, "XGROUP", "CREATE", stream, "g", "0")
    await acmd(redis_url, "XREADGROUP", "GROUP", "g", "dead", "COUNT", 5, "STREAMS", stream, ">")
    poison = pending_ids(redis_url, stream, "g")[2]
    for _ in range(2):  # two more deliveries, to consumers that died as well
        await acmd(redis_url, "XCLAIM", stream, "g", "dead", 0, poison)
    source = ti.sources.RedisStreams(stream, "g", "alive", url=redis_url, claim_idle=0.2,
                                     claim_interval=0.05, max_deliveries=3)
    got, dead = ti.sinks.Memory(), ti.sinks.Memory()
    report = await consume_until(ti.Pipeline(source, sink=got, dead_letter=dead),
                                 lambda: len(got.ids) + len(dead.events) >= 50)
    assert got.ids == {f"e{i}" for i in range(50)} - {"e2"}
    assert [e.id for e in dead.events] == ["e2"]
    letter = dead.events[0].payload
    assert letter.error_type == "PoisonEntry"
    assert letter.error == f"delivered 4 times (max_deliveries=3): {stream}/{poison}"
    assert letter.attempts == 4 and letter.event.payload == 2
    assert report.dead_lettered == 1 and source.poisoned == 1
    assert pending_ids(redis_url, stream, "g") == []


@pytest.mark.anyio
async def test_an_entry_redelivered_twice_is_read_alone(redis_url: str, prefix: str) -> None:
    """A suspect waits until nothing is in flight, then goes alone; the next read waits for it."""
    stream = f"{prefix}:s"
    await produce(redis_url, stream, [ti.Event(id=x, payload=x) for x in "abc"])
    await acmd(redis_url, "XGROUP", "CREATE", stream, "g", "0")
    await acmd(redis_url, "XREADGROUP", "GROUP", "g", "dead", "COUNT", 3, "STREAMS", stream, ">")
    _, b, c = pending_ids(redis_url, stream, "g")
    for _ in range(ISOLATE_FROM_DELIVERY - 2):
        await acmd(redis_url, "XCLAIM", stream, "g", "dead", 0, b)
    await anyio.sleep(0.25)
    source = ti.sources.RedisStreams(stream, "g", "alive", url=redis_url, claim_idle=0.2)
    async with source.open_resources():
        await source.open()
        first = await source.read(100)
        assert first is not None and [e.id for e in first.events] == ["a"]
        with anyio.move_on_after(0.3) as waited:  # "a" is in flight: "b" must wait
            await source.read(100)
        assert waited.cancelled_caught
        assert pending_ids(redis_url, stream, "g", "dead") == [b, c]
        await source.commit([first.offset])
        second = await source.read(100)
        assert second is not None and [e.id for e in second.events] == ["b"]
        with anyio.move_on_after(0.3) as waited:  # nothing may travel with "b"
            await source.read(100)
        assert waited.cancelled_caught
        await source.commit([second.offset])
        third = await source.read(100)
        assert third is not None and [e.id for e in third.events] == ["c"]
        await source.commit([third.offset])
        await source.aclose()
    assert pending_ids(redis_url, stream, "g") == []


# -- failures of Redis itself ---------------------------------------------------------


@pytest.mark.anyio
async def test_unreachable_redis_fails_before_data_moves() -> None:
    source = ti.sources.RedisStreams("s", "g", "c", url="redis://127.0.0.1:1", timeout=2)
    with pytest.raises(ti.SourceError, match=r"cannot reach Redis at redis://127\.0\.0\.1:1"):
        await ti.Pipeline(source, sink=ti.sinks.Memory()).run()
    sink = ti.sinks.RedisStreams("s", url="redis://127.0.0.1:1", timeout=2)
    with pytest.raises(ti.SinkError, match="cannot reach Redis"):
        await ti.Pipeline(ti.sources.from_iterable([1]), sink=sink).run()


@pytest.mark.anyio
async def test_missing_group_without_create_group(redis_url: str, prefix: str) -> None:
    stream = f"{prefix}:s"
    await acmd(redis_url, "XADD", stream, "*", "id", "x")
    source = ti.sources.RedisStreams(stream, "nope", "c", url=redis_url, create_group=False)
    with pytest.raises(ti.SourceError, match="group 'nope' does not exist"):
        await ti.Pipeline(source, sink=ti.sinks.Memory()).run()


@pytest.mark.anyio
async def test_a_vanished_group_is_created_again(redis_url: str, prefix: str) -> None:
    """Deleted (or lost with a Redis restart without persistence): recreate, redeliver."""
    stream = f"{prefix}:s"
    await produce(redis_url, stream, [ti.Event(id=f"a{i}", payload=i) for i in range(100)])
    source = ti.sources.RedisStreams(stream, "g", "c1", url=redis_url)
    got = ti.sinks.Memory(idempotent=True)
    async with anyio.create_task_group() as tg:
        handle = await tg.start(ti.Pipeline(source, sink=got).serve)
        await wait_until(lambda: len(got.ids) >= 100, 10)
        await acmd(redis_url, "XGROUP", "DESTROY", stream, "g")
        await produce(redis_url, stream, [ti.Event(id=f"b{i}", payload=i) for i in range(50)])
        await wait_until(lambda: len(got.ids) >= 150, 10)
        await handle.stop()
    assert got.ids == {f"a{i}" for i in range(100)} | {f"b{i}" for i in range(50)}
    assert pending_ids(redis_url, stream, "g") == []


@pytest.mark.anyio
async def test_stop_during_a_blocking_read_is_prompt(redis_url: str, prefix: str) -> None:
    source = ti.sources.RedisStreams(f"{prefix}:s", "g", "c", url=redis_url, block=1.0)
    async with anyio.create_task_group() as tg:
        handle = await tg.start(ti.Pipeline(source, sink=ti.sinks.Memory()).serve)
        await anyio.sleep(0.3)
        started = time.monotonic()
        report = await handle.stop()
    # the XREADGROUP in flight is cancelled, not waited for (generous bound for slow CI)
    assert time.monotonic() - started < 0.9
    assert report.received == 0


@pytest.mark.anyio
async def test_redis_restart_mid_run_reconnects_and_completes(tmp_path: Path) -> None:
    server = PrivateRedis(str(tmp_path))
    await anyio.to_thread.run_sync(server.start)
    try:
        stream, n = "restart:s", 6000
        await produce(server.url, stream, [ti.Event(id=f"e{i}", payload=i) for i in range(n)],
                      max_batch=500)
        await anyio.sleep(1.1)  # the AOF is fsync'd every second: let the stream reach disk
        source = ti.sources.RedisStreams(stream, "g", "c1", url=server.url, claim_idle=30)
        got = ti.sinks.Memory(idempotent=True)
        slow = ti.testing.FlakySink(got, latency=(0.02, 0.02))
        pipeline = ti.Pipeline(source, sink=slow, max_batch=100, capacity=200)
        async with anyio.create_task_group() as tg:
            handle = await tg.start(pipeline.serve)
            await wait_until(lambda: len(got.ids) >= 1000, 10)
            await anyio.to_thread.run_sync(server.kill)
            await anyio.sleep(0.5)
            await anyio.to_thread.run_sync(server.start)
            await wait_until(lambda: len(got.ids) >= n, 30)
            report = await handle.stop()
        assert got.ids == {f"e{i}" for i in range(n)}
        assert source.reconnects >= 1
        assert report.dead_lettered == 0
        assert await anyio.to_thread.run_sync(pending_ids, server.url, stream, "g") == []
    finally:
        await anyio.to_thread.run_sync(server.kill)
