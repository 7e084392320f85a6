"""Kafka consumer-group source (confluent-kafka / librdkafka) with per-partition commits.

The source is one member of a consumer group. Its design, in the order an
event meets it:

* **One poller task, one client thread.** A task living in
  :meth:`Kafka.open_resources` calls ``Consumer.consume`` in a worker thread
  (one call per hop, a capacity limiter of one), so it works the same on Trio
  and asyncio and the event loop never blocks. librdkafka runs the rebalance
  callbacks inside that call; they coordinate with the event loop through
  ``anyio.from_thread``.
* **Backpressure without memory.** Messages wait in a small per-partition
  buffer (``max_buffered`` messages in all). When the pipeline's first edge
  is full the runtime stops calling ``read``, the buffer fills, and the
  poller *pauses* every assigned partition (librdkafka drops what it
  prefetched for them and fetches again from the next unread offset on
  resume). It keeps polling while paused, so the member stays in its group
  and still serves rebalances however long the pipeline is behind.
* **Per-partition watermarks.** Every read holds the messages of one
  partition and tags itself with ``(topic, partition, generation)``; the
  runtime keeps one commit watermark per tag, so an offset commits only up
  to the lowest unfinished event *of its partition* (delivered,
  dead-lettered or filtered). Commits are manual (auto-commit is off) and
  throttled to one every ``commit_interval`` seconds.
* **Revokes wait for in-flight work.** On revoke the source stops reading the
  revoked partitions at once (buffered, never-read messages are dropped:
  they were not committed, so the next owner reads them), waits at most
  ``revoke_timeout`` seconds for their in-flight events to finish, commits
  exactly what finished, and only then lets the rebalance go on. Events still
  in flight after the timeout are not committed: the new owner gets them
  again (at least once). Partitions *lost* (session timeout) are not
  committed at all. The generation in the tag keeps a late completion of a
  revoked partition from ever committing over its next assignment.
* **Ids.** ``id_field`` (a field of the JSON payload) when configured, else
  ``id_header`` when configured, else ``"<topic>/<partition>/<offset>"``:
  deterministic, so a redelivery deduplicates in an idempotent sink. The
  key is the Kafka key (UTF-8 text), the event time the message timestamp,
  the headers are kept (as text).
* **Bad messages** (a value that is not JSON, a missing id field) become
  dead letters naming ``topic/partition/offset`` and the reason; their
  offsets commit once they are dead-lettered, like any finished event.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread

from .._errors import ConfigError, SourceError
from .._event import _NO_HEADERS, DeadLetter, Event
from .._event import trusted as _trusted_event
from .._json import loads as _loads
from ._base import Read, Source

__all__ = ("Kafka",)

log = logging.getLogger("trio_ingest.sources.kafka")

#: librdkafka settings this source owns: it commits by hand, and names the group itself.
_OWNED = ("group.id", "bootstrap.servers", "enable.auto.commit", "enable.auto.offset.store")

_TP = tuple[str, int]



def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return "" if value is None else str(value)


class Kafka(Source):
    """Consume Kafka topics as one member of a consumer group.

    Args:
        topics: Topic name, or several.
        group: Consumer group id (``group.id``): members of one group share
            the partitions of the topics.
        bootstrap_servers: ``host:port[,host:port...]`` of the brokers.
        id_field: Payload field holding the event id; a message without it
            is dead-lettered. Default: ``id_header``, else
            ``"<topic>/<partition>/<offset>"``.
        id_header: Header holding the event id (``"id"`` reads back what
            :class:`trio_ingest.sinks.Kafka` wrote); a message without it
            falls back to ``"<topic>/<partition>/<offset>"``.
        name: Node name (default ``"kafka"``).
        commit_interval: Least seconds between two offset commits.
        revoke_timeout: Most seconds a revoke waits for the in-flight events
            of the revoked partitions before it lets the rebalance go on.
        max_buffered: Messages read from librdkafka but not yet by the
            pipeline, at most (beyond it the partitions are paused).
        poll_timeout: Seconds one ``consume`` call waits for messages (also
            how promptly the poller notices a stop).
        poll_batch: Most messages one ``consume`` call returns.
        close_timeout: Seconds ``aclose`` gives librdkafka to leave the group.
        **config: librdkafka settings, passed as they are (dotted names:
            ``**{"session.timeout.ms": 6000}``). Defaults set here:
            ``auto.offset.reset=earliest`` (a new group reads what is already
            there) and ``partition.assignment.strategy=cooperative-sticky``
            (a rebalance moves only the partitions that change owner).

    Raises:
        ConfigError: A value is invalid, or ``config`` sets what this source owns
            (``group.id``, ``bootstrap.servers``, auto commit or offset store).
    """

    name = "kafka"
    read_may_wait = True

    def __init__(
        self,
        topics: str | Sequence[str],
        *,
        group: str,
        bootstrap_servers: str,
        id_field: str | None = None,
        id_header: str | None = None,
        name: str | None = None,
        commit_interval: float = 1.0,
        revoke_timeout: float = 30.0,
        max_buffered: int = 5_000,
        poll_timeout: float = 0.1,
        poll_batch: int = 1_000,
        close_timeout: float = 10.0,
        **config: Any,
    ) -> None:
        names = [topics] if isinstance(topics, str) else list(topics)
        if not names or not all(isinstance(t, str) and t for t in names):
            raise ConfigError(f"'topics' must be one or more non-empty names: {topics!r}")
        if not isinstance(group, str) or not group:
            raise ConfigError(f"'group' must be a non-empty str: {group!r}")
        if not isinstance(bootstrap_servers, str) or not bootstrap_servers:
            raise ConfigError(f"'bootstrap_servers' must be a non-empty str: {bootstrap_servers!r}")
        for field_name, value in (("id_field", id_field), ("id_header", id_header)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"'{field_name}' must be a non-empty str or None: {value!r}")
        for field_name, number in (("commit_interval", commit_interval),
                                   ("revoke_timeout", revoke_timeout)):
            if not (isinstance(number, int | float) and math.isfinite(number) and number >= 0):
                raise ConfigError(f"'{field_name}' must be >= 0: {number!r}")
        for field_name, number in (("poll_timeout", poll_timeout),
                                   ("close_timeout", close_timeout)):
            if not (isinstance(number, int | float) and math.isfinite(number) and number > 0):
                raise ConfigError(f"'{field_name}' must be > 0: {number!r}")
        for field_name, count in (("max_buffered", max_buffered), ("poll_batch", poll_batch)):
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise ConfigError(f"'{field_name}' must be >= 1: {count!r}")
        for key in config:
            if key in _OWNED:
                raise ConfigError(f"{key!r} is set by trio_ingest.sources.Kafka itself")
        if name is not None:
            self.name = name
            self.name_given = True
        self.topics = names
        self.group = group
        self.bootstrap_servers = bootstrap_servers
        self.id_field = id_field
        self.id_header = id_header
        self.commit_interval = float(commit_interval)
        self.revoke_timeout = float(revoke_timeout)
        self.max_buffered = max_buffered
        self.poll_timeout = float(poll_timeout)
        self.poll_batch = poll_batch
        self.close_timeout = float(close_timeout)
        self.config: dict[str, Any] = {
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            **config,
            "bootstrap.servers": bootstrap_servers,
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "on_commit": self._on_commit,
        }
        # counters, shown by the CLI
        self.commits = 0  # successful offset commits
        self.revokes = 0
        self.revoke_timeouts = 0
        self.pauses = 0
        self._reset_state()

    def __repr__(self) -> str:
        return f"<Kafka {self.name!r} topics={self.topics!r} group={self.group!r}>"

    def _reset_state(self) -> None:
        self._consumer: Any = None
        self._poll_limiter = anyio.CapacityLimiter(1)
        # everything below is owned by the event loop; the poll thread reaches it
        # only through anyio.from_thread (rebalance callbacks)
        self._buffers: dict[_TP, deque[Any]] = {}
        self._buffered = 0
        self._turn: deque[_TP] = deque()  # partitions with buffered messages, round robin
        self._generation: dict[_TP, int] = {}  # bumped at every assignment of a partition
        self._generations = 0
        self._owned: set[_TP] = set()  # assigned and not being revoked: readable
        self._revoking: set[_TP] = set()
        self._issued: dict[_TP, int] = {}  # next offset after the last message read
        self._finished: dict[_TP, int] = {}  # next offset after the finished prefix
        self._committed: dict[_TP, int] = {}  # what Kafka holds as committed (by us)
        self._high: dict[_TP, int] = {}  # high watermark seen for the partition
        self._readable: anyio.Event | None = None
        self._progress: anyio.Event | None = None  # finished offsets moved (revokes wait)
        self._error: BaseException | None = None
        self._closing = False
        self._poller_done: anyio.Event | None = None
        self._stop_poller: anyio.CancelScope | None = None
        self._watermarks_at = 0.0
        self._paused_client = False  # the client thread's view: partitions paused
        self._recommit = False  # an asynchronous commit failed: commit everything again

    # -- life cycle -----------------------------------------------------------
    @contextlib.asynccontextmanager
    async def open_resources(self) -> AsyncIterator[None]:
        """Host the poller task (the runtime enters this around ``open`` ... ``aclose``).

        To use the source by hand::

            async with source.open_resources():
                await source.open()
                ...
                await source.aclose()
        """
        async with anyio.create_task_group() as tg:
            self._poller_done = anyio.Event()
            tg.start_soon(self._poll_loop)
            try:
                yield
            finally:
                if self._stop_poller is not None:
                    self._stop_poller.cancel()
                tg.cancel_scope.cancel()

    async def open(self) -> None:
        """Create the consumer and subscribe; the group join happens while polling.

        Raises:
            SourceError: librdkafka refused the configuration.
        """
        from confluent_kafka import Consumer, KafkaException

        if self._poller_done is None:
            raise SourceError("Kafka.open() needs open_resources() (the runtime enters it)")
        try:
            consumer = Consumer(self.config, logger=log)
            consumer.subscribe(
                self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
        except (KafkaException, ValueError, TypeError) as exc:
            raise SourceError(f"Kafka consumer for {self.topics!r} could not start: {exc}") from exc
        self._consumer = consumer
        self._wake_readers()  # the poller waits for the consumer

    async def aclose(self) -> None:
        """Commit what finished, leave the group, close the consumer; idempotent."""
        consumer, self._consumer = self._consumer, None
        self._closing = True
        if self._stop_poller is not None:
            self._stop_poller.cancel()
        if self._poller_done is not None and consumer is not None:
            with anyio.move_on_after(self.poll_timeout + self.close_timeout):
                await self._poller_done.wait()
        if consumer is None:
            return
        try:
            # close() revokes every partition (our callback commits what finished)
            await anyio.to_thread.run_sync(consumer.close, limiter=self._poll_limiter)
        except Exception as exc:  # noqa: BLE001 -- a failed close still releases the client
            log.warning("closing the Kafka consumer of %s failed: %s", self.name, exc)
        finally:
            self._wake_readers()

    # -- reading ----------------------------------------------------------------
    async def read(self, max_events: int) -> Read | None:
        """The next messages of one partition (at most ``max_events``), waiting for some.

        Raises:
            SourceError: Polling the broker failed (the cause is chained).
        """
        while True:
            if self._error is not None:
                raise SourceError(f"Kafka source {self.name!r} failed: {self._error}") \
                    from self._error
            if self._closing:
                return None
            turn = self._turn
            while turn:
                tp = turn.popleft()
                buffer = self._buffers.get(tp)
                if not buffer or tp not in self._owned:
                    continue
                n = min(max_events, len(buffer))
                messages = [buffer.popleft() for _ in range(n)]
                if buffer:
                    turn.append(tp)
                self._buffered -= n
                return self._to_read(tp, messages)
            self._readable = anyio.Event()
            await self._readable.wait()

    def _to_read(self, tp: _TP, messages: list[Any]) -> Read:
        """Messages of one partition -> events (or dead letters); the hot path of the source."""
        topic, partition = tp
        prefix = f"{topic}/{partition}/"
        events: list[Event] = []
        rejected: list[DeadLetter] = []
        id_field = self.id_field
        id_header = self.id_header
        make = _trusted_event
        now = time.time()
        for msg in messages:
            raw_headers = msg.headers()
            headers: Mapping[str, str] = _NO_HEADERS
            if raw_headers:
                headers = {k: "" if v is None else v.decode("utf-8", "replace")
                           for k, v in raw_headers}
            kind, stamp = msg.timestamp()
            raw_key = msg.key()
            try:
                value = msg.value()
                if value is None:
                    raise ValueError("the message has no value (a tombstone)")
                payload = _loads(value)
                if id_field is not None:
                    if not isinstance(payload, dict) or id_field not in payload:
                        raise ValueError(f"no {id_field!r} field in the payload")
                    ident = str(payload[id_field])
                    if not ident:
                        raise ValueError(f"the {id_field!r} field is empty")
                elif id_header is not None and headers.get(id_header):
                    ident = headers[id_header]
                else:
                    ident = prefix + str(msg.offset())
            except ValueError as exc:  # json errors are ValueErrors too
                rejected.append(self._bad_message(prefix + str(msg.offset()), msg, headers, exc))
                continue
            # built without re-validating: the id was checked above (a non-empty str)
            key = None if raw_key is None else raw_key.decode("utf-8", "replace")
            events.append(make((ident, payload, key, stamp / 1000.0 if kind and stamp >= 0 else now,
                         headers)))
        end = messages[-1].offset() + 1
        self._issued[tp] = end
        generation = self._generation[tp]
        return Read(events, offset=(topic, partition, generation, end), rejected=rejected,
                    partition=(topic, partition, generation))

    def _bad_message(self, where: str, msg: Any, headers: Mapping[str, str],
                     exc: Exception) -> DeadLetter:
        kind, stamp = msg.timestamp()
        raw_key = msg.key()
        event = Event(id=where, payload=_text(msg.value())[:1000],
                      key=None if raw_key is None else _text(raw_key),
                      event_time=stamp / 1000.0 if kind and stamp >= 0 else time.time(),
                      headers={**headers, "kafka": where})
        letter = DeadLetter.from_exception(event, self.name, exc, 1)
        return DeadLetter(event=event, node=self.name, error_type=letter.error_type,
                          error=f"bad message {where}: {letter.error}", attempts=1)

    def _wake_readers(self) -> None:
        if self._readable is not None:
            self._readable.set()
            self._readable = None

    # -- the poller --------------------------------------------------------------
    async def _poll_loop(self) -> None:
        assert self._poller_done is not None
        try:
            with anyio.CancelScope() as self._stop_poller:
                while self._consumer is None and not self._closing:
                    self._readable = self._readable or anyio.Event()
                    await self._readable.wait()
                while not self._closing:
                    consumer = self._consumer
                    if consumer is None:
                        break
                    pause = self._buffered >= self.max_buffered
                    try:
                        messages, high = await anyio.to_thread.run_sync(
                            self._poll_once, consumer, pause, limiter=self._poll_limiter
                        )
                    except Exception as exc:  # noqa: BLE001 -- surfaced by read()
                        self._error = exc
                        self._wake_readers()
                        return
                    self._high.update(high)
                    if messages:
                        self._take(messages)
        finally:
            self._poller_done.set()

    def _poll_once(self, consumer: Any, pause: bool) -> tuple[list[Any], dict[_TP, int]]:
        """In the client thread: pause or resume, one ``consume``, fresh high watermarks."""
        from confluent_kafka import KafkaException

        assignment = consumer.assignment()
        if assignment:
            if pause:
                consumer.pause(assignment)
            elif self._paused_client:
                consumer.resume(assignment)
            if pause and not self._paused_client:
                self.pauses += 1
            self._paused_client = pause
        messages = consumer.consume(self.poll_batch, self.poll_timeout)
        good = []
        for msg in messages:
            err = msg.error()
            if err is None:
                good.append(msg)
            elif err.fatal():
                raise KafkaException(err)
            else:  # informational (partition EOF, a topic not there yet): nothing to read
                log.info("Kafka consumer of %s: %s", self.name, err.str())
        high: dict[_TP, int] = {}
        refresh = pause and time.monotonic() - self._watermarks_at > 2.0
        if refresh:
            self._watermarks_at = time.monotonic()
        for tp in assignment if (good or refresh) else ():
            try:
                if refresh:  # paused: nothing is fetched, so ask the broker itself
                    _, hi = consumer.get_watermark_offsets(tp, timeout=1.0, cached=False)
                else:
                    _, hi = consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if hi >= 0:
                high[(tp.topic, tp.partition)] = hi
        return good, high

    def _take(self, messages: list[Any]) -> None:
        buffers = self._buffers
        owned = self._owned
        taken = 0
        i, n = 0, len(messages)
        while i < n:  # librdkafka hands out runs of one partition: one lookup per run
            first = messages[i]
            topic, partition = first.topic(), first.partition()
            j = i + 1
            while j < n and messages[j].partition() == partition and messages[j].topic() == topic:
                j += 1
            tp = (topic, partition)
            if tp in owned:  # else revoked while this batch was on its way: the next owner reads it
                buffer = buffers.get(tp)
                if buffer is None:
                    buffer = buffers[tp] = deque()
                if not buffer:
                    self._turn.append(tp)
                buffer.extend(messages[i:j])
                taken += j - i
            i = j
        if taken:
            self._buffered += taken
            self._wake_readers()

    # -- rebalances (called by librdkafka inside consume(), in the client thread) --
    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        log.info("Kafka source %s assigned %s", self.name, tps)
        self._paused_client = True  # resume at the next poll: no pause carries over
        self._from_loop_sync(self._assigned, tps)

    def _assigned(self, tps: list[_TP]) -> None:
        for tp in tps:
            self._generations += 1
            self._generation[tp] = self._generations
            self._owned.add(tp)
            self._revoking.discard(tp)
            self._issued.pop(tp, None)
            self._finished.pop(tp, None)
            self._committed.pop(tp, None)
            self._drop_buffer(tp)

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        if not tps:
            return
        log.info("Kafka source %s: revoking %s", self.name, tps)
        self.revokes += 1
        offsets = self._from_loop(self._revoke_wait, tps)
        if offsets:
            self._commit_now(consumer, offsets)
        self._from_loop_sync(self._forget, tps)

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        log.warning("Kafka source %s lost %s (not committed: the next owner redelivers)",
                    self.name, tps)
        self._from_loop_sync(self._forget, tps)

    def _from_loop(self, fn: Callable[[list[_TP]], Any], tps: list[_TP]) -> Any:
        """Run async ``fn`` in the event loop; while closing, the loop is waiting on us."""
        if self._closing:
            return self._finished_offsets(tps)  # the runner's final commit ran: no waiting
        return anyio.from_thread.run(fn, tps)

    def _from_loop_sync(self, fn: Callable[[list[_TP]], Any], tps: list[_TP]) -> Any:
        if self._closing:
            return fn(tps)  # the loop awaits close() in this thread: state is ours
        return anyio.from_thread.run_sync(fn, tps)

    async def _revoke_wait(self, tps: list[_TP]) -> list[tuple[str, int, int]]:
        """Stop reading ``tps``, wait (bounded) for their in-flight events, say what to commit."""
        for tp in tps:
            self._owned.discard(tp)
            self._revoking.add(tp)
            self._drop_buffer(tp)
        started = anyio.current_time()
        with anyio.move_on_after(self.revoke_timeout) as scope:
            while not all(self._drained(tp) for tp in tps):
                self._progress = self._progress or anyio.Event()
                await self._progress.wait()
        if scope.cancelled_caught:
            self.revoke_timeouts += 1
            open_ = {tp: (self._finished.get(tp), self._issued.get(tp)) for tp in tps
                     if not self._drained(tp)}
            log.warning("Kafka source %s: revoke waited %.1f s; still in flight (finished, "
                        "read up to): %s; committed what finished", self.name,
                        anyio.current_time() - started, open_)
        return self._finished_offsets(tps)

    def _drained(self, tp: _TP) -> bool:
        issued = self._issued.get(tp)
        return issued is None or self._finished.get(tp, -1) >= issued

    def _finished_offsets(self, tps: list[_TP]) -> list[tuple[str, int, int]]:
        # all of them, even those committed asynchronously already: this one is synchronous
        return [(tp[0], tp[1], self._finished[tp]) for tp in tps if tp in self._finished]

    def _forget(self, tps: list[_TP]) -> None:
        for tp in tps:
            self._owned.discard(tp)
            self._revoking.discard(tp)
            self._generation.pop(tp, None)
            self._issued.pop(tp, None)
            self._finished.pop(tp, None)
            self._committed.pop(tp, None)
            self._high.pop(tp, None)
            self._drop_buffer(tp)

    def _drop_buffer(self, tp: _TP) -> None:
        buffer = self._buffers.pop(tp, None)
        if buffer:
            self._buffered -= len(buffer)

    # -- commits -------------------------------------------------------------------
    async def commit(self, offsets: Sequence[Any]) -> None:
        """Commit the finished prefix of every partition this member still owns.

        Offsets of a revoked partition, or of an earlier assignment of it, are
        ignored; those of a partition being revoked are handed to the revoke,
        which commits them before the rebalance goes on. Commits to Kafka are
        asynchronous (an enqueue, never a wait: a synchronous commit issued
        while a rebalance is under way waits for the rebalance, which may be
        waiting for this very commit loop); a failed one is logged and made
        again at the next call.
        """
        generation = self._generation
        finished = self._finished
        moved = False
        for topic, partition, gen, end in offsets:
            tp = (topic, partition)
            if generation.get(tp) == gen and end > finished.get(tp, -1):
                finished[tp] = end
                moved = True
        if moved and self._progress is not None:
            self._progress.set()
            self._progress = None
        consumer = self._consumer
        if consumer is None or self._revoking:
            return  # a revoke is under way: it commits its partitions, the rest come next time
        if self._recommit:
            self._recommit = False
            self._committed.clear()
        committed = self._committed
        todo = [(t, p, end) for (t, p), end in finished.items()
                if (t, p) in self._owned and end > committed.get((t, p), -1)]
        if not todo:
            return
        from confluent_kafka import KafkaException, TopicPartition

        try:
            consumer.commit(offsets=[TopicPartition(t, p, end) for t, p, end in todo],
                            asynchronous=True)
        except (KafkaException, RuntimeError) as exc:  # RuntimeError: closed meanwhile
            log.warning("Kafka source %s: commit of %s failed (made again next time): %s",
                        self.name, todo, exc)
            return
        for t, p, end in todo:
            committed[(t, p)] = end
        self.commits += 1

    def _on_commit(self, err: Any, partitions: list[Any]) -> None:
        """librdkafka's report of an asynchronous commit (in the client thread)."""
        failed = [p for p in partitions if p.error is not None]
        if err is not None or failed:
            log.warning("Kafka source %s: offset commit failed (made again next time): %s %s",
                        self.name, err, failed)
            self._recommit = True

    def _commit_now(self, consumer: Any, todo: list[tuple[str, int, int]]) -> None:
        """In the client thread, inside a revoke: one synchronous commit, before handing over."""
        from confluent_kafka import KafkaException, TopicPartition

        try:
            consumer.commit(offsets=[TopicPartition(t, p, end) for t, p, end in todo],
                            asynchronous=False)
        except (KafkaException, RuntimeError) as exc:
            log.warning("Kafka source %s: commit of revoked %s failed (the next owner "
                        "redelivers from the last commit): %s", self.name, todo, exc)
            return
        self.commits += 1

    # -- lag ---------------------------------------------------------------------------
    def partition_lag(self) -> dict[str, float]:
        """Messages not yet read, per ``"topic/partition"`` this member owns.

        Based on the partition's high watermark from the last fetch response (and,
        while paused, from a watermark query every 2 s) minus the next offset the
        pipeline reads. Note: tansu 0.6.0 answers watermark queries with the last
        batch's base offset + 1, so while paused there this is a lower bound.
        """
        out: dict[str, float] = {}
        for tp in self._owned:
            high = self._high.get(tp)
            if high is None:
                continue
            position = self._issued.get(tp)
            if position is None:
                position = self._committed.get(tp, 0)
            out[f"{tp[0]}/{tp[1]}"] = float(max(0, high - position))
        return out

    def lag(self) -> float | None:
        """Messages not yet read, summed over owned partitions (see :meth:`partition_lag`)."""
        parts = self.partition_lag()
        return sum(parts.values()) if parts else None

    def assignment(self) -> list[_TP]:
        """The partitions this member reads now (``(topic, partition)``), sorted."""
        return sorted(self._owned)

    def committed_offsets(self) -> Mapping[_TP, int]:
        """What this member last committed (asynchronously), per owned partition."""
        return dict(self._committed)
