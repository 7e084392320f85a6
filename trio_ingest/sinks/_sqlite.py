"""The SQLite sink: idempotent batch writes into one table, from a worker thread."""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import time
from collections.abc import Sequence
from itertools import repeat
from typing import Any, Literal

import anyio

from .._errors import ConfigError, SinkError, TransientError
from .._event import Event
from .._json import NotJsonError, dumps_many, dumps_text, key_text
from ._base import Sink, columns

__all__ = ("SQLite",)

log = logging.getLogger("trio_ingest.sinks.sqlite")

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
#: The columns the sink writes, in order.
COLUMNS = ("id", "key", "event_time", "payload", "ingested_at")
_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
# SQLite's messages for a failure of the environment, not of the data: worth another
# try (splitting the batch to find a bad event would be pointless)
_TRANSIENT = (
    "database is locked",
    "database is busy",
    "database table is locked",
    "database or disk is full",
    "disk I/O error",
)


class SQLite(Sink):
    """Writes events into a SQLite table, idempotently on the event id.

    The table has the columns ``id TEXT PRIMARY KEY``, ``key``, ``event_time
    REAL`` (epoch seconds), ``payload TEXT`` (the payload as JSON) and
    ``ingested_at REAL`` (epoch seconds of the write). Each batch is one
    transaction of ``INSERT OR IGNORE``: an id already stored is skipped, so a
    redelivered event (after a crash or a retried write) never makes a second
    row. The database runs in WAL mode, so readers do not block the writer.
    As the dead-letter sink it stores each :class:`~trio_ingest.DeadLetter`
    record as the payload JSON (``node``, ``error_type``, ``error``,
    ``attempts``, ``time``, ``event``), under the failed event's id.

    The sink owns one connection, used from worker threads one batch at a time
    (``anyio.to_thread.run_sync`` with a capacity limiter of 1), so the event
    loop never waits on the disk; ``workers > 1`` overlaps the rest of the
    pipeline with the writes, the writes themselves are serial (SQLite has one
    writer).

    Errors: ``database is locked`` (another process holds the write lock past
    ``busy_timeout``), a full disk and I/O errors raise
    :class:`~trio_ingest.TransientError`, retried under the retry policy. A
    payload that is not JSON (NaN or infinity anywhere in it, or a type JSON
    has no form for) raises :class:`~trio_ingest.PermanentError` naming the
    event and the field: the runtime then splits the batch and dead-letters
    only that event.

    Args:
        path: The database file (created if missing), or ``":memory:"``.
        table: Table name (letters, digits and ``_``).
        create: Create the table if it does not exist; with ``False`` it must exist.
        synchronous: SQLite's ``PRAGMA synchronous``. ``"FULL"`` (default)
            makes every committed batch survive a power loss, which
            at-least-once delivery needs, since the source commits its offset
            once the write returned. ``"NORMAL"`` is faster and in WAL mode
            still survives a crash of the process, not of the machine.
        busy_timeout: Seconds a write waits for another connection's lock
            before failing with a transient error.
        **options: ``name``, ``retry``, ``workers``, ``max_batch``,
            ``max_wait``, ``breaker``: see :class:`~trio_ingest.Sink`.

    Attributes:
        inserted: Rows this sink inserted (ids already stored are not counted).

    Raises:
        ConfigError: An argument is invalid.
    """

    name = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        table: str,
        *,
        create: bool = True,
        synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = "FULL",
        busy_timeout: float = 5.0,
        **options: Any,
    ) -> None:
        # one transaction (and one fsync) per batch: larger batches amortise both, and
        # the thread hop that waits for the event loop to release the GIL
        options.setdefault("max_batch", 1_000)
        super().__init__(**options)
        if not isinstance(path, str | os.PathLike) or not os.fspath(path):
            raise ConfigError(f"'path' must be a file path: {path!r}")
        if not isinstance(table, str) or not _IDENTIFIER.match(table):
            raise ConfigError(f"'table' must be letters, digits and '_': {table!r}")
        if synchronous not in _SYNCHRONOUS:
            raise ConfigError(f"'synchronous' must be one of {', '.join(_SYNCHRONOUS)}: "
                              f"{synchronous!r}")
        if not busy_timeout >= 0:
            raise ConfigError(f"'busy_timeout' must be >= 0: {busy_timeout!r}")
        self.path = os.fspath(path)
        self.table = table
        self.create = bool(create)
        self.synchronous = synchronous
        self.busy_timeout = float(busy_timeout)
        self.inserted = 0
        self._conn: sqlite3.Connection | None = None
        self._limiter: anyio.CapacityLimiter | None = None
        self._insert = (
            f'INSERT OR IGNORE INTO "{table}" ({", ".join(COLUMNS)}) VALUES (?, ?, ?, ?, ?)'
        )

    @property
    def span_attributes(self) -> dict[str, str]:
        """OpenTelemetry semantic-convention attributes of this sink's write spans."""
        return {"db.system": "sqlite", "db.collection.name": self.table}

    def __repr__(self) -> str:
        return f"<SQLite {self.name!r} {self.path!r} table={self.table!r}>"

    async def open(self) -> None:
        """Connect, switch to WAL mode and create (or check) the table.

        Raises:
            SinkError: The database cannot be opened or written (missing
                directory, no permission, not a database file), or the table
                is missing (``create=False``) or lacks the sink's columns.
        """
        self._limiter = anyio.CapacityLimiter(1)
        await anyio.to_thread.run_sync(self._open_sync, limiter=self._limiter)

    def _open_sync(self) -> None:
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,
                isolation_level=None,  # transactions are explicit: one per batch
                check_same_thread=False,  # one thread at a time, under the limiter
            )
        except sqlite3.Error as exc:
            raise SinkError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
        try:
            conn.execute("PRAGMA journal_mode=WAL").fetchone()
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            if self.create:
                conn.execute(
                    f'CREATE TABLE IF NOT EXISTS "{self.table}" ('
                    "id TEXT PRIMARY KEY NOT NULL, key, event_time REAL, "
                    "payload TEXT, ingested_at REAL)"
                )
            columns = {row[1] for row in conn.execute(f'PRAGMA table_info("{self.table}")')}
        except sqlite3.Error as exc:
            conn.close()
            raise SinkError(f"cannot write SQLite database {self.path!r}: {exc}") from exc
        if not columns:
            conn.close()
            raise SinkError(
                f"table {self.table!r} does not exist in {self.path!r} (create=False)"
            )
        missing = [c for c in COLUMNS if c not in columns]
        if missing:
            conn.close()
            raise SinkError(
                f"table {self.table!r} in {self.path!r} lacks the column(s) "
                f"{', '.join(missing)}; the SQLite sink writes {', '.join(COLUMNS)}"
            )
        self._conn = conn

    async def write_batch(self, events: Sequence[Event]) -> None:
        """Insert ``events`` in one transaction; ids already stored are skipped.

        Raises:
            TransientError: The database is locked by another connection, the
                disk is full or failed.
            PermanentError: A payload is not JSON (names the event and the field).
            sqlite3.Error: Any other database failure (not retried).
        """
        if self._limiter is None:
            raise SinkError(f"{self.name!r}: write_batch() before open()")
        # add after the await: ``self.inserted += await ...`` would read it before, and
        # concurrent workers would overwrite each other's counts
        inserted = await anyio.to_thread.run_sync(
            self._write_sync, events, limiter=self._limiter, abandon_on_cancel=True
        )
        self.inserted += inserted

    def _write_sync(self, events: Sequence[Event]) -> int:
        conn = self._conn
        if conn is None:
            raise SinkError(f"{self.name!r} is closed")
        cols = columns(events)
        try:
            payloads = dumps_many(cols.payloads, text=True)
        except NotJsonError:
            for ident, payload in zip(cols.ids, cols.payloads, strict=True):
                dumps_text(payload, what=f"payload of event {ident!r}")  # raises, naming it
            raise
        keys = [k if k.__class__ in _SCALARS else _column_key(k) for k in cols.keys]
        rows = zip(cols.ids, keys, cols.event_times, payloads, repeat(time.time()))
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                changed = conn.executemany(self._insert, rows).rowcount
                conn.execute("COMMIT")
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            if any(text in str(exc) for text in _TRANSIENT):
                raise TransientError(f"SQLite {self.path!r}: {exc}") from exc
            raise
        return max(changed, 0)

    async def aclose(self) -> None:
        """Close the connection (after the write under way, if any); idempotent."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._limiter is not None:
            await anyio.to_thread.run_sync(conn.close, limiter=self._limiter)
        else:
            conn.close()


_SCALARS = frozenset({type(None), str, int, float, bytes})


def _column_key(key: Any) -> Any:
    """The event key as SQLite stores it: scalars as they are, anything else as JSON."""
    if isinstance(key, str | int | float | bytes):
        return key
    return key_text(key)
