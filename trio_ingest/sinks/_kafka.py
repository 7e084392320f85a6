"""Kafka sink: an idempotent confluent-kafka producer, one flush per batch.

Each event becomes one message: the value is the payload as JSON, the key the
event's key (text as UTF-8, bytes as they are, anything else as JSON), the
event id travels in the header ``id`` (with the event's own headers), the
timestamp is the event time. ``write_batch`` produces the whole batch and
flushes in one worker-thread call; it returns only when every delivery
report of the batch said success, so offsets upstream commit only for
messages the broker acknowledged.

Failures: a delivery error librdkafka calls retriable (or a timeout, a
transport error, all brokers down) raises :class:`TransientError`, which the
retry policy retries; any other raises :class:`PermanentError`, and the
runtime bisects the batch to dead-letter only the messages that fail. A
*fatal* error of the idempotent producer (its sequence state is lost, e.g.
after a broker lost its data) replaces the producer and is transient.
A retried batch may write some messages twice (those that did arrive):
readers deduplicate on the ``id`` header.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import anyio.to_thread

from .._errors import ConfigError, PermanentError, SinkError, TransientError
from .._event import Event
from .._retry import CircuitBreaker, RetryPolicy
from ._base import Sink

__all__ = ("Kafka",)

log = logging.getLogger("trio_ingest.sinks.kafka")

_fast_dumps: Callable[[Any], bytes] | None = None
try:  # orjson encodes several times faster than json
    import orjson

    _fast_dumps = orjson.dumps
except ImportError:  # pragma: no cover -- the kafka extra installs it
    pass


def _dumps(value: Any) -> bytes:
    if _fast_dumps is not None:
        try:
            return _fast_dumps(value)
        except TypeError:
            pass  # orjson refuses what json may take (big ints, subclasses): json decides
    return json.dumps(value, separators=(",", ":")).encode()


def _key_bytes(key: Any) -> bytes | None:
    if key is None:
        return None
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode()
    return _dumps(key)


class Kafka(Sink):
    """Write events to a Kafka topic with an idempotent producer.

    Args:
        topic: Topic to write to.
        bootstrap_servers: ``host:port[,host:port...]`` of the brokers.
        name: Node name (default ``"kafka"``).
        retry: Retry policy for failed batches (defaults to the pipeline's).
        workers: Concurrent batches (each a thread call on one shared producer).
        max_batch: Events per batch (default 5,000: one flush per batch).
        max_wait: Seconds to wait for more events to fill a batch.
        breaker: Optional circuit breaker.
        delivery_timeout: Seconds a message may take to be acknowledged
            (librdkafka ``message.timeout.ms``) before its batch fails as transient.
        **config: librdkafka producer settings, passed as they are (dotted
            names: ``**{"linger.ms": 5}``). Set here: ``enable.idempotence=true``
            (no duplicates from librdkafka's own retries), ``linger.ms=5``.

    Raises:
        ConfigError: A value is invalid, or ``config`` turns idempotence off.
    """

    name = "kafka"

    def __init__(
        self,
        topic: str,
        *,
        bootstrap_servers: str,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        workers: int = 1,
        max_batch: int | None = 5_000,
        max_wait: float = 0.0,
        breaker: CircuitBreaker | None = None,
        delivery_timeout: float = 30.0,
        **config: Any,
    ) -> None:
        super().__init__(name=name, retry=retry, workers=workers, max_batch=max_batch,
                         max_wait=max_wait, breaker=breaker)
        if not isinstance(topic, str) or not topic:
            raise ConfigError(f"'topic' must be a non-empty str: {topic!r}")
        if not isinstance(bootstrap_servers, str) or not bootstrap_servers:
            raise ConfigError(f"'bootstrap_servers' must be a non-empty str: {bootstrap_servers!r}")
        if not (isinstance(delivery_timeout, int | float) and math.isfinite(delivery_timeout)
                and delivery_timeout > 0):
            raise ConfigError(f"'delivery_timeout' must be > 0: {delivery_timeout!r}")
        if str(config.get("enable.idempotence", True)).lower() in ("false", "0"):
            raise ConfigError("'enable.idempotence' must stay true: the sink relies on it")
        if "bootstrap.servers" in config:
            raise ConfigError("'bootstrap.servers' is set by the bootstrap_servers argument")
        self.topic = topic
        self.bootstrap_servers = bootstrap_servers
        self.delivery_timeout = float(delivery_timeout)
        self.config: dict[str, Any] = {
            "linger.ms": 5,
            "message.timeout.ms": int(self.delivery_timeout * 1000),
            **config,
            "enable.idempotence": True,
            "bootstrap.servers": bootstrap_servers,
        }
        self.written = 0  # messages acknowledged by the broker
        self.producers_replaced = 0
        self._producer: Any = None
        self._limiter = anyio.CapacityLimiter(workers)

    def __repr__(self) -> str:
        return f"<Kafka sink {self.name!r} topic={self.topic!r}>"

    async def open(self) -> None:
        """Create the producer (it connects in the background).

        Raises:
            SinkError: librdkafka refused the configuration.
        """
        self._producer = self._new_producer()

    def _new_producer(self) -> Any:
        from confluent_kafka import KafkaException, Producer

        try:
            return Producer(self.config, logger=log)
        except (KafkaException, ValueError, TypeError) as exc:
            raise SinkError(f"Kafka producer for {self.topic!r} could not start: {exc}") from exc

    async def write_batch(self, events: Sequence[Event]) -> None:
        """Produce ``events``, flush, and return once every one was acknowledged.

        Raises:
            TransientError: A retriable delivery failure, a timeout, or a fatal
                producer error (the producer is replaced).
            PermanentError: Any other delivery failure (the runtime bisects).
        """
        if self._producer is None:
            raise SinkError(f"{self!r} is not open")
        await anyio.to_thread.run_sync(
            self._send, events, limiter=self._limiter, abandon_on_cancel=True
        )

    def _send(self, events: Sequence[Event]) -> None:
        """In a worker thread: produce all, one flush, then read the delivery reports."""
        from confluent_kafka import KafkaException

        producer = self._producer
        topic = self.topic
        failures: list[Any] = []

        def report(err: Any, _msg: Any) -> None:
            if err is not None:
                failures.append(err)

        for event in events:
            headers = [("id", event.id.encode())]
            if event.headers:
                headers.extend((k, v.encode()) for k, v in event.headers.items() if k != "id")
            value = _dumps(event.payload)
            key = _key_bytes(event.key)
            stamp = int(event.event_time * 1000)
            while True:
                try:
                    producer.produce(topic, value, key, on_delivery=report, headers=headers,
                                     timestamp=stamp)
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    producer.poll(0.05)
                except KafkaException as exc:
                    self._raise(exc.args[0] if exc.args else None, str(exc))
        pending = producer.flush(self.delivery_timeout + 5.0)
        if pending:
            raise TransientError(
                f"{pending} of {len(events)} messages to {topic!r} not acknowledged after "
                f"{self.delivery_timeout + 5.0:.0f} s"
            )
        if failures:
            first = failures[0]
            self._raise(first, f"{len(failures)} of {len(events)} deliveries to {topic!r} "
                               f"failed, first: {first.str()}")
        self.written += len(events)

    def _raise(self, err: Any, message: str) -> None:
        from confluent_kafka import KafkaError

        if err is None or not isinstance(err, KafkaError):
            raise PermanentError(message)
        if err.fatal():
            log.warning("Kafka sink %s: fatal producer error, replacing the producer: %s",
                        self.name, err.str())
            old, self._producer = self._producer, self._new_producer()
            self.producers_replaced += 1
            old.flush(0)
            raise TransientError(message)
        transient = {
            KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError._TRANSPORT,
            KafkaError._ALL_BROKERS_DOWN, KafkaError.REQUEST_TIMED_OUT,
            KafkaError.NOT_ENOUGH_REPLICAS, KafkaError.LEADER_NOT_AVAILABLE,
            KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError._QUEUE_FULL,
        }
        if err.retriable() or err.code() in transient:
            raise TransientError(message)
        raise PermanentError(message)

    async def flush(self) -> None:
        """Nothing is buffered between batches: every write flushed already."""

    async def aclose(self) -> None:
        """Flush what librdkafka still holds (bounded) and drop the producer; idempotent."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await anyio.to_thread.run_sync(producer.flush, 5.0, limiter=self._limiter)
