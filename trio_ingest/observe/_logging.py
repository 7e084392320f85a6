"""Logs: text for people, JSON for machines, and a rate limit against failure storms.

The runtime logs retries and dead letters with structured fields (``extra=``:
``node``, ``event_id``, ``attempt``, ``error``, ``error_type``); the JSON
formatter puts them at the top level of each line. A :class:`RateLimitFilter`
sits on the runtime's logger from the start, so a sink failing on every event
writes a few lines and a count, not a million lines.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from .._errors import ConfigError

__all__ = (
    "RUNTIME_RATE_LIMIT",
    "JsonFormatter",
    "RateLimitFilter",
    "TextFormatter",
    "configure_logging",
)

# LogRecord attributes every record has: everything else came in through ``extra=``.
_STANDARD = frozenset(
    logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None).__dict__
) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, then every ``extra=`` field (``node``, ``event_id``, ``attempt``,
    ``error`` ...) and ``exception`` (the formatted traceback) when there is one.
    """

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ).replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        data.update(
            (key, value) for key, value in record.__dict__.items()
            if key not in _STANDARD and not key.startswith("_")
        )
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, default=_fallback, ensure_ascii=False)


def _fallback(value: object) -> str:
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    return repr(value)


class TextFormatter(logging.Formatter):
    """``2025-01-31 12:00:00,123 WARNING trio_ingest.runtime: db: attempt 1 failed ...``"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")


class RateLimitFilter(logging.Filter):
    """Let at most ``burst`` records per key through every ``interval`` seconds.

    The key is (logger name, ``node`` extra, message template), so each node's
    retries are limited apart from its dead letters and from other nodes.
    Records over the limit are counted and dropped; when that key's window
    ends (at its next record, at any record after the window, or at
    :meth:`flush`, which the runtime calls when a run ends), one record says
    ``"<node>: suppressed K similar messages in the last Ns (the last: ...)"``
    with ``suppressed=K`` as a field. Add it to a logger (``addFilter``): the
    summary goes out through that logger.

    Args:
        burst: Records let through per key and window.
        interval: Window length in seconds.
        clock: Monotonic seconds (tests pass a fake one).

    Raises:
        ConfigError: ``burst`` < 1 or ``interval`` <= 0.
    """

    MAX_KEYS = 1000

    def __init__(
        self,
        burst: int = 10,
        interval: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.configure(burst, interval)
        self._clock = clock
        self._lock = threading.Lock()
        # key -> [window start, records let through, records suppressed, a sample record]
        self._windows: dict[tuple[str, Any, Any], list[Any]] = {}
        self._pending = 0  # windows holding suppressed records
        self._next_sweep = 0.0

    def configure(self, burst: int, interval: float) -> None:
        """Change the limit (keeps the counts of the windows under way).

        Raises:
            ConfigError: ``burst`` < 1 or ``interval`` <= 0.
        """
        if not isinstance(burst, int) or isinstance(burst, bool) or burst < 1:
            raise ConfigError(f"'burst' must be an int >= 1: {burst!r}")
        if not (isinstance(interval, int | float) and interval > 0):
            raise ConfigError(f"'interval' must be > 0: {interval!r}")
        self.burst = burst
        self.interval = float(interval)

    def filter(self, record: logging.LogRecord) -> bool:
        if hasattr(record, "suppressed"):
            return True  # our own summary
        key = (record.name, getattr(record, "node", None), record.msg)
        now = self._clock()
        due: list[list[Any]] = []
        with self._lock:
            window = self._windows.get(key)
            if window is not None and now - window[0] >= self.interval:
                if window[2]:
                    due.append(window)
                    self._pending -= 1
                window = None
            if window is None:
                if len(self._windows) >= self.MAX_KEYS:
                    self._forget_idle(now, due)
                self._windows[key] = [now, 1, 0, record]
                allowed = True
            elif window[1] < self.burst:
                window[1] += 1
                allowed = True
            else:
                if not window[2]:
                    self._pending += 1
                window[2] += 1
                window[3] = record
                allowed = False
            if self._pending and now >= self._next_sweep:
                self._next_sweep = now + 1.0
                self._take_expired(now, due)
        for window in due:
            self._summarise(window, now)
        return allowed

    def flush(self) -> None:
        """Emit the summaries of every window that suppressed something; start afresh."""
        now = self._clock()
        with self._lock:
            due = [window for window in self._windows.values() if window[2]]
            self._windows.clear()
            self._pending = 0
        for window in due:
            self._summarise(window, now)

    def _take_expired(self, now: float, due: list[list[Any]]) -> None:
        for key, window in list(self._windows.items()):
            if window[2] and now - window[0] >= self.interval:
                due.append(window)
                self._pending -= 1
                del self._windows[key]

    def _forget_idle(self, now: float, due: list[list[Any]]) -> None:
        self._take_expired(now, due)
        for key, window in list(self._windows.items()):
            if now - window[0] >= self.interval:
                del self._windows[key]
        if len(self._windows) >= self.MAX_KEYS:  # a key per message: templates are not fixed
            due.extend(window for window in self._windows.values() if window[2])
            self._windows.clear()
            self._pending = 0

    def _summarise(self, window: list[Any], now: float) -> None:
        start, _let, count, sample = window
        node = getattr(sample, "node", None)
        logger = logging.getLogger(sample.name)
        summary = logger.makeRecord(
            sample.name, sample.levelno, sample.pathname, sample.lineno,
            "%s: suppressed %d similar messages in the last %.0fs (the last: %s)",
            (node if node is not None else sample.name, count, max(now - start, 0.0),
             _message(sample)),
            None,
            extra={"node": node, "suppressed": count},
        )
        logger.handle(summary)


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # noqa: BLE001 -- a bad format string must not break the summary
        return str(record.msg)


#: The filter on the ``trio_ingest.runtime`` logger (10 records per key per minute).
RUNTIME_RATE_LIMIT = RateLimitFilter()

_HANDLER_MARK = "_trio_ingest_handler"


def configure_logging(
    format: str = "text",
    level: int | str = "INFO",
    *,
    stream: IO[str] | None = None,
    logger: str = "trio_ingest",
    rate_limit: tuple[int, float] | None = (10, 60.0),
) -> logging.Handler:
    """Send trio_ingest's logs to ``stream`` as text (for people) or JSON lines.

    Replaces the handler an earlier call installed (calling it twice does not
    double the lines) and stops propagation to the root logger, so the lines
    are not printed twice by an application's own handler; pass ``logger=""``
    to configure the root logger instead (the CLI may).

    Args:
        format: ``"text"`` or ``"json"``.
        level: A level name or number.
        stream: Where to write; standard error by default.
        logger: Name of the logger to configure.
        rate_limit: ``(burst, interval)`` for the runtime's retry and
            dead-letter messages (see :class:`RateLimitFilter`), or None to
            let every message through.

    Returns:
        The handler installed.

    Raises:
        ConfigError: An unknown format or level.
    """
    if format not in ("text", "json"):
        raise ConfigError(f"'format' must be 'text' or 'json': {format!r}")
    if isinstance(level, str):
        resolved = logging.getLevelName(level.upper())
        if not isinstance(resolved, int):
            raise ConfigError(f"'level' must be a logging level name or number: {level!r}")
        level = resolved
    elif not isinstance(level, int) or isinstance(level, bool):
        raise ConfigError(f"'level' must be a logging level name or number: {level!r}")
    target = logging.getLogger(logger)
    for old in list(target.handlers):
        if getattr(old, _HANDLER_MARK, False):
            target.removeHandler(old)
            old.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if format == "json" else TextFormatter())
    setattr(handler, _HANDLER_MARK, True)
    target.addHandler(handler)
    target.setLevel(level)
    if logger:
        target.propagate = False
    runtime = logging.getLogger("trio_ingest.runtime")
    if rate_limit is None:
        runtime.removeFilter(RUNTIME_RATE_LIMIT)
    else:
        burst, interval = rate_limit
        RUNTIME_RATE_LIMIT.configure(burst, interval)
        if RUNTIME_RATE_LIMIT not in runtime.filters:
            runtime.addFilter(RUNTIME_RATE_LIMIT)
    return handler
