"""``trio-ingest worker`` and ``trio-ingest produce``: scale out over Redis Streams or Kafka.

``produce`` loads a JSON Lines file into a stream (or into key-partitioned
streams). ``worker`` runs one member of a consumer group: start it several
times (with different ``--consumer`` names, on one machine or many) and the
group splits the stream's entries among them; a worker that dies has its
unfinished entries claimed by the others after ``--claim-idle`` seconds.

With ``--kafka BOOTSTRAP`` both commands use a Kafka topic instead
(``--topic``): ``produce`` writes the records with the idempotent
:class:`trio_ingest.sinks.Kafka`, ``worker`` runs a
:class:`trio_ingest.sources.Kafka` member of ``--group``; the broker's group
protocol moves a dead or stopped member's partitions to the others.

The factory contract
--------------------
``worker module:factory`` imports ``module`` and calls::

    factory(source, **options) -> trio_ingest.Graph   # a Pipeline is a Graph

``source`` is the :class:`trio_ingest.sources.RedisStreams` (or, with
``--kafka``, :class:`trio_ingest.sources.Kafka`) this worker reads (already
configured from the flags); ``options`` are the ``-o KEY=VALUE``
flags, as strings. The factory returns the pipeline (or graph) that consumes
``source``: its stages, its sink, its dead-letter sink (poison entries go
there). Everything else (signals, graceful stop, progress) is the command's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .._errors import ConfigError
from .._pipeline import Graph, Pipeline
from .._retry import ExponentialBackoff, RetryPolicy
from ..sinks._redis import RedisStreams as RedisStreamsSink
from ..sources._base import Source
from ..sources._redis import RedisStreams, partition_streams
from ._common import (
    Command,
    Output,
    ProgressView,
    describe_error,
    fail,
    finish,
    make_output,
    output_options,
    parse_options,
    run_command,
)
from ._run import load_factory

if TYPE_CHECKING:
    from ..sinks._kafka import Kafka as KafkaSink

__all__ = ("produce", "worker")

_POSITIVE = click.FloatRange(min=0, min_open=True)
_DEFAULT_URL = "redis://127.0.0.1:6379"


def _parse_config(pairs: tuple[str, ...]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"-X/--kafka-config must be KEY=VALUE (a librdkafka setting), got {pair!r}")
        config[key] = value
    return config


@click.command(cls=Command)
@click.argument("factory")
@click.option("--redis", "url", default=_DEFAULT_URL, show_default=True,
              help="Redis URL (redis://, rediss:// or unix://).")
@click.option("--kafka", "kafka", default=None, metavar="BOOTSTRAP",
              help="Consume Kafka (host:port[,...]) instead of Redis; needs --topic.")
@click.option("--topic", "topics", multiple=True,
              help="With --kafka: topic to consume (repeat for several).")
@click.option("-X", "--kafka-config", "kafka_config", multiple=True, metavar="KEY=VALUE",
              help="With --kafka: a librdkafka setting (session.timeout.ms=6000); repeatable.")
@click.option("--id-field", default=None,
              help="With --kafka: payload field holding the event id "
                   "[default: topic/partition/offset].")
@click.option("--revoke-timeout", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="With --kafka: seconds a rebalance waits for in-flight events to finish.")
@click.option("--commit-interval", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="With --kafka: least seconds between offset commits.")
@click.option("--group", required=True, help="Consumer group shared by all workers.")
@click.option("--consumer", default=None,
              help="This worker's name in the group; keep it across restarts to resume "
                   "(required with Redis; the Kafka client.id).")
@click.option("--stream", "streams", multiple=True,
              help="Stream to consume (repeat for several); with --partitions, the base name.")
@click.option("--partitions", type=click.IntRange(min=1), default=None,
              help="The streams are partitioned STREAM:0 .. STREAM:P-1 (see `produce`).")
@click.option("--worker-index", type=click.IntRange(min=0), default=None,
              help="With --partitions: this worker takes partitions p with p % workers == index.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="With --partitions: how many workers share the partitions.")
@click.option("--claim-idle", type=_POSITIVE, default=30.0, show_default=True,
              help="Seconds before a dead worker's unfinished entries are claimed (failover).")
@click.option("--max-deliveries", type=click.IntRange(min=1), default=5, show_default=True,
              help="Deliveries after which an entry is dead-lettered as poison.")
@click.option("--start-id", default="0", show_default=True,
              help="Where a group created now starts: 0 (whole stream) or $ (new entries).")
@click.option("--block", type=click.FloatRange(min=0, max=1, min_open=True), default=1.0,
              show_default=True, help="Seconds one read waits for new entries.")
@click.option("-o", "--option", "factory_options", multiple=True, metavar="KEY=VALUE",
              help="Passed to the factory as a keyword argument (a string); repeatable.")
@click.option("--shutdown-timeout", type=_POSITIVE, default=30.0, show_default=True,
              help="Seconds a graceful stop (Ctrl-C, SIGTERM) may take to drain.")
@output_options
def worker(
    factory: str,
    url: str,
    kafka: str | None,
    topics: tuple[str, ...],
    kafka_config: tuple[str, ...],
    id_field: str | None,
    revoke_timeout: float,
    commit_interval: float,
    group: str,
    consumer: str | None,
    streams: tuple[str, ...],
    partitions: int | None,
    worker_index: int | None,
    workers: int | None,
    claim_idle: float,
    max_deliveries: int,
    start_id: str,
    block: float,
    factory_options: tuple[str, ...],
    shutdown_timeout: float,
    quiet: bool,
    as_json: bool,
    log_level: str,
) -> None:
    """Run one worker of a consumer group: FACTORY (module:function) builds its pipeline.

    FACTORY is called as factory(source, **options) with the RedisStreams
    source of this worker and must return a Pipeline or Graph that reads it.
    Runs until SIGINT/SIGTERM: a graceful stop finishes what is in flight and
    acknowledges exactly that; a second signal forces. Entries are processed
    at least once; with --partitions and a static assignment, in order per key.

    With --kafka BOOTSTRAP the worker is a member of the Kafka consumer group
    --group reading --topic: offsets commit per partition up to what the
    pipeline finished, and a rebalance waits (--revoke-timeout) for the
    revoked partitions' in-flight events before handing them over.
    """
    output = make_output(quiet, as_json, log_level)
    options = parse_options(factory_options)
    if kafka is not None:
        _kafka_worker(output, factory, options, kafka, topics, _parse_config(kafka_config),
                      id_field, revoke_timeout, commit_interval, group, consumer,
                      bool(streams) or partitions is not None, shutdown_timeout)
        return
    if topics or kafka_config or id_field is not None:
        fail("--topic, -X/--kafka-config and --id-field need --kafka")
    if consumer is None:
        fail("--consumer is required (this worker's name in the Redis group)")
    if not streams:
        fail("--stream is required (or --kafka BOOTSTRAP --topic T)")
    names = list(streams)
    if partitions is not None:
        if len(names) != 1:
            fail("--partitions takes exactly one --stream (the base name)")
        index = 0 if worker_index is None else worker_index
        count = 1 if workers is None else workers
        try:
            names = partition_streams(names[0], partitions, index, count)
        except ConfigError as exc:
            fail(str(exc).replace("'worker_index'", "--worker-index").replace(
                "'workers'", "--workers"))
    elif worker_index is not None or workers is not None:
        fail("--worker-index and --workers need --partitions")
    try:
        source = RedisStreams(
            names, group, consumer, url=url, block=block, claim_idle=claim_idle,
            max_deliveries=max_deliveries, start_id=start_id,
        )
    except ConfigError as exc:
        fail(str(exc))
    _run_worker(
        output, _build(factory, source, options), shutdown_timeout, me=consumer, group=group,
        banner=f"[bold]{consumer}[/] of group [bold]{group}[/] consuming "
               f"{', '.join(names)} at {url}",
        extra=lambda: [
            ("acknowledged", f"{source.acked:,}", "XACKed entries"),
            ("claimed", f"{source.claimed:,}", "idle entries taken from other consumers"),
            ("poison", f"{source.poisoned:,}", f"delivered more than {max_deliveries} times"),
            ("reconnects", f"{source.reconnects:,}", "after losing Redis"),
        ],
        data=lambda: {
            "consumer": consumer,
            "group": group,
            "streams": names,
            "acked": source.acked,
            "claimed": source.claimed,
            "poisoned": source.poisoned,
            "reconnects": source.reconnects,
        },
    )


def _run_worker(
    output: Output, graph: Graph, shutdown_timeout: float, *, me: str, group: str, banner: str,
    extra: Callable[[], list[tuple[str, str, str]]], data: Callable[[], dict[str, Any]],
) -> None:
    """Run one worker of a consumer group: banner, live progress, then the summary.

    ``extra`` and ``data`` are read after the run (the source's counters by then).
    """
    err = output.stderr()
    view = None
    if not output.quiet and err.is_terminal:
        view = ProgressView(err, title=f"{me} @ {group}")
    if not output.quiet:
        err.print(banner, highlight=False)
    outcome = run_command(output, graph, view=view, shutdown_timeout=shutdown_timeout)
    finish(output, outcome, title=f"trio-ingest worker {me}", extra=extra(), data=data())


def _build(factory: str, source: Source, options: dict[str, str]) -> Graph:
    """Call the factory (the worker contract) and check what it returned."""
    build = load_factory(factory)
    try:
        graph = build(source, **options)
    except Exception as exc:  # noqa: BLE001 -- user code: reported as one line
        fail(f"{factory}(source, **options) failed: {describe_error(exc)}")
    if not isinstance(graph, Graph):
        fail(f"{factory} must return a Pipeline or Graph, got {type(graph).__name__}")
    if not any(node.obj is source for node in graph.nodes.values()):
        fail(f"the graph {factory} returned does not read the source it was given")
    return graph


def _kafka_worker(
    output: Output, factory: str, options: dict[str, str], bootstrap: str,
    topics: tuple[str, ...], config: dict[str, Any], id_field: str | None,
    revoke_timeout: float, commit_interval: float, group: str, consumer: str | None,
    redis_flags: bool, shutdown_timeout: float,
) -> None:
    from ..sources._kafka import Kafka

    if not topics:
        fail("--kafka needs --topic (repeat for several)")
    if redis_flags:
        fail("--stream and --partitions are for Redis; with --kafka use --topic")
    if consumer is not None:
        config.setdefault("client.id", consumer)
    try:
        source = Kafka(list(topics), group=group, bootstrap_servers=bootstrap, id_field=id_field,
                       revoke_timeout=revoke_timeout, commit_interval=commit_interval, **config)
    except ConfigError as exc:
        fail(str(exc))
    me = consumer or f"pid {os.getpid()}"
    _run_worker(
        output, _build(factory, source, options), shutdown_timeout, me=me, group=group,
        banner=f"[bold]{me}[/] of Kafka group [bold]{group}[/] consuming "
               f"{', '.join(topics)} at {bootstrap}",
        extra=lambda: [
            ("commits", f"{source.commits:,}", "offset commits (per partition, what finished)"),
            ("revokes", f"{source.revokes:,}",
             f"rebalances that took partitions ({source.revoke_timeouts} timed out)"),
            ("pauses", f"{source.pauses:,}", "times the partitions were paused (backpressure)"),
        ],
        data=lambda: {
            "consumer": consumer,
            "group": group,
            "topics": list(topics),
            "commits": source.commits,
            "revokes": source.revokes,
            "revoke_timeouts": source.revoke_timeouts,
            "pauses": source.pauses,
        },
    )


@click.command(cls=Command)
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--redis", "url", default=_DEFAULT_URL, show_default=True,
              help="Redis URL (redis://, rediss:// or unix://).")
@click.option("--kafka", "kafka", default=None, metavar="BOOTSTRAP",
              help="Write to a Kafka topic (host:port[,...]) instead of Redis; needs --topic.")
@click.option("--topic", default=None, help="With --kafka: the topic to write to.")
@click.option("-X", "--kafka-config", "kafka_config", multiple=True, metavar="KEY=VALUE",
              help="With --kafka: a librdkafka producer setting; repeatable.")
@click.option("--stream", default=None,
              help="Stream to append to; with --partitions, the base name.")
@click.option("--partitions", type=click.IntRange(min=1), default=None,
              help="Write to STREAM:0 .. STREAM:P-1 by a hash of the key (order per key); "
                   "with --kafka: create the topic with P partitions if it is missing.")
@click.option("--maxlen", type=click.IntRange(min=1), default=None,
              help="Trim each stream to about this many entries (default: no trimming).")
@click.option("--id-field", default="id", show_default=True, help="Field holding the id.")
@click.option("--key-field", default=None, help="Field holding the key (partitions by it).")
@click.option("--time-field", default=None,
              help="Field holding the event time (epoch seconds or ISO 8601).")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Resume from (and record progress in) this file; default: no checkpoint.")
@click.option("--dead-letters", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Dead-letter file, JSON Lines [default: FILE.dead-letters.jsonl].")
@click.option("--batch-size", type=click.IntRange(min=1), default=1_000, show_default=True,
              help="Lines per read and entries per Redis call.")
@click.option("--rate", type=_POSITIVE, default=None,
              help="Most lines per second (default: unlimited).")
@output_options
def produce(
    file: Path,
    url: str,
    kafka: str | None,
    topic: str | None,
    kafka_config: tuple[str, ...],
    stream: str | None,
    partitions: int | None,
    maxlen: int | None,
    id_field: str,
    key_field: str | None,
    time_field: str | None,
    checkpoint: Path | None,
    dead_letters: Path | None,
    batch_size: int,
    rate: float | None,
    quiet: bool,
    as_json: bool,
    log_level: str,
) -> None:
    """Append the records of FILE (JSON Lines) to a Redis stream, with progress.

    Each line becomes an entry with the fields id, event_time, payload (the
    whole object as JSON) and key; `trio-ingest worker` reads them back as
    the same events. Lines that are not valid records go to the dead-letter
    file with their line number and reason.

    With --kafka BOOTSTRAP --topic T each line becomes a message of T: the
    payload as JSON, the key from --key-field, the id in the header `id`.
    """
    from .. import sinks
    from ..sources._files import JsonLines

    output = make_output(quiet, as_json, log_level)
    if kafka is not None:
        if topic is None:
            fail("--kafka needs --topic")
        if stream is not None or maxlen is not None:
            fail("--stream and --maxlen are for Redis; with --kafka use --topic")
    else:
        if topic is not None or kafka_config:
            fail("--topic and -X/--kafka-config need --kafka")
        if stream is None:
            fail("--stream is required (or --kafka BOOTSTRAP --topic T)")
    if not file.exists():
        fail(f"{os.fspath(file)}: no such file")
    if not file.is_file():
        fail(f"{os.fspath(file)}: not a regular file")
    dead_letters = dead_letters or file.with_name(file.name + ".dead-letters.jsonl")
    try:
        source = JsonLines(file, checkpoint=checkpoint, id_field=id_field, key_field=key_field,
                           time_field=time_field, rate=rate, name=file.name)
        # a Redis restart must not dead-letter a batch: retry patiently
        patient = RetryPolicy(max_attempts=30, backoff=ExponentialBackoff(
            initial=0.05, max_delay=2.0, jitter="equal"), deadline=60.0)
        sink: RedisStreamsSink | KafkaSink
        if kafka is not None:
            assert topic is not None
            from ..sinks._kafka import Kafka as KafkaSink

            if partitions is not None:
                _ensure_topic(kafka, topic, partitions)
            sink = KafkaSink(topic, bootstrap_servers=kafka, max_batch=batch_size, retry=patient,
                             **_parse_config(kafka_config))
            target = topic
        else:
            assert stream is not None
            sink = RedisStreamsSink(stream, url=url, maxlen=maxlen, partitions=partitions,
                                    max_batch=batch_size, retry=patient)
            target = stream
        dead = sinks.JsonLines(dead_letters, name="dead_letters")
        pipeline = Pipeline(source, sink=sink, dead_letter=dead, max_batch=batch_size,
                            capacity=max(10_000, 4 * batch_size))
    except ConfigError as exc:
        fail(str(exc))

    err = output.stderr()
    view = None
    if not output.quiet and err.is_terminal:
        view = ProgressView(err, title=f"{file.name} -> {target}",
                            total=file.stat().st_size,
                            completed=lambda _report: source.position, unit="bytes")

    outcome = run_command(output, pipeline, view=view)
    targets = sink.streams() if isinstance(sink, RedisStreamsSink) else [target]
    shown = targets[0] if len(targets) == 1 else f"{targets[0]} .. {targets[-1]}"
    extra = [
        ("entries appended" if kafka is None else "messages acknowledged",
         f"{sink.written:,}", shown),
        ("dead letters", f"{dead.lines:,}", os.fspath(dead_letters)),
    ]
    finish(output, outcome, title=f"trio-ingest produce {file.name}", extra=extra, data={
        "file": os.fspath(file),
        "streams": targets,
        "entries": sink.written,
        "dead_letter_lines": dead.lines,
        "dead_letters": os.fspath(dead_letters),
    })


def _ensure_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create ``topic`` with ``partitions`` partitions unless it exists."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, partitions, 1)], request_timeout=15.0)
    try:
        futures[topic].result(timeout=20.0)
    except KafkaException as exc:
        if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return
        fail(f"could not create topic {topic!r} at {bootstrap}: {exc}")
