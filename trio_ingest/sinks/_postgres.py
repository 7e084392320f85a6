"""PostgreSQL sink: COPY each batch into a staging table, then INSERT ... ON CONFLICT DO NOTHING.

psycopg 3's async API is asyncio-only, so the sink calls the sync API in a
worker thread (``anyio.to_thread.run_sync`` with a capacity limiter), one batch
per call: the thread hop is amortised over the batch and Trio stays the loop.

One batch is one transaction on a pooled connection::

    COPY pg_temp.<staging> FROM STDIN (FORMAT BINARY)      -- the batch, as text + float8
    INSERT INTO <table> (...) SELECT ... FROM <staging>     -- casts happen here
        ORDER BY id ON CONFLICT (id) DO NOTHING
    COMMIT                                                  -- staging is ON COMMIT DELETE ROWS

Duplicate ids (inside a batch, across batches, across runs) never make a second
row. Casting in the ``INSERT ... SELECT`` (not in the client) means a value that
does not fit its column fails on the server with the server's message; rows are
inserted in id order so two workers never deadlock on each other's keys.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import anyio.to_thread

from .._errors import ConfigError, NotJsonError, PermanentError, SinkError, TransientError
from .._event import DeadLetter, Event
from .._json import dumps_many, dumps_text, key_text
from ._base import Sink, columns

try:
    import psycopg
    from psycopg import sql
    from psycopg_pool import ConnectionPool
except ImportError as _missing:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "sinks.Postgres needs psycopg 3 and psycopg-pool: pip install 'trio-ingest[postgres]'"
    ) from _missing

__all__ = ("ENV_DSN", "Postgres")

log = logging.getLogger("trio_ingest.sinks.postgres")

#: Environment variable read when no ``dsn`` is given.
ENV_DSN = "TRIO_INGEST_PG_DSN"
#: The sink's own defaults for ``max_batch``, ``max_wait`` and ``workers``.
DEFAULT_MAX_BATCH = 5_000
DEFAULT_MAX_WAIT = 0.1
DEFAULT_WORKERS = 2

#: The columns the sink always writes, with their types in a created table.
_CORE = (("id", "text"), ("key", "text"), ("event_time", "timestamptz"), ("payload", "jsonb"))
_RESERVED = frozenset({"id", "key", "event_time", "payload", "ingested_at"})
#: A column type as SQL: names, spaces, digits, commas, parentheses, brackets.
_TYPE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_ ,()\[\]\"]*$")


def _split_table(table: object) -> tuple[str, ...]:
    parts = tuple(table.split(".")) if isinstance(table, str) else ()
    if not 1 <= len(parts) <= 2 or not all(parts):
        raise ConfigError(
            f"'table' must be a table name like 'events' or 'schema.events': {table!r}"
        )
    return parts


def _check_columns(columns: object) -> dict[str, str]:
    if columns is None:
        return {}
    if not isinstance(columns, Mapping):
        raise ConfigError(f"'columns' must map payload field -> column type: {columns!r}")
    checked: dict[str, str] = {}
    for field, type_ in columns.items():
        if not isinstance(field, str) or not field:
            raise ConfigError(f"'columns' keys must be non-empty field names: {field!r}")
        if field in _RESERVED:
            raise ConfigError(
                f"'columns' cannot map {field!r}: the sink writes that column itself"
            )
        if not isinstance(type_, str) or not _TYPE_RE.match(type_.strip()):
            raise ConfigError(
                f"'columns' type of {field!r} must be a PostgreSQL type like 'double precision': "
                f"{type_!r}"
            )
        checked[field] = type_.strip()
    return checked


def _text(value: Any) -> str | None:
    """A payload value as the text the server casts into a typed column."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict | list | tuple):
        return dumps_text(value)
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)


def _lenient(value: Any) -> Any:
    """``value`` made storable whatever it holds: for dead-letter records, which must not fail.

    Non-finite floats and unknown objects become strings, NUL characters (which
    PostgreSQL text cannot hold) become the four characters ``\\x00``.
    """
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return value.replace("\x00", "\\x00")
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Mapping):
        return {_lenient(str(k)): _lenient(v) for k, v in value.items()}
    to_dict = getattr(value, "to_dict", None)  # before sequences: an Event is a tuple too
    if callable(to_dict):
        return _lenient(to_dict())
    if isinstance(value, list | tuple | set | frozenset):
        return [_lenient(v) for v in value]
    return _lenient(repr(value))


def _classify(exc: BaseException) -> SinkError:
    """A psycopg failure as the runtime's kind: retry it, or dead-letter its events."""
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        # lost connection, server shutdown, pool timeout, deadlock, statement timeout
        return TransientError(f"PostgreSQL connection failed: {type(exc).__name__}: {exc}")
    if isinstance(exc, psycopg.Error):
        state = f" [{exc.sqlstate}]" if exc.sqlstate else ""
        return PermanentError(f"PostgreSQL rejected the batch{state}: {exc}")
    return PermanentError(f"{type(exc).__name__}: {exc}")


class Postgres(Sink):
    """Writes events into a PostgreSQL table, idempotently on ``event.id``.

    Each batch is COPYed (binary by default) into a temporary staging table and
    moved into the target with ``INSERT ... SELECT ... ON CONFLICT (id) DO
    NOTHING`` in one transaction: an id already stored is skipped, so
    redeliveries after a crash never double a row.

    Default table (created when missing, with ``create_table=True``)::

        id          text PRIMARY KEY
        key         text                     -- event.key (non-str keys as JSON)
        event_time  timestamptz              -- event.event_time (epoch seconds, to µs)
        payload     jsonb                    -- event.payload (unless store_payload=False)
        ingested_at timestamptz DEFAULT now()
        <field>     <type>                   -- one per ``columns`` entry

    ``event_time`` is a ``timestamptz`` so the table is queryable by time as
    is; ``extract(epoch FROM event_time)`` gives the float back. Event headers
    are not stored. Payloads are stored as JSON (the one encoder of every
    sink); an object with a ``to_dict()`` method becomes that dict, so the sink
    also serves as a dead-letter sink (the payload is then the
    :class:`~trio_ingest.DeadLetter` record: node, error type and message,
    attempts, time and the event, with what PostgreSQL cannot hold made text).
    A payload holding NaN or infinity is a data error
    (:class:`~trio_ingest.NotJsonError`, naming the field): dead-lettered.

    Batching: COPY pays off only with large batches, so the sink sets its own
    defaults: ``max_batch=5000``, ``max_wait=0.1`` (a batch is written once it
    is full or 0.1 s after its first event) and ``workers=2`` (one batch is
    built while the server takes the other). Pass them to override.

    Errors: a lost connection (server restart, ``pg_terminate_backend``,
    pool timeout, deadlock, statement timeout: ``psycopg.OperationalError``)
    raises :class:`~trio_ingest.TransientError`, retried on a fresh connection
    under the sink's retry policy; the server rejecting data (a constraint,
    a value that does not cast, invalid JSON: ``IntegrityError``, ``DataError``
    and any other server error) raises :class:`~trio_ingest.PermanentError`
    carrying the server's message, and the runtime splits the batch so that only
    the offending events are dead-lettered.

    Cancellation: the thread is never abandoned. If the task is cancelled while
    a batch is being written, the cancellation waits for the thread: the
    transaction either commits or rolls back, then ``Cancelled`` is raised. A
    committed batch is then *not* acknowledged (the runtime never saw
    ``write_batch`` return), so the source offset stays behind it and the next
    run delivers it again; ``ON CONFLICT DO NOTHING`` makes that harmless. Set a
    server-side ``statement_timeout`` (``options='-c statement_timeout=30s'`` in
    the DSN) to bound how long a stuck statement can delay a cancellation.

    Args:
        dsn: libpq connection string or URL; defaults to the
            ``TRIO_INGEST_PG_DSN`` environment variable.
        table: Target table, ``"name"`` or ``"schema.name"``.
        columns: Payload fields to copy into typed columns, ``{field: type}``
            (``{"temperature": "double precision"}``); the column has the
            field's name. A missing field is NULL; a value that does not cast is
            rejected by the server and its event dead-lettered.
        store_payload: Also store the whole payload in ``payload jsonb``.
        create_table: Create the table when missing and add missing ``columns``
            to an existing one. Otherwise the table must already match.
        pool_size: Connections in the pool (default: ``workers``).
        pool_timeout: Seconds to wait for a pooled connection (then a
            transient error).
        connect_timeout: Seconds to connect, at open and for each new pooled
            connection.
        application_name: Shown in ``pg_stat_activity`` for the sink's
            connections.
        copy_format: ``"binary"`` (default, fastest) or ``"text"`` COPY.
        **options: :class:`~trio_ingest.Sink` options (``workers``,
            ``max_batch``, ``max_wait``: defaults above; ``retry``,
            ``breaker``, ``name``...).

    Raises:
        ConfigError: No DSN, a malformed table name, column map or option.
    """

    name = "postgres"

    def __init__(
        self,
        dsn: str | None = None,
        table: str | None = None,
        *,
        columns: Mapping[str, str] | None = None,
        store_payload: bool = True,
        create_table: bool = True,
        pool_size: int | None = None,
        pool_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        application_name: str = "trio_ingest",
        copy_format: str = "binary",
        **options: Any,
    ) -> None:
        # COPY pays off with large batches (measured: 0.8x executemany at 256 events,
        # 2-3x at 5,000): gather up to 5,000 for at most 0.1 s, and let a second worker
        # fill the next batch while the server takes one
        options.setdefault("max_batch", DEFAULT_MAX_BATCH)
        options.setdefault("max_wait", DEFAULT_MAX_WAIT)
        options.setdefault("workers", DEFAULT_WORKERS)
        super().__init__(**options)
        if dsn is None:
            dsn = os.environ.get(ENV_DSN) or None
        if dsn is None:
            raise ConfigError(f"'dsn' is required: pass dsn=... or set {ENV_DSN}")
        if not isinstance(dsn, str):
            raise ConfigError(f"'dsn' must be a connection string: {type(dsn).__name__}")
        self._table_parts = _split_table(table)
        self.table = ".".join(self._table_parts)
        self.columns = _check_columns(columns)
        if pool_size is None:
            pool_size = self.workers
        if not isinstance(pool_size, int) or pool_size < 1:
            raise ConfigError(f"'pool_size' must be >= 1: {pool_size!r}")
        if not pool_timeout > 0:
            raise ConfigError(f"'pool_timeout' must be > 0: {pool_timeout!r}")
        if not connect_timeout > 0:
            raise ConfigError(f"'connect_timeout' must be > 0: {connect_timeout!r}")
        if copy_format not in ("binary", "text"):
            raise ConfigError(f"'copy_format' must be 'binary' or 'text': {copy_format!r}")
        if not isinstance(application_name, str):
            raise ConfigError(f"'application_name' must be a str: {application_name!r}")
        self._dsn = dsn
        self.store_payload = bool(store_payload)
        self.create_table = bool(create_table)
        self.pool_size = pool_size
        self.pool_timeout = float(pool_timeout)
        self.connect_timeout = float(connect_timeout)
        self.application_name = application_name
        self.copy_format = copy_format
        #: Rows the sink inserted, and ids it skipped as already stored.
        self.rows_inserted = 0
        self.duplicates_skipped = 0
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._limiter: anyio.CapacityLimiter | None = None
        digest = hashlib.blake2b(self.table.encode(), digest_size=6).hexdigest()
        self._staging = f"trio_ingest_stage_{digest}"
        self._build_statements()

    @property
    def span_attributes(self) -> dict[str, str]:
        """OpenTelemetry semantic-convention attributes of this sink's write spans."""
        return {"db.system": "postgresql", "db.collection.name": self.table}

    def __repr__(self) -> str:
        return f"<Postgres {self.name!r} table={self.table!r}>"

    # -- statements -----------------------------------------------------------------
    def _build_statements(self) -> None:
        staging = sql.Identifier(self._staging)
        target = sql.Identifier(*self._table_parts)
        names = ["id", "key", "event_time"]
        stage_types = ["text", "text", "float8"]
        selects: list[sql.Composable] = [
            sql.Identifier("id"),
            sql.Identifier("key"),
            sql.SQL("to_timestamp({})").format(sql.Identifier("event_time")),
        ]
        if self.store_payload:
            names.append("payload")
            stage_types.append("text")
            selects.append(sql.SQL("{}::jsonb").format(sql.Identifier("payload")))
        for field, type_ in self.columns.items():
            names.append(field)
            stage_types.append("text")
            selects.append(sql.SQL("({})::{}").format(sql.Identifier(field), sql.SQL(type_)))
        idents = sql.SQL(", ").join(sql.Identifier(n) for n in names)
        self._copy_types = stage_types
        self._create_staging = sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS"
        ).format(
            staging,
            sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t))
                for n, t in zip(names, stage_types, strict=True)
            ),
        )
        fmt = sql.SQL("BINARY" if self.copy_format == "binary" else "TEXT")
        self._copy = sql.SQL("COPY pg_temp.{} ({}) FROM STDIN (FORMAT {})").format(
            staging, idents, fmt
        )
        self._insert = sql.SQL(
            'INSERT INTO {} ({}) SELECT {} FROM pg_temp.{} ORDER BY {} COLLATE "C" '
            "ON CONFLICT (id) DO NOTHING"
        ).format(target, idents, sql.SQL(", ").join(selects), staging, sql.Identifier("id"))

    def _expected(self) -> list[tuple[str, str]]:
        expected = [c for c in _CORE if self.store_payload or c[0] != "payload"]
        return expected + list(self.columns.items())

    # -- lifecycle ------------------------------------------------------------------
    async def open(self) -> None:
        """Connect, create or verify the table, open the pool.

        Raises:
            ConfigError: The table is missing (``create_table=False``) or does
                not match: a missing column, a wrong type, no unique index on
                ``id``, a NOT NULL column the sink does not write, or a
                ``columns`` type the server does not know.
            SinkError: The server cannot be reached or refuses the connection.
        """
        await self.aclose()
        self.rows_inserted = 0
        self.duplicates_skipped = 0
        await anyio.to_thread.run_sync(self._prepare_table)
        pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            self._dsn,
            min_size=self.pool_size,
            max_size=self.pool_size,
            open=False,
            kwargs={
                "application_name": self.application_name,
                "connect_timeout": max(1, round(self.connect_timeout)),
            },
            configure=self._configure,
            check=ConnectionPool.check_connection,
            name=f"trio_ingest.{self.name}",
            timeout=self.pool_timeout,
        )
        try:
            await anyio.to_thread.run_sync(self._open_pool, pool)
        except BaseException:
            with anyio.move_on_after(self.connect_timeout, shield=True):
                await anyio.to_thread.run_sync(pool.close)
            raise
        self._pool = pool
        self._limiter = anyio.CapacityLimiter(self.pool_size)
        log.info(
            "%s: writing to table %s with %d connection(s), %s COPY",
            self.name, self.table, self.pool_size, self.copy_format,
        )

    def _open_pool(self, pool: ConnectionPool[psycopg.Connection[Any]]) -> None:
        try:
            pool.open(wait=True, timeout=self.connect_timeout)
        except psycopg.Error as exc:
            raise SinkError(f"{self.name!r}: cannot open the connection pool: {exc}") from exc

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        """Prepare a new pooled connection: its own staging table (temp tables are per session)."""
        conn.execute(self._create_staging)
        conn.commit()

    async def aclose(self) -> None:
        """Close the pool (idempotent); waits for nothing else."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await anyio.to_thread.run_sync(pool.close, self.connect_timeout)

    # -- the table --------------------------------------------------------------------
    def _prepare_table(self) -> None:
        try:
            self._prepare_table_once()
        except psycopg.Error as exc:
            raise SinkError(f"{self.name!r}: preparing table {self.table!r} failed: {exc}") from exc

    def _prepare_table_once(self) -> None:
        try:
            conn = psycopg.connect(
                self._dsn,
                application_name=self.application_name,
                connect_timeout=max(1, round(self.connect_timeout)),
            )
        except psycopg.Error as exc:
            raise SinkError(f"{self.name!r}: cannot connect to PostgreSQL: {exc}") from exc
        with conn:
            if self.create_table:
                # one creator at a time when several sinks start together
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.table,))
            expected = self._canonical_types(conn)
            oid = conn.execute(
                "SELECT c.oid, c.relkind FROM pg_class c WHERE c.oid = to_regclass(%s)",
                (self._qualified(conn),),
            ).fetchone()
            if oid is None:
                if not self.create_table:
                    raise ConfigError(
                        f"table {self.table!r} does not exist (create_table=False)"
                    )
                self._create(conn)
                log.info("%s: created table %s", self.name, self.table)
                return
            if oid[1] not in ("r", "p"):
                raise ConfigError(f"table {self.table!r} is not a table (relkind {oid[1]!r})")
            self._verify(conn, oid[0], expected)

    def _qualified(self, conn: psycopg.Connection[Any]) -> str:
        return sql.Identifier(*self._table_parts).as_string(conn)

    def _canonical_types(self, conn: psycopg.Connection[Any]) -> dict[str, str]:
        """The server's spelling of each expected column type (``float8``: ``double precision``)."""
        probe = sql.Identifier(f"trio_ingest_probe_{self._staging[-12:]}")
        defs = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in self._expected()
        )
        try:
            conn.execute(sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(probe, defs))
        except psycopg.errors.SyntaxError as exc:
            raise ConfigError(f"'columns' holds a type PostgreSQL rejects: {exc}") from exc
        except psycopg.errors.UndefinedObject as exc:
            raise ConfigError(f"'columns' holds a type PostgreSQL does not know: {exc}") from exc
        rows = conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            (sql.SQL("pg_temp.{}").format(probe).as_string(conn),),
        ).fetchall()
        conn.execute(sql.SQL("DROP TABLE {}").format(probe))
        return dict(rows)

    def _create(self, conn: psycopg.Connection[Any]) -> None:
        defs: list[sql.Composable] = [sql.SQL("id text PRIMARY KEY")]
        for name, type_ in self._expected()[1:]:
            defs.append(sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(type_)))
        defs.append(sql.SQL("ingested_at timestamptz NOT NULL DEFAULT now()"))
        conn.execute(
            sql.SQL("CREATE TABLE {} ({})").format(
                sql.Identifier(*self._table_parts), sql.SQL(", ").join(defs)
            )
        )

    def _verify(self, conn: psycopg.Connection[Any], oid: int, expected: dict[str, str]) -> None:
        actual = {
            name: (type_, notnull, hasdef)
            for name, type_, notnull, hasdef in conn.execute(
                "SELECT attname, format_type(atttypid, atttypmod), attnotnull, atthasdef "
                "FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped",
                (oid,),
            ).fetchall()
        }
        if self.create_table:
            missing = [f for f in self.columns if f not in actual]
            for field in missing:
                conn.execute(
                    sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                        sql.Identifier(*self._table_parts),
                        sql.Identifier(field),
                        sql.SQL(self.columns[field]),
                    )
                )
                actual[field] = (expected[field], False, False)
                log.info(
                    "%s: added column %s %s to %s", self.name, field, expected[field], self.table
                )
        problems = []
        for name, _type in self._expected():
            want = expected[name]
            if name not in actual:
                problems.append(f"column {name!r} is missing")
            elif actual[name][0] != want:
                problems.append(f"column {name!r} is {actual[name][0]}, expected {want}")
        written = set(expected)
        for name, (_type, notnull, hasdef) in actual.items():
            if name not in written and notnull and not hasdef:
                problems.append(
                    f"column {name!r} is NOT NULL without a default (the sink does not write it)"
                )
        unique = conn.execute(
            "SELECT 1 FROM pg_index i JOIN pg_attribute a "
            "ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
            "WHERE i.indrelid = %s AND i.indisunique AND i.indnkeyatts = 1 "
            "AND i.indpred IS NULL AND a.attname = 'id'",
            (oid,),
        ).fetchone()
        if unique is None and "id" in actual:
            problems.append("no primary key or unique index on (id) (ON CONFLICT (id) needs one)")
        if problems:
            listed = "; ".join(problems)
            raise ConfigError(f"table {self.table!r} does not match the sink: {listed}")

    # -- writing --------------------------------------------------------------------
    async def write_batch(self, events: Sequence[Event]) -> None:
        """Write ``events`` in one transaction; ids already stored are skipped.

        Raises:
            TransientError: The connection was lost or none was available in time.
            PermanentError: The server (or the JSON encoder) rejected the data,
                with the reason.
            SinkError: The sink is not open.
        """
        if self._pool is None or self._limiter is None:
            raise SinkError(f"{self.name!r} is not open")
        inserted = await anyio.to_thread.run_sync(
            self._write, events, limiter=self._limiter, abandon_on_cancel=True
        )
        self.rows_inserted += inserted
        self.duplicates_skipped += len(events) - inserted

    def _rows(self, events: Sequence[Event]) -> list[tuple[Any, ...]]:
        """The COPY rows of ``events``: a few list passes, or the slow path naming a bad event.

        Raises:
            PermanentError: An event's payload is not JSON, its event time not a
                number, or (with ``columns=``) its payload not a mapping.
        """
        cols = columns(events)
        fields = tuple(self.columns)
        payloads = cols.payloads
        try:
            if DeadLetter not in set(map(type, payloads)):
                parts: list[list[Any]] = [
                    cols.ids,
                    [k if k is None or k.__class__ is str else key_text(k) for k in cols.keys],
                    list(map(float, cols.event_times)),
                ]
                if self.store_payload:
                    parts.append(dumps_many(payloads, text=True))
                if fields:
                    if not all(isinstance(p, Mapping) for p in payloads):
                        raise TypeError("a payload is not a mapping")
                    parts.extend([_text(p.get(f)) for p in payloads] for f in fields)
                return list(zip(*parts, strict=True))
        except (TypeError, ValueError, AttributeError):
            pass
        rows = []
        for ident, payload, key, event_time in zip(
            cols.ids, payloads, cols.keys, cols.event_times, strict=True
        ):  # one by one: a dead letter is made storable, a bad event is named
            try:
                rows.append(self._row(ident, payload, key, event_time, fields))
            except NotJsonError:
                raise  # names the event and the field already
            except (TypeError, ValueError, AttributeError) as exc:
                raise PermanentError(f"event {ident!r} cannot be written: {exc}") from exc
        return rows

    def _row(
        self, ident: str, payload: Any, key: Any, event_time: Any, fields: tuple[str, ...]
    ) -> tuple[Any, ...]:
        if isinstance(payload, DeadLetter):
            # a dead letter must always be storable, whatever made the event fail
            payload = _lenient(payload)
            row: tuple[Any, ...] = (
                _lenient(ident), _lenient(key_text(_lenient(key))), float(event_time)
            )
        else:
            row = (ident, key_text(key), float(event_time))
        if self.store_payload:
            row += (dumps_text(payload, what=f"payload of event {ident!r}"),)
        if fields:
            if not isinstance(payload, Mapping):
                raise TypeError(
                    f"payload is a {type(payload).__name__}, not a mapping "
                    "(columns= reads fields from it)"
                )
            get = payload.get
            row += tuple(_text(get(f)) for f in fields)
        return row

    def _write(self, events: Sequence[Event]) -> int:
        """One batch, one transaction (runs in a worker thread); returns rows inserted."""
        rows = self._rows(events)
        pool = self._pool
        if pool is None:
            raise SinkError(f"{self.name!r} is closed")
        try:
            with pool.connection() as conn, conn.cursor() as cur:
                with cur.copy(self._copy) as copy:
                    if self.copy_format == "binary":
                        copy.set_types(self._copy_types)
                    write_row = copy.write_row
                    for row in rows:
                        write_row(row)
                cur.execute(self._insert)
                return max(cur.rowcount, 0)
        except psycopg.Error as exc:
            raise _classify(exc) from exc
        except UnicodeError as exc:
            raise PermanentError(f"a value cannot be encoded for PostgreSQL: {exc}") from exc
