"""Logs: text for people, JSON for machines, and a rate limit against failure storms.

The runtime logs retries and dead letters with structured fields (``extra=``:
``node``, ``event_id``, ``attempt``, ``error``, ``error_type``); the JSON
formatter puts them at the top level of each line. A :class:`RateLimitFilter`
(:data:`RUNTIME_RATE_LIMIT`) sits on the runtime's logger from the start, so a
sink failing on every event writes a few lines and a count, not a million lines;
``configure_logging(rate_limit=None)`` takes it off.

Two pitfalls when an application configures logging itself:

* ``logging.config.dictConfig`` disables every logger that exists already unless
  the config says ``"disable_existing_loggers": False``; trio_ingest's loggers
  exist from import, so they go silent.
* structlog's ``ProcessorFormatter`` drops ``extra=`` fields unless its
  ``foreign_pre_chain`` has ``structlog.stdlib.ExtraAdder()``.

The observability guide (``docs/howto/observability.md``) shows both configurations;
``tests/test_observe_logging.py`` runs them.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import IO, Any

from .._errors import ConfigError
from .._ratelimit import RUNTIME_RATE_LIMIT, RateLimitFilter

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



_HANDLER_MARK = "_trio_ingest_handler"


def configure_logging(
    format: str = "text",
    level: int | str = "INFO",
    *,
    stream: IO[str] | None = None,
    logger: str = "trio_ingest",
    rate_limit: tuple[int, float] | None = (10, 60.0),
    propagate: bool = True,
) -> logging.Handler | None:
    """Set trio_ingest's log level and rate limit, and give its lines a handler if needed.

    By default trio_ingest's records propagate into the application's logging, so
    they come out through its handlers, in its format. A handler of our own (text
    for people, JSON lines for machines) is added only where nothing else would
    print the lines: when ``stream`` is given, when the root logger has no
    handler yet (as ``logging.basicConfig`` decides), when ``propagate=False``,
    or on the root logger itself (``logger=""``: what the CLI does, as it owns
    the process). Calling it again replaces the handler an earlier call added.

    Args:
        format: ``"text"`` or ``"json"``: the handler's format, if one is added.
        level: A level name or number, set on ``logger``.
        stream: Write our own lines there (standard error otherwise).
        logger: Name of the logger to configure (``""``: the root logger).
        rate_limit: ``(burst, interval)`` for the runtime's retry and
            dead-letter messages (see :class:`RateLimitFilter`), or None for
            no rate limit: the filter comes off the runtime's logger (after
            emitting the summaries it holds back) and nothing else changes.
        propagate: Whether ``logger``'s records also reach its parents'
            handlers (the application's). False: only our handler prints them.

    Returns:
        The handler added, or None when the lines go to the application's handlers.

    Raises:
        ConfigError: An unknown format or level, or a bad rate limit.
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
    if rate_limit is not None:
        burst, interval = rate_limit
        RUNTIME_RATE_LIMIT.configure(burst, interval)  # validates before anything changes
    target = logging.getLogger(logger)
    for old in list(target.handlers):
        if getattr(old, _HANDLER_MARK, False):
            target.removeHandler(old)
            old.close()
    root_handled = any(not getattr(h, _HANDLER_MARK, False) for h in logging.getLogger().handlers)
    handler: logging.Handler | None = None
    if stream is not None or not logger or not propagate or not root_handled:
        handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
        handler.setFormatter(JsonFormatter() if format == "json" else TextFormatter())
        setattr(handler, _HANDLER_MARK, True)
        target.addHandler(handler)
    target.setLevel(level)
    if logger:
        target.propagate = propagate
    runtime = logging.getLogger("trio_ingest.runtime")
    if rate_limit is None:
        if RUNTIME_RATE_LIMIT in runtime.filters:
            RUNTIME_RATE_LIMIT.flush()  # what it held back is counted, not lost
            runtime.removeFilter(RUNTIME_RATE_LIMIT)
    elif RUNTIME_RATE_LIMIT not in runtime.filters:
        runtime.addFilter(RUNTIME_RATE_LIMIT)
    return handler
