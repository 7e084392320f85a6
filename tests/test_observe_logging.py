"""Structured logs: the JSON formatter, configure_logging, and the rate limit on failure storms."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

import trio_ingest as ti
from trio_ingest.observe._logging import RUNTIME_RATE_LIMIT

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging changes global state: put every touched logger back."""
    names = ("trio_ingest", "trio_ingest.runtime", "trio_ingest.test", "")
    saved = {
        n: (list(logging.getLogger(n).handlers), logging.getLogger(n).level,
            logging.getLogger(n).propagate, list(logging.getLogger(n).filters))
        for n in names
    }
    burst, interval = RUNTIME_RATE_LIMIT.burst, RUNTIME_RATE_LIMIT.interval
    RUNTIME_RATE_LIMIT.flush()
    yield
    RUNTIME_RATE_LIMIT.flush()
    RUNTIME_RATE_LIMIT.configure(burst, interval)
    for n, (handlers, level, propagate, filters) in saved.items():
        logger = logging.getLogger(n)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate
        logger.filters[:] = filters


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line]


def test_json_formatter_fields_and_extras() -> None:
    stream = io.StringIO()
    ti.observe.configure_logging("json", "DEBUG", stream=stream)
    log = logging.getLogger("trio_ingest.test")
    log.warning("%s: attempt %d failed", "db", 2,
                extra={"node": "db", "event_id": "e-1", "attempt": 2, "error": ValueError("x")})
    try:
        raise KeyError("boom")
    except KeyError:
        log.exception("crashed")
    first, second = json_lines(stream)
    assert first["level"] == "WARNING"
    assert first["logger"] == "trio_ingest.test"
    assert first["message"] == "db: attempt 2 failed"
    assert first["node"] == "db" and first["event_id"] == "e-1" and first["attempt"] == 2
    assert first["error"] == "ValueError: x"
    assert str(first["ts"]).endswith("Z") and "T" in str(first["ts"])
    assert set(first) == {"ts", "level", "logger", "message", "node", "event_id", "attempt",
                          "error"}
    assert second["level"] == "ERROR" and "KeyError: 'boom'" in str(second["exception"])


def test_text_format_and_reconfiguring() -> None:
    stream = io.StringIO()
    ti.observe.configure_logging(stream=stream)
    handler = ti.observe.configure_logging("text", logging.INFO, stream=stream)
    logging.getLogger("trio_ingest.test").info("hello %s", "there")
    logging.getLogger("trio_ingest.test").debug("not shown")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1  # one handler, though configured twice
    assert lines[0].endswith(" INFO trio_ingest.test: hello there")
    assert handler in logging.getLogger("trio_ingest").handlers
    assert logging.getLogger("trio_ingest").propagate is True  # into the application by default


def test_configure_logging_rejects_bad_values() -> None:
    with pytest.raises(ti.ConfigError, match="'format' must be 'text' or 'json': 'xml'"):
        ti.observe.configure_logging("xml")
    with pytest.raises(ti.ConfigError, match="'level' must be a logging level"):
        ti.observe.configure_logging("text", "LOUD")
    with pytest.raises(ti.ConfigError, match="'burst' must be >= 1: 0"):
        ti.observe.RateLimitFilter(burst=0)
    with pytest.raises(ti.ConfigError, match="'interval' must be > 0: 0"):
        ti.observe.RateLimitFilter(interval=0)


def test_rate_limit_lets_a_burst_through_then_counts() -> None:
    clock = FakeClock()
    stream = io.StringIO()
    ti.observe.configure_logging("json", stream=stream)
    log = logging.getLogger("trio_ingest.test")
    limit = ti.observe.RateLimitFilter(burst=3, interval=10.0, clock=clock)
    log.addFilter(limit)
    for i in range(100):
        log.warning("%s: failed on %d", "db", i, extra={"node": "db"})
    for i in range(2):
        log.warning("%s: failed on %d", "cache", i, extra={"node": "cache"})  # another node
    lines = json_lines(stream)
    assert [line["message"] for line in lines] == [
        "db: failed on 0", "db: failed on 1", "db: failed on 2",
        "cache: failed on 0", "cache: failed on 1",
    ]
    clock.now += 10.0  # the window ends: the next record brings the summary first
    log.warning("%s: failed on %d", "db", 100, extra={"node": "db"})
    summary, record = json_lines(stream)[5:]
    assert summary["suppressed"] == 97 and summary["node"] == "db"
    assert summary["message"] == (
        "db: suppressed 97 similar messages in the last 10s (the last: db: failed on 99)"
    )
    assert record["message"] == "db: failed on 100"
    for i in range(10):
        log.warning("%s: failed on %d", "db", i, extra={"node": "db"})
    limit.flush()  # e.g. the end of a run
    last = json_lines(stream)[-1]
    assert last["suppressed"] == 8
    limit.flush()
    assert json_lines(stream)[-1] == last  # nothing more to say


def test_rate_limit_summarises_a_quiet_key_at_any_later_record() -> None:
    clock = FakeClock()
    stream = io.StringIO()
    ti.observe.configure_logging("json", stream=stream)
    log = logging.getLogger("trio_ingest.test")
    log.addFilter(ti.observe.RateLimitFilter(burst=1, interval=5.0, clock=clock))
    for _ in range(4):
        log.warning("storm", extra={"node": "a"})
    clock.now += 6.0
    log.warning("something else", extra={"node": "b"})
    messages = [line["message"] for line in json_lines(stream)]
    assert messages[0] == "storm"
    assert "a: suppressed 3 similar messages" in messages[1]
    assert messages[2] == "something else"


async def test_runtime_logs_are_structured_and_rate_limited() -> None:
    stream = io.StringIO()
    ti.observe.configure_logging("json", "INFO", stream=stream, rate_limit=(5, 60.0))
    poison = {str(i) for i in range(0, 1_000, 2)}  # 500 failing events
    retry = ti.RetryPolicy(max_attempts=2, backoff=ti.ConstantBackoff(0.0),
                           retry_on=(ti.TransientError,))
    sink = ti.testing.PoisonSink(poison, ti.sinks.Memory(), retry=retry)
    pipeline = ti.Pipeline(ti.sources.synthetic(1_000, seed=1), sink=sink,
                           dead_letter=ti.sinks.Memory(), max_batch=50)
    report = await pipeline.run()
    assert report.dead_lettered == 500
    lines = json_lines(stream)
    dead = [line for line in lines if str(line["message"]).startswith("poison: dead-lettering")]
    assert len(dead) == 5  # the burst; the other 495 are counted
    first = dead[0]
    assert first["node"] == "poison" and first["attempt"] == 1
    assert first["event_id"] in poison
    assert first["error_type"] == "PermanentError" and "poison event" in str(first["error"])
    summaries = [line for line in lines if "suppressed" in line]
    assert sum(int(str(s["suppressed"])) for s in summaries) == 495
    assert len(lines) < 20


async def test_runtime_retry_warnings_carry_the_attempt() -> None:
    stream = io.StringIO()
    ti.observe.configure_logging("json", stream=stream)
    sink = ti.testing.FlakySink(ti.sinks.Memory(), fail_first=2)
    retry = ti.RetryPolicy(max_attempts=5, backoff=ti.ConstantBackoff(0.0))
    pipeline = ti.Pipeline(ti.sources.from_iterable(range(3)), sink=sink, retry=retry)
    await pipeline.run()
    retries = [line for line in json_lines(stream) if "retrying" in str(line["message"])]
    assert [line["attempt"] for line in retries] == [1, 2]
    assert all(line["node"] == retries[0]["node"] and line["error_type"] for line in retries)


class Collect(logging.Handler):
    """An application's own handler: keeps what reaches it."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_lines_propagate_into_the_application_by_default() -> None:
    app = Collect()
    logging.getLogger().addHandler(app)
    assert ti.observe.configure_logging("json", "INFO") is None  # the application prints them
    logging.getLogger("trio_ingest.test").info("hello", extra={"node": "n"})
    assert [r.getMessage() for r in app.records] == ["hello"]
    assert app.records[0].node == "n"  # type: ignore[attr-defined]
    assert not any(getattr(h, "_trio_ingest_handler", False)
                   for h in logging.getLogger("trio_ingest").handlers)
    # the CLI owns the process: a JSON handler on the root logger
    stream = io.StringIO()
    handler = ti.observe.configure_logging("json", "INFO", stream=stream, logger="")
    assert handler in logging.getLogger().handlers
    logging.getLogger("trio_ingest.test").info("from the cli")
    assert json_lines(stream)[-1]["message"] == "from the cli"
    # an application that wants only our lines, apart from its own
    app.records.clear()
    own = io.StringIO()
    ti.observe.configure_logging("json", "INFO", stream=own, propagate=False)
    logging.getLogger("trio_ingest.test").info("apart")
    assert app.records == [] and json_lines(own)[-1]["message"] == "apart"


def test_no_root_handler_means_our_own_handler() -> None:
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers[:] = []
    try:
        handler = ti.observe.configure_logging("text", "INFO")
        assert handler is not None and handler in logging.getLogger("trio_ingest").handlers
    finally:
        root.handlers[:] = saved


def test_rate_limit_none_turns_it_off_without_side_effects() -> None:
    runtime = logging.getLogger("trio_ingest.runtime")
    assert ti.observe.RUNTIME_RATE_LIMIT is RUNTIME_RATE_LIMIT
    assert RUNTIME_RATE_LIMIT in runtime.filters  # on from the start
    stream = io.StringIO()
    ti.observe.configure_logging("json", stream=stream, rate_limit=(1, 60.0))
    for i in range(5):
        runtime.warning("db: attempt %d failed", i, extra={"node": "db"})
    assert len(json_lines(stream)) == 1
    level, handlers = logging.getLogger("trio_ingest").level, logging.getLogger(
        "trio_ingest").handlers[:]
    assert ti.observe.configure_logging("json", "INFO", stream=stream, rate_limit=None)
    # what it held back is reported, not lost, and the filter is off
    summary = json_lines(stream)[-1]
    assert summary["suppressed"] == 4
    assert RUNTIME_RATE_LIMIT not in runtime.filters
    for i in range(5):
        runtime.warning("db: attempt %d failed", i, extra={"node": "db"})
    assert len(json_lines(stream)) == 2 + 5
    assert logging.getLogger("trio_ingest").level == level
    assert len(logging.getLogger("trio_ingest").handlers) == len(handlers)
    assert runtime.filters == []  # nothing else was touched
    ti.observe.configure_logging("json", stream=stream)  # back on
    assert RUNTIME_RATE_LIMIT in runtime.filters
    # an application can put the exported filter on its own handler instead
    mine = ti.observe.RateLimitFilter(burst=2, interval=60.0)
    app = Collect()
    app.addFilter(mine)
    for i in range(5):
        app.handle(runtime.makeRecord("trio_ingest.runtime", logging.WARNING, "x", 1,
                                      "db: attempt %d failed", (i,), None, extra={"node": "db"}))
    assert len(app.records) == 2


def test_dict_config_must_keep_existing_loggers() -> None:
    import logging.config

    stream = io.StringIO()
    base = {
        "version": 1,
        "formatters": {"json": {"()": "trio_ingest.observe.JsonFormatter"}},
        "handlers": {"out": {"class": "logging.StreamHandler", "formatter": "json",
                             "stream": stream}},
        "root": {"handlers": ["out"], "level": "INFO"},
    }
    runtime = logging.getLogger("trio_ingest.runtime")
    try:
        logging.config.dictConfig(base)  # the pitfall: existing loggers are disabled
        runtime.warning("lost")
        assert stream.getvalue() == "" and runtime.disabled
        # the configuration of the observability guide
        logging.config.dictConfig({**base, "disable_existing_loggers": False})
        runtime.warning("kept", extra={"node": "db"})
        (line,) = json_lines(stream)
        assert line["message"] == "kept" and line["node"] == "db"
    finally:
        runtime.disabled = False


def test_structlog_recipe_keeps_the_extra_fields() -> None:
    structlog = pytest.importorskip("structlog", reason="the structlog recipe needs structlog")

    stream = io.StringIO()

    def handler_with(pre_chain: list[Any]) -> logging.Handler:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(structlog.stdlib.ProcessorFormatter(
            processor=structlog.processors.JSONRenderer(),
            foreign_pre_chain=pre_chain,
        ))
        return handler

    root = logging.getLogger()
    runtime = logging.getLogger("trio_ingest.runtime")
    without = handler_with([structlog.stdlib.add_log_level])
    root.addHandler(without)
    try:
        runtime.warning("retrying", extra={"node": "db", "attempt": 2})
    finally:
        root.removeHandler(without)
    assert "node" not in json_lines(stream)[-1]  # extra= fields are dropped
    # the observability guide's recipe: ExtraAdder puts them in the event dict
    recipe = handler_with([structlog.stdlib.add_log_level, structlog.stdlib.ExtraAdder()])
    root.addHandler(recipe)
    try:
        runtime.warning("retrying", extra={"node": "db", "attempt": 2})
    finally:
        root.removeHandler(recipe)
    line = json_lines(stream)[-1]
    assert line["event"] == "retrying" and line["node"] == "db" and line["attempt"] == 2
    assert line["level"] == "warning"
