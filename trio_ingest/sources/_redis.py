"""Redis Streams consumer-group source: the shared, durable log of a scale-out.

Several processes (on one machine or many) read the same streams as members
of one consumer group: Redis hands each entry to one member, keeps it in the
group's pending-entries list (PEL) until that member acknowledges it, and lets
another member claim it when the first one dies. The source drives that
protocol from the runtime's acknowledgements:

* ``read`` first returns the consumer's own pending entries (a restart with
  the same consumer name resumes them), then entries idle longer than
  ``claim_idle`` in any consumer's PEL (a dead member's), then new ones
  (``XREADGROUP ... >``, blocking at most ``block`` seconds so a stop is
  prompt). Claims run from ``read`` itself every ``claim_interval`` seconds:
  no task of its own competes with the reading task. Candidates are listed
  with XPENDING (deliveries so far) and claimed by a Lua script that takes an
  entry only if nobody was handed it since: no entry is ever processed by two
  members at once, and every claim counts exactly one delivery.
* ``commit`` XACKs the entries of reads the pipeline has finished
  (delivered, dead-lettered or filtered), and nothing else.
* A background task, living in :meth:`RedisStreams.open_resources`, refreshes
  the idle time of the entries in flight (``XCLAIM ... JUSTID``), so a slow
  but live member does not lose them to a claim: failover happens when a
  member dies, not when it is busy.
* An entry delivered more than ``max_deliveries`` times is poison: it goes to
  the dead-letter sink (``Read.rejected``) instead of the pipeline, and is
  XACKed once dead-lettered. An entry delivered twice already (it was in
  flight in a member that died, twice) is *isolated*: it is read alone, when
  nothing else is in flight, so a crash it causes does not count against the
  entries that merely travelled with it.
* Connection errors (a Redis restart) are retried with backoff, forever:
  pending entries stay in the PEL, so no position is lost; after a reconnect
  the consumer re-reads its own pending entries (replies lost with the
  connection) before anything new.

Entries written by :class:`trio_ingest.sinks.RedisStreams` carry the fields
``id``, ``event_time``, ``payload`` (JSON) and optionally ``key`` (JSON) and
``headers`` (a JSON object); they become the same events again. Any other
entry becomes an event whose payload is its fields as a dict of strings, its
id the ``id_field`` field or, lacking one, ``"<stream>/<entry id>"``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any

import anyio
import attrs

from .._errors import ConfigError, SourceError
from .._event import DeadLetter, Event
from .._json import loads as _loads
from .._retry import Backoff, ConstantBackoff, ExponentialBackoff
from ._base import Read, Source

__all__ = ("RedisStreams", "StreamEntries", "partition_streams")

log = logging.getLogger("trio_ingest.sources.redis")

_BACKOFFS = (ConstantBackoff, ExponentialBackoff)

#: Entries delivered at least this many times (counting the delivery being
#: made) are read alone, with nothing else in flight.
ISOLATE_FROM_DELIVERY = 3

# KEYS[1]: a stream. ARGV: group, consumer, min idle (ms), then (id, owner, deliveries)
# triples from XPENDING. Claims an id only if XPENDING still shows that owner and
# count: nobody was handed it since, so this claim is exactly one more delivery.
# Returns {ids that passed the check, XCLAIM's entries} (a deleted entry is dropped
# from the PEL by XCLAIM and not returned).
_CLAIM_UNCHANGED = """
local group, consumer, min_idle = ARGV[1], ARGV[2], ARGV[3]
local checked = {}
for i = 4, #ARGV, 3 do
  local row = redis.call('XPENDING', KEYS[1], group, ARGV[i], ARGV[i], 1)[1]
  if row and row[2] == ARGV[i + 1] and tonumber(row[4]) == tonumber(ARGV[i + 2]) then
    checked[#checked + 1] = ARGV[i]
  end
end
local claimed = {}
for i = 1, #checked, 500 do
  local part = {}
  for j = i, math.min(i + 499, #checked) do part[#part + 1] = checked[j] end
  for _, entry in ipairs(redis.call('XCLAIM', KEYS[1], group, consumer, min_idle,
                                    unpack(part))) do
    claimed[#claimed + 1] = entry
  end
end
return {checked, claimed}
"""

_PAYLOAD = b"payload"
_KEY = b"key"
_EVENT_TIME = b"event_time"
_HEADERS = b"headers"


def _raw(response: Any) -> Any:
    """coredis callback that keeps the RESP3 reply as it is (no per-entry objects)."""
    return response


def partition_streams(stream: str, partitions: int, worker_index: int, workers: int) -> list[str]:
    """The partition streams worker ``worker_index`` of ``workers`` consumes.

    :class:`trio_ingest.sinks.RedisStreams` with ``partitions=P`` writes to
    ``f"{stream}:{p}"`` for ``p`` in ``range(P)``; worker ``i`` of ``n`` takes
    every ``p`` with ``p % n == i``. One consumer per partition keeps the
    order of each key.

    Raises:
        ConfigError: A count is out of range, or some worker would get no partition.
    """
    if not isinstance(partitions, int) or partitions < 1:
        raise ConfigError(f"'partitions' must be >= 1: {partitions!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"'workers' must be >= 1: {workers!r}")
    if workers > partitions:
        raise ConfigError(f"'workers' must be <= 'partitions' ({partitions}): {workers!r}")
    if not isinstance(worker_index, int) or not 0 <= worker_index < workers:
        raise ConfigError(f"'worker_index' must be in [0, {workers}): {worker_index!r}")
    return [f"{stream}:{p}" for p in range(partitions) if p % workers == worker_index]


@attrs.frozen(repr=False)
class StreamEntries:
    """The offset of one read: the entry ids it holds, per stream.

    Attributes:
        entries: ``(stream, (entry_id, ...))`` pairs, entry ids as Redis sent them.
    """

    entries: tuple[tuple[str, tuple[bytes, ...]], ...]

    def __len__(self) -> int:
        return sum(len(ids) for _, ids in self.entries)

    def __repr__(self) -> str:
        # the report shows the last committed offset: name the newest entry per stream
        parts = [f"{stream}@{ids[-1].decode()}" for stream, ids in self.entries if ids]
        return f"<StreamEntries {len(self)} entries: {', '.join(parts)}>"


@attrs.define(eq=False)
class _Pending:
    """A pending entry as XPENDING lists it: id and deliveries so far."""

    stream: str
    entry_id: bytes
    owner: bytes
    delivered: int


class RedisStreams(Source):
    """Read Redis streams as one consumer of a consumer group.

    Args:
        streams: A stream name, or several (read together).
        group: Consumer group name, shared by every worker of the scale-out.
        consumer: This worker's name in the group, stable across restarts: a
            restart with the same name resumes its pending entries first.
        url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` or
            ``unix://`` URL.
        block: Most seconds one XREADGROUP waits for new entries (<= 1, so a
            stop is prompt).
        claim_idle: Seconds an entry must sit unacknowledged in another
            consumer's pending list before this one claims it: the failover
            time after a worker dies.
        claim_interval: Seconds between two scans for idle entries (default
            ``claim_idle / 2``).
        max_deliveries: Deliveries after which an entry is poison: its next
            delivery dead-letters it (reason ``"delivered N times"``).
        create_group: Create the group (and the stream) when missing;
            otherwise a missing group fails ``open()``.
        start_id: Where a group created here starts: ``"0"`` (everything in
            the stream) or ``"$"`` (only entries added from now on).
        id_field: Entry field holding the event id (sinks deduplicate on it).
        timeout: Seconds to wait for a connection or a reply before treating
            Redis as unreachable (then reads retry with ``reconnect`` backoff).
        reconnect: Waits between reconnection attempts (forever; each
            failure is logged).
        name: Node name.

    Raises:
        ConfigError: An argument is invalid (before anything connects).
    """

    def __init__(
        self,
        streams: str | Sequence[str],
        group: str,
        consumer: str,
        *,
        url: str = "redis://127.0.0.1:6379",
        block: float = 1.0,
        claim_idle: float = 30.0,
        claim_interval: float | None = None,
        max_deliveries: int = 5,
        create_group: bool = True,
        start_id: str = "0",
        id_field: str = "id",
        timeout: float = 10.0,
        reconnect: Backoff | None = None,
        name: str = "redis",
    ) -> None:
        names = [streams] if isinstance(streams, str) else list(streams)
        if not names or not all(isinstance(s, str) and s for s in names):
            raise ConfigError(f"'streams' must be a stream name or a non-empty list: {streams!r}")
        if len(set(names)) != len(names):
            raise ConfigError(f"'streams' must not repeat a stream: {streams!r}")
        for label, value in (("group", group), ("consumer", consumer), ("id_field", id_field)):
            if not isinstance(value, str) or not value:
                raise ConfigError(f"'{label}' must be a non-empty str: {value!r}")
        if not 0 < block <= 1:
            raise ConfigError(f"'block' must be in (0, 1] seconds: {block!r}")
        if not claim_idle > 0:
            raise ConfigError(f"'claim_idle' must be > 0: {claim_idle!r}")
        if claim_interval is None:
            claim_interval = claim_idle / 2
        if not claim_interval > 0:
            raise ConfigError(f"'claim_interval' must be > 0: {claim_interval!r}")
        if not isinstance(max_deliveries, int) or max_deliveries < 1:
            raise ConfigError(f"'max_deliveries' must be >= 1: {max_deliveries!r}")
        if not isinstance(start_id, str) or not start_id:
            raise ConfigError(f"'start_id' must be '0', '$' or an entry id: {start_id!r}")
        if not timeout > 0:
            raise ConfigError(f"'timeout' must be > 0: {timeout!r}")
        if reconnect is not None and not isinstance(reconnect, _BACKOFFS):
            raise ConfigError(f"'reconnect' must be a backoff value or None: {reconnect!r}")
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"'url' must be a redis://, rediss:// or unix:// URL: {url!r}")
        self.name = name
        self.streams = names
        self.group = group
        self.consumer = consumer
        self.url = url
        self.block = float(block)
        self.claim_idle = float(claim_idle)
        self.claim_interval = float(claim_interval)
        self.max_deliveries = max_deliveries
        self.create_group = create_group
        self.start_id = start_id
        self.id_field = id_field
        self.timeout = float(timeout)
        self.reconnect = reconnect or ExponentialBackoff(
            initial=0.05, multiplier=2.0, max_delay=2.0, jitter="equal"
        )
        self._id_field = id_field.encode()
        self._client: Any = None  # reads and claims
        self._acker: Any = None  # acknowledgements and keepalives
        self._claim_script: Any = None
        self._reset_state()

    def __repr__(self) -> str:
        return (
            f"<RedisStreams {self.name!r} streams={self.streams!r} "
            f"group={self.group!r} consumer={self.consumer!r}>"
        )

    def _reset_state(self) -> None:
        # entries handed to the pipeline and not yet acknowledged, per stream
        self._inflight: dict[str, set[bytes]] = {s: set() for s in self.streams}
        # streams whose own pending entries are still to be re-read, with a cursor
        self._recovering: dict[str, bytes] = {s: b"-" for s in self.streams}
        self._claim_cursor: dict[str, bytes] = {s: b"-" for s in self.streams}
        self._claim_due = -math.inf
        self._outstanding = 0  # reads returned and not yet committed
        self._drained: anyio.Event | None = None
        self._isolating = False
        # finished entries not yet acknowledged, per stream
        self._unacked: dict[str, list[bytes]] = {}
        self._closed = False
        #: Entries acknowledged, claimed from other consumers, and dead-lettered as poison.
        self.acked = 0
        self.claimed = 0
        self.poisoned = 0
        self.reconnects = 0
        self._lag: int | None = None

    # -- life cycle -----------------------------------------------------------
    @contextlib.asynccontextmanager
    async def open_resources(self) -> AsyncIterator[None]:
        """Host the coredis client (it owns an AnyIO task group) and the keepalive task.

        The runtime enters this around ``open`` ... ``aclose`` in the source's
        own task. To use the source by hand::

            async with source.open_resources():
                await source.open()
                ...
                await source.aclose()

        Raises:
            ConfigError: The URL cannot be parsed.
        """
        import coredis
        from coredis.retry import NoRetryPolicy

        def connect() -> Any:
            return coredis.Redis.from_url(
                self.url,
                decode_responses=False,
                retry_policy=NoRetryPolicy(),
                connect_timeout=self.timeout,
                stream_timeout=self.timeout + self.block,
                # shown by CLIENT LIST; a client name may not contain spaces
                client_name="".join(
                    "_" if c.isspace() else c for c in f"trio-ingest:{self.group}:{self.consumer}"
                ),
            )

        try:
            # Two clients: cancelling a blocking XREADGROUP (a stop) drops its
            # connection, and must not take an XACK multiplexed on it along.
            reader, acker = connect(), connect()
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"'url' is not a valid Redis URL: {self.url!r}: {exc}") from exc
        async with reader, acker, anyio.create_task_group() as tg:
            self._client, self._acker = reader, acker
            try:
                tg.start_soon(self._keepalive_loop)
                yield
            finally:
                self._client = self._acker = None
                tg.cancel_scope.cancel()

    async def open(self) -> None:
        """Check the connection; create the group (and stream) where missing.

        Raises:
            SourceError: Redis is unreachable, or the group is missing and
                ``create_group`` is off, or a stream key is not a stream.
        """
        if self._client is None:
            raise SourceError(
                f"{self.name!r}: RedisStreams.open() must run inside its open_resources() "
                "context (a pipeline does this for you)"
            )
        self._reset_state()
        try:
            for stream in self.streams:
                await self._ensure_group(stream, create=self.create_group)
                # list this worker in the group now (XINFO CONSUMERS), not at its first entry
                await self._client.create_request(
                    b"XGROUP", b"CREATECONSUMER", stream, self.group, self.consumer, callback=_raw
                )
            self._claim_script = await self._load_claim_script()
        except _transient_errors() as exc:
            raise SourceError(f"{self.name!r}: cannot reach Redis at {self.url}: {exc}") from exc
        log.info(
            "%s: consuming %s as %r in group %r", self.name, self.streams, self.consumer, self.group
        )

    async def _load_claim_script(self) -> Any:
        from coredis.exceptions import ResponseError

        try:
            await self._client.script_load(_CLAIM_UNCHANGED)
        except ResponseError as exc:
            log.warning(
                "%s: the server refuses scripts (%s); claims fall back to plain XCLAIM, which "
                "may hand an entry to two consumers at once in a race",
                self.name,
                str(exc),
            )
            return None
        return self._client.register_script(_CLAIM_UNCHANGED)

    async def _ensure_group(self, stream: str, *, create: bool) -> None:
        from coredis.exceptions import ResponseError, StreamDuplicateConsumerGroupError

        client = self._client
        if create:
            try:
                await client.create_request(
                    b"XGROUP",
                    b"CREATE",
                    stream,
                    self.group,
                    self.start_id,
                    b"MKSTREAM",
                    callback=_raw,
                )
                log.info(
                    "%s: created group %r on %r at %s", self.name, self.group, stream, self.start_id
                )
            except StreamDuplicateConsumerGroupError:
                pass  # BUSYGROUP: it exists already
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise SourceError(
                        f"{self.name!r}: cannot create group {self.group!r} on {stream!r}: {exc}"
                    ) from exc
            return
        try:
            groups = await client.create_request(b"XINFO", b"GROUPS", stream, callback=_raw)
        except ResponseError as exc:
            raise SourceError(f"{self.name!r}: stream {stream!r} is missing: {exc}") from exc
        names = {g[b"name"] if isinstance(g, dict) else _field(g, b"name") for g in groups}
        if self.group.encode() not in names:
            raise SourceError(
                f"{self.name!r}: group {self.group!r} does not exist on {stream!r} "
                "(create_group=False)"
            )

    async def aclose(self) -> None:
        """Acknowledge what was committed but not yet acknowledged; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._unacked and self._acker is not None:
            with anyio.move_on_after(self.timeout):
                await self._ack_unacked()
        if self._unacked:
            log.warning(
                "%s: %d finished entries could not be acknowledged; they will be delivered "
                "again (at least once)",
                self.name,
                sum(len(ids) for ids in self._unacked.values()),
            )

    # -- reading --------------------------------------------------------------
    async def read(self, max_events: int) -> Read | None:
        """Own pending entries first, then idle entries of others, then new ones.

        Never returns ``None``: a stream has no end. Waits (forever, with
        backoff) through connection failures. A cancelled read loses nothing:
        entries a cancelled XREADGROUP delivered stay in this consumer's
        pending list and are read again (by a restart of it, or claimed).

        Raises:
            coredis.exceptions.ResponseError: Redis refused a command for a reason
                other than a missing consumer group (which is created again).
        """
        if self._isolating:
            # the last read held an isolated entry: let it finish alone
            await self._wait_drained()
            self._isolating = False
        delays: Iterator[float] | None = None
        while True:
            try:
                read = await self._next_read(max_events)
            except _transient_errors() as exc:
                if delays is None:
                    delays = self.reconnect.delays()
                    log.warning(
                        "%s: lost Redis at %s (%s: %s); reconnecting",
                        self.name,
                        self.url,
                        type(exc).__name__,
                        str(exc),
                    )
                else:
                    log.debug("%s: Redis still unreachable: %s", self.name, str(exc))
                self._lost_connection()
                await anyio.sleep(next(delays))
                continue
            except _response_errors() as exc:
                if "NOGROUP" not in str(exc) and not isinstance(exc, _group_errors()):
                    raise
                await self._recreate_group(exc)
                continue
            if delays is not None:
                self.reconnects += 1
                log.warning("%s: reconnected to Redis at %s", self.name, self.url)
                delays = None
            if read is not None:
                return read

    def lag(self) -> float | None:
        """Entries of the streams not yet delivered to the group (any member), if Redis knows.

        Redis >= 7 reports it per group; refreshed every ``claim_interval``.
        """
        return self._lag

    async def _refresh_lag(self) -> None:
        total = 0
        for stream in self.streams:
            groups = await self._client.create_request(b"XINFO", b"GROUPS", stream, callback=_raw)
            for g in groups:
                fields = g if isinstance(g, dict) else dict(zip(g[::2], g[1::2], strict=False))
                if fields.get(b"name") == self.group.encode():
                    value = fields.get(b"lag")
                    if not isinstance(value, int):
                        self._lag = None  # unknown (Redis < 7, or after XDEL/SETID)
                        return
                    total += value
        self._lag = total

    def _lost_connection(self) -> None:
        # replies lost with the connection may have put entries in our PEL: re-read it
        self._recovering = {s: b"-" for s in self.streams}

    async def _next_read(self, max_events: int) -> Read | None:
        """One step: a Read, or ``None`` when this step found nothing (try again)."""
        for stream in list(self._recovering):
            read = await self._take_pending(stream, own=True, max_events=max_events)
            if read is not None:
                return read
        now = anyio.current_time()
        if now >= self._claim_due:
            for stream in self.streams:
                read = await self._take_pending(stream, own=False, max_events=max_events)
                if read is not None:
                    return read
            if all(cursor == b"-" for cursor in self._claim_cursor.values()):
                self._claim_due = now + self.claim_interval
                await self._refresh_lag()
            return None
        return await self._read_new(max_events, until=self._claim_due)

    async def _read_new(self, max_events: int, *, until: float) -> Read | None:
        """XREADGROUP ``>``: entries never delivered to anyone (first delivery)."""
        wait = max(0.001, min(self.block, until - anyio.current_time()))
        streams = self.streams
        per_stream = max(1, max_events // len(streams))
        reply = await self._client.create_request(
            b"XREADGROUP",
            b"GROUP",
            self.group,
            self.consumer,
            b"COUNT",
            per_stream,
            b"BLOCK",
            max(1, int(wait * 1000)),
            b"STREAMS",
            *streams,
            *(b">" for _ in streams),
            callback=_raw,
        )
        if not reply:
            return None
        events: list[Event] = []
        rejected: list[DeadLetter] = []
        offset: list[tuple[str, tuple[bytes, ...]]] = []
        for raw_stream, entries in reply.items():
            stream = raw_stream.decode() if isinstance(raw_stream, bytes) else raw_stream
            ids = tuple([entry[0] for entry in entries])
            self._decode_into(stream, entries, events, rejected)
            offset.append((stream, ids))
        return self._issue(events, rejected, offset)

    async def _take_pending(self, stream: str, *, own: bool, max_events: int) -> Read | None:
        """Take pending entries: this consumer's own (``own``) or idle ones of anyone.

        Lists the candidates with XPENDING first (no side effect), so poison
        and suspect entries are recognised before a delivery is counted
        against them; then claims them with :meth:`_claim`, which takes an
        entry only if nobody was handed it since (same owner, same count), so
        its delivery count is now exactly the listed
        one plus one. Returns ``None`` when this step took nothing.
        """
        client = self._client
        cursors = self._recovering if own else self._claim_cursor
        cursor = cursors[stream]
        if own:
            rows = await client.create_request(
                b"XPENDING",
                stream,
                self.group,
                cursor,
                b"+",
                max_events,
                self.consumer,
                callback=_raw,
            )
        else:
            rows = await client.create_request(
                b"XPENDING",
                stream,
                self.group,
                b"IDLE",
                int(self.claim_idle * 1000),
                cursor,
                b"+",
                max_events,
                callback=_raw,
            )
        if not rows:
            if own:
                del self._recovering[stream]
            else:
                self._claim_cursor[stream] = b"-"
            return None
        inflight = self._inflight[stream]
        take: list[_Pending] = []
        isolated = False
        for row in rows:
            entry_id, owner, delivered = row[0], row[1], int(row[3])
            if entry_id in inflight:
                if take and own:
                    break  # an own re-read is a contiguous range of the PEL
                cursor = b"(" + entry_id
                continue
            next_delivery = delivered + 1
            if ISOLATE_FROM_DELIVERY <= next_delivery <= self.max_deliveries:
                # a suspect: it goes alone, once everything before it has finished
                if take:
                    break
                if self._outstanding:
                    cursors[stream] = cursor
                    await self._wait_drained()
                    return None  # look again: the pending list may have changed meanwhile
                isolated = True
            take.append(_Pending(stream, entry_id, owner, delivered))
            if isolated:
                break
        if not take:
            cursors[stream] = cursor
            return None
        entries, missing = await self._claim(stream, take, own=own)
        cursors[stream] = b"(" + take[-1].entry_id
        by_id = {p.entry_id: p for p in take}
        events: list[Event] = []
        rejected: list[DeadLetter] = []
        fresh = []
        held: list[bytes] = []
        for entry in entries:
            pending = by_id.get(entry[0])
            if pending is None:
                continue
            held.append(entry[0])
            if pending.delivered + 1 > self.max_deliveries:
                self._reject_poison(stream, entry, pending.delivered + 1, rejected)
            else:
                fresh.append(entry)
        if missing:
            # XCLAIM drops entries deleted from the stream (trimmed) from the PEL
            log.warning(
                "%s: %d pending entries of %r were deleted from the stream (trimmed?) before "
                "they were processed: %s",
                self.name,
                len(missing),
                stream,
                [m.decode() for m in missing[:10]],
            )
        if not held:
            return None
        self._decode_into(stream, fresh, events, rejected)
        if not own:
            self.claimed += len(held)
            log.info("%s: claimed %d idle entries of %r", self.name, len(held), stream)
        if isolated:
            self._isolating = True
            log.info(
                "%s: entry %s of %r was delivered %d times already; processing it alone",
                self.name,
                take[0].entry_id.decode(),
                stream,
                take[0].delivered,
            )
        return self._issue(events, rejected, [(stream, tuple(held))])

    async def _claim(
        self, stream: str, take: list[_Pending], *, own: bool
    ) -> tuple[list[Any], list[bytes]]:
        """XCLAIM ``take`` for this consumer, each only if still as XPENDING listed it.

        Returns the claimed entries and the ids that passed the check but
        were not returned (deleted from the stream). The check and the claim
        run in one Lua script, so no other consumer can be handed an entry in
        between: an entry is never processed twice at once, and a claim
        counts exactly one delivery. Without scripts (refused by the server)
        a plain XCLAIM is used, with ``claim_idle`` as minimum idle time for
        others' entries (a live consumer refreshes its own).
        """
        min_idle = 0 if own else int(self.claim_idle * 1000)
        if self._claim_script is not None:
            args: list[Any] = [self.group, self.consumer, min_idle]
            for p in take:
                args += [p.entry_id, p.owner, p.delivered]
            checked, entries = await self._claim_script(
                keys=[stream], args=args, client=self._client, callback=_raw
            )
        else:
            checked = [p.entry_id for p in take]
            entries = await self._client.create_request(
                b"XCLAIM", stream, self.group, self.consumer, min_idle, *checked, callback=_raw
            )
        returned = {entry[0] for entry in entries}
        return list(entries), [i for i in checked if i not in returned]

    def _issue(
        self,
        events: list[Event],
        rejected: list[DeadLetter],
        offset: list[tuple[str, tuple[bytes, ...]]],
    ) -> Read:
        for stream, ids in offset:
            self._inflight[stream].update(ids)
        self._outstanding += 1
        return Read(events, StreamEntries(tuple(offset)), rejected)

    async def _wait_drained(self) -> None:
        while self._outstanding:
            if self._drained is None:
                self._drained = anyio.Event()
            await self._drained.wait()

    async def _recreate_group(self, exc: BaseException) -> None:
        """The group vanished (deleted, or lost with a Redis restart without persistence)."""
        if not self.create_group:
            raise SourceError(f"{self.name!r}: group {self.group!r} is gone: {exc}") from exc
        log.warning(
            "%s: group %r is gone (%s); creating it again at %s (at least once: "
            "entries may be delivered again)",
            self.name,
            self.group,
            str(exc),
            self.start_id,
        )
        for stream in self.streams:
            await self._ensure_group(stream, create=True)
        self._lost_connection()

    # -- decoding -------------------------------------------------------------
    def _decode_into(
        self,
        stream: str,
        entries: Iterable[Any],
        events: list[Event],
        rejected: list[DeadLetter],
    ) -> None:
        """Turn raw ``[entry_id, [field, value, ...]]`` entries into events (or dead letters)."""
        id_field = self._id_field
        for entry in entries:
            entry_id, flat = entry[0], entry[1]
            try:
                n = len(flat)
                # fast path: the layout sinks.RedisStreams writes (id, event_time,
                # payload, then key when set); no dict per entry
                if (
                    (n == 6 or (n == 8 and flat[6] == _KEY))
                    and flat[0] == id_field
                    and flat[2] == _EVENT_TIME
                    and flat[4] == _PAYLOAD
                ):
                    raw_id = flat[1]
                    events.append(
                        Event(
                            raw_id.decode() if raw_id else f"{stream}/{entry_id.decode()}",
                            _loads(flat[5]),
                            None if n == 6 else _loads_key(flat[7]),
                            float(flat[3]),
                        )
                    )
                    continue
                it = iter(flat)
                fields: dict[bytes, bytes] = dict(zip(it, it, strict=True))
                raw_id = fields.get(id_field)
                ident = raw_id.decode() if raw_id else f"{stream}/{entry_id.decode()}"
                payload_raw = fields.get(_PAYLOAD)
                if payload_raw is None:
                    events.append(
                        Event(
                            id=ident,
                            payload={
                                k.decode(): v.decode() for k, v in fields.items() if k != id_field
                            },
                            event_time=_id_time(entry_id),
                        )
                    )
                    continue
                key_raw = fields.get(_KEY)
                time_raw = fields.get(_EVENT_TIME)
                headers_raw = fields.get(_HEADERS)
                headers = None
                if headers_raw and headers_raw != b"{}":
                    headers = _loads(headers_raw)
                    if not isinstance(headers, dict) or not all(
                        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
                    ):
                        raise ValueError(f"'headers' must be a JSON object of strings: {headers!r}")
                event = Event(
                    id=ident,
                    payload=_loads(payload_raw),
                    key=None if key_raw is None else _loads_key(key_raw),
                    event_time=float(time_raw) if time_raw else _id_time(entry_id),
                )
                if headers:
                    event = event.evolve(headers=headers)
                events.append(event)
            except (ValueError, TypeError, AttributeError) as exc:
                rejected.append(self._bad_entry(stream, entry_id, flat, exc))

    def _bad_entry(self, stream: str, entry_id: bytes, flat: Any, error: Exception) -> DeadLetter:
        where = f"{stream}/{entry_id.decode()}"
        fields: dict[str, str] = {}
        if isinstance(flat, list):
            it = iter(flat)
            for k, v in zip(it, it, strict=False):
                fields[_text(k)] = _text(v)
        ident = fields.get(self.id_field) or where
        event = Event(
            id=ident, payload=fields, event_time=_id_time(entry_id), headers={"redis_entry": where}
        )
        letter = DeadLetter.from_exception(event, self.name, error, 1)
        return attrs.evolve(letter, error=f"bad entry {where}: {letter.error}")

    def _reject_poison(
        self, stream: str, entry: Any, deliveries: int, rejected: list[DeadLetter]
    ) -> None:
        events: list[Event] = []
        self._decode_into(stream, [entry], events, rejected)
        if not events:
            return  # undecodable as well: already rejected with that reason
        where = f"{stream}/{entry[0].decode()}"
        event = events[0].evolve(headers={**events[0].headers, "redis_entry": where})
        self.poisoned += 1
        log.warning(
            "%s: entry %s (event %r) was delivered %d times (max_deliveries=%d): poison, "
            "dead-lettering it",
            self.name,
            where,
            event.id,
            deliveries,
            self.max_deliveries,
        )
        rejected.append(
            DeadLetter(
                event=event,
                node=self.name,
                error_type="PoisonEntry",
                error=f"delivered {deliveries} times (max_deliveries={self.max_deliveries}): "
                f"{where}",
                attempts=deliveries,
            )
        )

    # -- acknowledging --------------------------------------------------------
    async def commit(self, offsets: Sequence[Any]) -> None:
        """XACK the entries of ``offsets`` (reads the pipeline has finished).

        Retries connection errors with backoff until the runtime's commit
        deadline; entries not acknowledged by then are retried on the next
        commit (and in ``aclose``), and stay in flight meanwhile.
        """
        unacked = self._unacked
        for offset in offsets:
            for stream, entry_ids in offset.entries:
                unacked.setdefault(stream, []).extend(entry_ids)
        self._outstanding -= len(offsets)
        if self._outstanding <= 0 and self._drained is not None:
            self._drained.set()
            self._drained = None
        await self._ack_unacked()

    async def _ack_unacked(self) -> None:
        delays: Iterator[float] | None = None
        unacked = self._unacked
        while unacked:
            stream, pending = next(iter(unacked.items()))
            ids = pending[:10_000]
            try:
                await self._acker.create_request(b"XACK", stream, self.group, *ids, callback=_raw)
            except _transient_errors() as exc:
                if delays is None:
                    delays = self.reconnect.delays()
                    log.warning(
                        "%s: XACK failed (%s: %s); retrying",
                        self.name,
                        type(exc).__name__,
                        str(exc),
                    )
                await anyio.sleep(next(delays))
                continue
            # XACK returns how many were still pending; a retry after a lost reply
            # finds them gone, so count what was confirmed, not the reply
            del pending[: len(ids)]
            if not pending:
                del unacked[stream]
            self.acked += len(ids)
            self._inflight[stream].difference_update(ids)

    async def _keepalive_loop(self) -> None:
        """Keep in-flight entries fresh, so only a dead consumer's entries look idle."""
        interval = self.claim_idle / 3
        while True:
            await anyio.sleep(interval)
            client = self._acker
            if client is None:
                return
            for stream, inflight in self._inflight.items():
                held = list(inflight)
                for start in range(0, len(held), 1000):
                    try:
                        await client.create_request(
                            b"XCLAIM",
                            stream,
                            self.group,
                            self.consumer,
                            0,
                            *held[start : start + 1000],
                            b"JUSTID",
                            callback=_raw,
                        )
                    except _transient_errors() as exc:
                        log.debug("%s: keepalive of %r failed: %s", self.name, stream, str(exc))
                        break


def _transient_errors() -> tuple[type[BaseException], ...]:
    from coredis.exceptions import (
        BusyLoadingError,
        ClusterDownError,
        ConnectionError,
        ReadOnlyError,
        TryAgainError,
    )

    return (
        ConnectionError,
        BusyLoadingError,
        TimeoutError,
        OSError,
        ClusterDownError,
        TryAgainError,
        ReadOnlyError,
    )


def _response_errors() -> tuple[type[BaseException], ...]:
    from coredis.exceptions import ResponseError, StreamConsumerGroupError

    return (ResponseError, StreamConsumerGroupError)


def _group_errors() -> tuple[type[BaseException], ...]:
    from coredis.exceptions import StreamConsumerGroupError

    return (StreamConsumerGroupError,)


def _id_time(entry_id: bytes) -> float:
    """Seconds since the epoch from an entry id (``<milliseconds>-<seq>``)."""
    ms, _, _ = entry_id.partition(b"-")
    return int(ms) / 1000.0




def _loads_key(raw: bytes) -> Any:
    """Keys are written as JSON; a key that is not JSON is taken as a string."""
    if len(raw) >= 2 and raw[0] == 34 and raw[-1] == 34 and 92 not in raw:
        return raw[1:-1].decode()  # a plain JSON string (no escapes): the common key
    try:
        return _loads(raw)
    except ValueError:
        return raw.decode()


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _field(flat: Any, name: bytes) -> Any:
    it = iter(flat)
    return dict(zip(it, it, strict=False)).get(name)
