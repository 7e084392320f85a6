"""State stores: where checkpoint epochs (stage state and source offsets) are kept.

A store keeps one :class:`Checkpoint` at a time, the last one written: the
state of every stateful stage (encoded by :func:`encode`) and the offset of
every source that reflects exactly the events folded into that state. Writing
a checkpoint is one transaction: after a crash at any moment the store holds
either the previous checkpoint or the new one, never a mix.

- :class:`SQLite` (``ti.state.SQLite(path)``) is the embedded, durable store:
  the runtime takes checkpoint epochs with it and restores from it on start.
- :class:`Memory` (the default when ``state=`` is not given) keeps a checkpoint
  in the process only; it is not durable, so the runtime takes no checkpoints
  with it and a run behaves as without state (for tests and embedding).

The store's methods are blocking; the runtime calls them in a worker thread, one
at a time.
"""

from __future__ import annotations

import os
import pickle
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, ClassVar

import attrs
import orjson

try:
    import fcntl
except ImportError:  # pragma: no cover -- Windows: no claim, one run per store is on you
    fcntl = None  # type: ignore[assignment]

from .._errors import ConfigError, IngestError

__all__ = ("Checkpoint", "Memory", "SQLite", "StateError", "StateStore", "decode", "encode")

#: How a stage's state is encoded: JSON where it round-trips exactly, else pickle.
JSON, PICKLE = "json", "pickle"


class StateError(IngestError):
    """A state store cannot be read or written, or holds state this graph cannot use."""


def encode(value: Any) -> tuple[str, bytes]:
    """``value`` as ``(format, bytes)``: orjson when it comes back equal, else pickle.

    JSON is preferred (readable, safe to load); a value JSON cannot hold exactly
    (tuples, sets, non-string dict keys, infinities, user objects) is pickled.
    """
    try:
        data = orjson.dumps(value)
    except TypeError:
        pass
    else:
        if orjson.loads(data) == value:
            return JSON, data
    return PICKLE, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def decode(fmt: str, data: bytes) -> Any:
    """The value :func:`encode` encoded.

    Raises:
        StateError: The format is unknown.
    """
    if fmt == JSON:
        return orjson.loads(data)
    if fmt == PICKLE:
        # the store is the pipeline's own file, written by encode(): trusted like the code
        return pickle.loads(data)
    raise StateError(f"unknown state encoding {fmt!r}")


@attrs.frozen
class Checkpoint:
    """One checkpoint epoch.

    Attributes:
        epoch: Its number (1, 2, ... per store).
        layout: What the graph looked like: ``{"stages": {name: signature},
            "sources": [names]}``; a graph that differs cannot use the state.
        stages: Per stateful stage name, its state as ``(format, bytes)`` (:func:`encode`).
        offsets: Per source name, the offset to resume from (JSON values), or
            absent when the source had read nothing yet.
    """

    epoch: int
    layout: Mapping[str, Any]
    stages: Mapping[str, tuple[str, bytes]]
    offsets: Mapping[str, Any]


class StateStore:
    """Base class of state stores: ``load`` the last checkpoint, ``save`` a new one."""

    #: Whether a checkpoint survives the process (the runtime checkpoints only then).
    durable: ClassVar[bool] = False

    def load(self) -> Checkpoint | None:
        """The last checkpoint saved, or None when there is none.

        Raises:
            StateError: The store cannot be read.
        """
        raise NotImplementedError

    def save(self, checkpoint: Checkpoint) -> None:
        """Replace the stored checkpoint with ``checkpoint``, atomically.

        Raises:
            StateError: It could not be written; the previous one is intact.
        """
        raise NotImplementedError

    def claim(self) -> None:
        """Take the store for one run, so that no other run uses it meanwhile.

        The runtime calls it before :meth:`load` and gives it up with :meth:`close`.

        Raises:
            StateError: Another run holds the store.
        """

    def close(self) -> None:
        """Release the store's connection (and the claim); idempotent."""


class Memory(StateStore):
    """A store in this process's memory: not durable (the default; for tests and embedding)."""

    durable = False

    def __init__(self) -> None:
        self._checkpoint: Checkpoint | None = None

    def __repr__(self) -> str:
        return "<state.Memory>"

    def load(self) -> Checkpoint | None:
        """The last checkpoint saved in this process, or None."""
        return self._checkpoint

    def save(self, checkpoint: Checkpoint) -> None:
        """Keep ``checkpoint`` (replacing the previous one)."""
        self._checkpoint = checkpoint


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS ti_epoch (id INTEGER PRIMARY KEY CHECK (id = 1), "
    "epoch INTEGER NOT NULL, layout TEXT NOT NULL, written REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS ti_stage_state (name TEXT PRIMARY KEY, format TEXT NOT NULL, "
    "data BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS ti_source_offset (name TEXT PRIMARY KEY, "
    "position TEXT NOT NULL)",
)


class SQLite(StateStore):
    """The embedded durable store: one SQLite file, one transaction per checkpoint.

    Args:
        path: The database file (created with its tables when missing).
        synchronous: SQLite's ``synchronous`` pragma; ``"FULL"`` (the default)
            makes every checkpoint survive a power cut, ``"NORMAL"`` a crash of
            the process.

    Raises:
        ConfigError: ``path`` is not a file path or ``synchronous`` is unknown.
    """

    durable = True

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "FULL") -> None:
        if not isinstance(path, str | os.PathLike) or not os.fspath(path):
            raise ConfigError(f"'path' must be a file path: {path!r}")
        if os.fspath(path) == ":memory:":
            raise ConfigError("'path' must be a file: ':memory:' does not survive a crash "
                              "(use ti.state.Memory())")
        if synchronous not in ("NORMAL", "FULL", "EXTRA"):
            raise ConfigError(
                f"'synchronous' must be 'NORMAL', 'FULL' or 'EXTRA': {synchronous!r}"
            )
        self.path = Path(path)
        self.synchronous = synchronous
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._claim: IO[str] | None = None

    def __repr__(self) -> str:
        return f"<state.SQLite {os.fspath(self.path)!r}>"

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(f"PRAGMA synchronous={self.synchronous}")
                db.execute("PRAGMA busy_timeout=5000")
                for statement in _SCHEMA:
                    db.execute(statement)
            except sqlite3.Error as exc:
                raise StateError(
                    f"cannot open state store {os.fspath(self.path)!r}: {exc}"
                ) from exc
            self._db = db
        return self._db

    def claim(self) -> None:
        """Hold an exclusive lock on ``<path>.lock`` until :meth:`close` (one run per store).

        The lock goes with the process that holds it, ``kill -9`` included: a rerun
        after a crash finds it free. Reading the store (:meth:`load`) needs no claim.

        Raises:
            StateError: Another run (named by its pid) holds the store.
        """
        if fcntl is None or self._claim is not None:  # pragma: no cover -- Windows
            return
        lock = Path(f"{os.fspath(self.path)}.lock")
        try:
            f = open(lock, "a+", encoding="ascii")  # kept open while claimed: the lock
        except OSError as exc:
            raise StateError(f"cannot open the lock file {os.fspath(lock)!r}: {exc}") from exc
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise StateError(
                f"state store {os.fspath(self.path)!r} is in use by another run (pid {holder}): "
                "one run per store"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._claim = f

    def load(self) -> Checkpoint | None:
        """The last checkpoint in the file, or None when none was written yet.

        Raises:
            StateError: The file cannot be opened or is not a state store.
        """
        with self._lock:
            db = self._connect()
            try:
                row = db.execute("SELECT epoch, layout FROM ti_epoch WHERE id = 1").fetchone()
                if row is None:
                    return None
                stages = {
                    name: (fmt, bytes(data))
                    for name, fmt, data in db.execute(
                        "SELECT name, format, data FROM ti_stage_state"
                    )
                }
                offsets = {
                    name: orjson.loads(position)
                    for name, position in db.execute(
                        "SELECT name, position FROM ti_source_offset"
                    )
                }
                layout = orjson.loads(row[1])
            except (sqlite3.Error, orjson.JSONDecodeError) as exc:
                raise StateError(
                    f"cannot read state store {os.fspath(self.path)!r}: {exc}"
                ) from exc
            return Checkpoint(int(row[0]), layout, stages, offsets)

    def save(self, checkpoint: Checkpoint) -> None:
        """Write ``checkpoint`` in one transaction (state rows replaced, offsets upserted).

        Raises:
            StateError: It could not be written; the previous checkpoint is intact.
        """
        with self._lock:
            db = self._connect()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    db.execute(
                        "INSERT OR REPLACE INTO ti_epoch (id, epoch, layout, written) "
                        "VALUES (1, ?, ?, ?)",
                        (checkpoint.epoch, orjson.dumps(checkpoint.layout).decode(), time.time()),
                    )
                    db.execute("DELETE FROM ti_stage_state")
                    db.executemany(
                        "INSERT INTO ti_stage_state (name, format, data) VALUES (?, ?, ?)",
                        [(n, f, d) for n, (f, d) in checkpoint.stages.items()],
                    )
                    db.executemany(
                        "INSERT OR REPLACE INTO ti_source_offset (name, position) VALUES (?, ?)",
                        [(n, orjson.dumps(o).decode()) for n, o in checkpoint.offsets.items()],
                    )
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except (sqlite3.Error, TypeError) as exc:
                raise StateError(
                    f"cannot write state store {os.fspath(self.path)!r}: {exc}"
                ) from exc

    def close(self) -> None:
        """Close the connection; idempotent (the next load or save opens it again)."""
        with self._lock:
            db, self._db = self._db, None
            if db is not None:
                db.close()
            claim, self._claim = self._claim, None
            if claim is not None:
                claim.close()  # closing the file releases the lock
