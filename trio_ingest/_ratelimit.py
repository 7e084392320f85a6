"""A logging filter against failure storms: a few records per key, then a count.

Values layer: the runtime puts :data:`RUNTIME_RATE_LIMIT` on its logger, and
``observe`` exports and configures the same filter.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ._validators import check, positive, positive_int

__all__ = ("RUNTIME_RATE_LIMIT", "RateLimitFilter")


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
        check(positive_int, "burst", burst)
        check(positive, "interval", interval)
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
