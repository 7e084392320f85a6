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
