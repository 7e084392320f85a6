"""File sources: JSON Lines and CSV, read in batches, resumed from an atomic checkpoint.

A file source's offset is the byte offset just past the last line it read.
The runtime hands finished offsets to ``commit``, which writes the newest one
to the checkpoint file atomically (temp file, flush, fsync, rename, fsync of
the directory): a crash at any moment leaves either the old checkpoint or the
new one, never a torn one. ``open`` seeks to the checkpointed offset, so a
restarted run resumes where the last commit left; lines read after that commit
are read again (at-least-once), and an idempotent sink stores them once.

File reads, parsing and checkpoint writes run in worker threads, so a large
file never blocks the event loop.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import datetime
import hashlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import anyio
import attrs

from .._errors import ConfigError, SourceError
from .._event import DeadLetter, Event
from ._base import Read, Source

__all__ = ("CSV", "JsonLines", "read_checkpoint", "write_checkpoint")

log = logging.getLogger("trio_ingest.sources.files")

#: ``DeadLetter.error_type`` of every line a file source rejects.
MALFORMED = "MalformedLine"
_CHECKPOINT_VERSION = 1
_FINGERPRINT_BYTES = 4096
# A rejected line's text kept in its dead letter; longer lines are cut.
_KEEP_CHARS = 2000


# -- the atomic checkpoint ----------------------------------------------------------


def write_checkpoint(path: str | os.PathLike[str], data: Mapping[str, Any]) -> None:
    """Replace the checkpoint at ``path`` with ``data`` (JSON), atomically and durably.

    Writes a temporary file in the same directory, flushes and fsyncs it,
    renames it over ``path`` and fsyncs the directory. A crash (or an error)
    at any step leaves the previous checkpoint intact: readers see the old
    content or the new one, never a mix. Blocking: call it from a worker thread.

    Raises:
        OSError: The directory is not writable, the disk is full...; the old
            checkpoint is left as it was and the temporary file is removed.
    """
    target = Path(path)
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    text = json.dumps(dict(data), sort_keys=True) + "\n"
    try:
        with open(temp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_directory(target.parent)


def _fsync_directory(directory: Path) -> None:
    # makes the rename itself durable; some platforms cannot open a directory
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Return the checkpoint stored at ``path``, or ``None`` when there is none yet.

    Raises:
        SourceError: The file exists but is not a checkpoint.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SourceError(f"cannot read checkpoint {os.fspath(path)!r}: {exc}") from exc
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        offset, line = data["offset"], data.get("line", 0)
        if type(offset) is not int or offset < 0 or type(line) is not int or line < 0:
            raise ValueError(f"bad offset/line: {offset!r}/{line!r}")
    except (ValueError, KeyError) as exc:
        raise SourceError(
            f"checkpoint {os.fspath(path)!r} is not a trio_ingest checkpoint ({exc}); "
            "delete it to start from the beginning"
        ) from exc
    return data


# -- what one read of the file produced ---------------------------------------------


@attrs.define(slots=True)
class _Chunk:
    events: list[Event]
    rejected: list[DeadLetter]
    offset: int  # byte offset after the last consumed line
    line: int  # physical lines consumed so far
    records: int  # records consumed (events + rejected)


class _Reject(Exception):
    """A record that cannot become an event; the message is the reason."""


class _Header(_Reject):
    """The CSV header row was read: a record, but not an event."""


class _FileSource(Source):
    """Reads records, line by line, from a file; subclasses parse one record."""

    _kind = "file"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        checkpoint: str | os.PathLike[str] | None = None,
        follow: bool = False,
        poll_interval: float = 0.25,
        id_field: str = "id",
        key_field: str | None = None,
        time_field: str | None = None,
        max_line_bytes: int = 1_000_000,
        rate: float | None = None,
        commit_interval: float = 0.2,
        name: str | None = None,
    ) -> None:
        if not isinstance(path, str | os.PathLike) or not os.fspath(path):
            raise ConfigError(f"'path' must be a file path: {path!r}")
        if checkpoint is not None and (
            not isinstance(checkpoint, str | os.PathLike) or not os.fspath(checkpoint)
        ):
            raise ConfigError(f"'checkpoint' must be a file path or None: {checkpoint!r}")
        if not poll_interval > 0:
            raise ConfigError(f"'poll_interval' must be > 0: {poll_interval!r}")
        for field_name, value in (("id_field", id_field), ("key_field", key_field),
                                  ("time_field", time_field)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"'{field_name}' must be a non-empty str: {value!r}")
        if not isinstance(id_field, str):
            raise ConfigError(f"'id_field' must be a non-empty str: {id_field!r}")
        if not isinstance(max_line_bytes, int) or max_line_bytes < 1:
            raise ConfigError(f"'max_line_bytes' must be >= 1: {max_line_bytes!r}")
        if rate is not None and not rate > 0:
            raise ConfigError(f"'rate' must be > 0 or None: {rate!r}")
        if not commit_interval >= 0:
            raise ConfigError(f"'commit_interval' must be >= 0: {commit_interval!r}")
        self.path = Path(path)
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.follow = bool(follow)
        self.poll_interval = float(poll_interval)
        self.id_field = id_field
        self.key_field = key_field
        self.time_field = time_field
        self.max_line_bytes = max_line_bytes
        self.rate = rate
        self.commit_interval = float(commit_interval)
        self.name = name or self._kind
        self.name_given = name is not None
        #: Byte offset just past the last line read (what a read has reached).
        self.position = 0
        #: The last offset committed (persisted when there is a checkpoint file).
        self.committed: int | None = None
        self._line = 0
        self._file: IO[bytes] | None = None
        self._limiter: anyio.CapacityLimiter | None = None
        self._pending: deque[tuple[int, int]] = deque()  # (offset, line) of reads not committed
        self._committed_line = 0
        self._next_due: float | None = None
        self._fingerprint: str | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {os.fspath(self.path)!r}>"

    @property
    def line(self) -> int:
        """Physical lines read so far (counting from the start of the file)."""
        return self._line

    # -- opening ------------------------------------------------------------------
    async def open(self) -> None:
        """Open the file and seek to the checkpointed offset.

        Raises:
            SourceError: The file cannot be opened; the checkpoint is unreadable,
                or points past the end of the file, or the file's first bytes
                changed since it was written (the file was replaced).
        """
        self._limiter = anyio.CapacityLimiter(1)
        self._pending.clear()
        self._next_due = None
        await anyio.to_thread.run_sync(self._open_sync, limiter=self._limiter)

    def _open_sync(self) -> None:
        try:
            f = open(self.path, "rb")  # closed by aclose()
        except OSError as exc:
            raise SourceError(f"cannot open {os.fspath(self.path)!r}: {exc.strerror}") from exc
        try:
            if not os.path.isfile(self.path):
                raise SourceError(f"{os.fspath(self.path)!r} is not a regular file")
            offset, line = 0, 0
            if self.checkpoint is not None:
                data = read_checkpoint(self.checkpoint)
                if data is not None:
                    offset, line = data["offset"], data.get("line", 0)
                    self._check_resume(f, offset, data.get("fingerprint"))
            self._prepare(f)
            self.position, self._line = offset, line
            self._committed_line = line
            self.committed = offset if offset else None
        except BaseException:
            f.close()
            raise
        self._file = f
        if offset:
            log.info("%s: resuming %s at byte %d (line %d)", self.name, self.path, offset, line)

    def _check_resume(self, f: IO[bytes], offset: int, fingerprint: object) -> None:
        size = os.fstat(f.fileno()).st_size
        if offset > size:
            raise SourceError(
                f"checkpoint {os.fspath(self.checkpoint or '')!r} is at byte {offset} but "
                f"{os.fspath(self.path)!r} has {size} bytes: the file was truncated or "
                "replaced; delete the checkpoint to start from the beginning"
            )
        if isinstance(fingerprint, str) and fingerprint != _fingerprint(f, offset):
            raise SourceError(
                f"{os.fspath(self.path)!r} changed since checkpoint "
                f"{os.fspath(self.checkpoint or '')!r} was written (its first bytes differ); "
                "delete the checkpoint to start from the beginning"
            )

    def _prepare(self, f: IO[bytes]) -> None:
        """Subclass hook run at open (after the checkpoint was read)."""

    # -- reading ------------------------------------------------------------------
    async def read(self, max_events: int) -> Read | None:
        """Read up to ``max_events`` lines; in ``follow`` mode wait for more at the end.

        Returns ``None`` at the end of the file (never, when following).
        Malformed lines come back in ``Read.rejected`` with their reason.
        """
        limiter = self._limiter
        if limiter is None:
            raise SourceError(f"{self.name!r}: read() before open()")
        if self.rate is not None:
            max_events = await self._pace(max_events)
        while True:
            # the thread reads from ``position`` and returns a new one; state changes only
            # here, after it returned, so a read cancelled by stop() loses nothing
            chunk = await anyio.to_thread.run_sync(
                self._read_sync, self.position, self._line, max_events, not self.follow,
                limiter=limiter,
            )
            if chunk.records or chunk.offset != self.position:
                self.position, self._line = chunk.offset, chunk.line
                self._pending.append((chunk.offset, chunk.line))
                if self.rate is not None and self._next_due is not None:
                    self._next_due += chunk.records / self.rate
                return Read(chunk.events, chunk.offset, chunk.rejected)
            if not self.follow:
                return None
            await anyio.sleep(self.poll_interval)

    async def _pace(self, max_events: int) -> int:
        assert self.rate is not None
        now = anyio.current_time()
        if self._next_due is None or self._next_due < now - 1.0:
            self._next_due = now  # an idle spell earns at most a second of catching up
        if self._next_due > now:
            await anyio.sleep_until(self._next_due)
        # about ten reads a second, so a low rate does not come in bursts
        return max(1, min(max_events, int(self.rate / 10)))

    def _read_sync(self, offset: int, line: int, max_records: int, final: bool) -> _Chunk:
        f = self._file
        if f is None:
            raise SourceError(f"{self.name!r} is closed")
        size = os.fstat(f.fileno()).st_size
        if size < offset:
            raise SourceError(
                f"{os.fspath(self.path)!r} shrank to {size} bytes below the read position "
                f"{offset}: it was truncated or replaced while being read"
            )
        f.seek(offset)
        events: list[Event] = []
        rejected: list[DeadLetter] = []
        limit = self.max_line_bytes
        chunk = limit + 2  # room for the longest accepted line and its CRLF
        records = 0
        while records < max_records:
            start_offset, start_line = offset, line
            record = b""
            oversize = False
            complete = False
            while True:
                raw = f.readline(chunk)
                if not raw:
                    break
                ends = raw.endswith(b"\n")
                if not ends and len(raw) < chunk:
                    # the file ends inside a line: wait for its newline unless the file is done
                    if final:
                        offset += len(raw)
                        line += 1
                        if not oversize:
                            record += raw
                        complete = oversize or self._record_complete(record)
                    break
                offset += len(raw)
                if not oversize:
                    record += raw
                    oversize = len(_strip_newline(record)) > limit
                if ends:
                    line += 1
                    # an oversize record ends with the line where it passed the limit
                    if oversize or self._record_complete(record):
                        complete = True
                        break
            if not complete:
                if final and record:
                    reason = self._unterminated_reason()
                    rejected.append(self._reject(record, start_line + 1, start_offset, reason))
                    records += 1
                else:
                    offset, line = start_offset, start_line  # read it again once it is whole
                break
            if oversize:
                reason = f"line longer than max_line_bytes={limit}"
                rejected.append(self._reject(record, start_line + 1, start_offset, reason))
                records += 1
                continue
            content = _strip_newline(record)
            if not content.strip():
                continue  # blank lines are not records
            try:
                event = self._parse(content, start_line + 1, start_offset)
            except _Header:
                records += 1
                continue
            except _Reject as why:
                rejected.append(self._reject(record, start_line + 1, start_offset, str(why)))
            else:
                events.append(event)
            records += 1
        return _Chunk(events, rejected, offset, line, records)

    def _record_complete(self, record: bytes) -> bool:
        """Whether ``record`` (whole lines) is a full record; CSV quotes span lines."""
        return True

    def _unterminated_reason(self) -> str:
        return "the file ends inside a record"

    def _parse(self, content: bytes, line_no: int, offset: int) -> Event:
        """One record's bytes to an Event; raise ``_Reject`` with the reason otherwise."""
        raise NotImplementedError(f"{type(self).__name__} must implement _parse()")

    def _decode(self, content: bytes, line_no: int, offset: int) -> str:
        nul = content.find(b"\x00")
        if nul >= 0:
            raise _Reject(f"NUL byte at column {nul + 1}")
        if offset == 0 and content.startswith(codecs.BOM_UTF8):
            content = content[len(codecs.BOM_UTF8):]
        try:
            return content.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Reject(f"invalid UTF-8 at byte {exc.start + 1}: {exc.reason}") from None

    def _event(self, record: Mapping[str, Any], payload: Any) -> Event:
        """Build the event of a parsed ``record`` (id, key and time from its fields)."""
        ident = record.get(self.id_field)
        if ident is None:
            raise _Reject(f"missing id field {self.id_field!r}")
        if type(ident) is int:
            ident = str(ident)
        elif type(ident) is not str:
            raise _Reject(
                f"id field {self.id_field!r} must be a string or an integer, "
                f"not {_json_type(ident)}"
            )
        if not ident:
            raise _Reject(f"empty id field {self.id_field!r}")
        key = None
        if self.key_field is not None:
            key = record.get(self.key_field)
            if key is not None and not isinstance(key, str | int | float):
                raise _Reject(
                    f"key field {self.key_field!r} must be a string or a number, "
                    f"not {_json_type(key)}"
                )
        if self.time_field is None:
            return Event(id=ident, payload=payload, key=key)
        return Event(id=ident, payload=payload, key=key, event_time=self._time(record))

    def _time(self, record: Mapping[str, Any]) -> float:
        assert self.time_field is not None
        value = record.get(self.time_field)
        if value is None:
            raise _Reject(f"missing time field {self.time_field!r}")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
            try:
                moment = datetime.datetime.fromisoformat(value)
            except ValueError:
                raise _Reject(
                    f"time field {self.time_field!r} is neither epoch seconds nor ISO 8601: "
                    f"{value[:80]!r}"
                ) from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=datetime.UTC)
            return moment.timestamp()
        raise _Reject(
            f"time field {self.time_field!r} must be a number or an ISO 8601 string, "
            f"not {_json_type(value)}"
        )

    def _reject(self, record: bytes, line_no: int, offset: int, reason: str) -> DeadLetter:
        text = record[: _KEEP_CHARS * 4].decode("utf-8", errors="replace")
        text = _strip_newline_text(text)
        if len(text) > _KEEP_CHARS:
            text = text[:_KEEP_CHARS] + "..."
        where = f"{os.fspath(self.path)}:{line_no}"
        event = Event(
            id=where,
            payload=text,
            headers={"file": os.fspath(self.path), "line": str(line_no), "offset": str(offset)},
        )
        return DeadLetter(
            event=event,
            node=self.name,
            error_type=MALFORMED,
            error=f"line {line_no}: {reason}",
            attempts=1,
        )

    # -- committing ---------------------------------------------------------------
    async def commit(self, offsets: Sequence[Any]) -> None:
        """Persist ``offsets[-1]`` (every read up to it is finished) to the checkpoint.

        Raises:
            SourceError: The checkpoint could not be written; the previous one
                is intact.
        """
        if not offsets:
            return
        offset = int(offsets[-1])
        line = self._line_at(offset)
        self.committed = offset
        if self.checkpoint is None:
            return
        try:
            await anyio.to_thread.run_sync(self._commit_sync, offset, line)
        except OSError as exc:
            raise SourceError(
                f"cannot write checkpoint {os.fspath(self.checkpoint)!r}: {exc}"
            ) from exc

    def _line_at(self, offset: int) -> int:
        pending = self._pending
        while pending and pending[0][0] <= offset:
            self._committed_line = pending.popleft()[1]
        return self._committed_line

    def _commit_sync(self, offset: int, line: int) -> None:
        assert self.checkpoint is not None
        fingerprint = self._fingerprint
        if fingerprint is None or offset < _FINGERPRINT_BYTES:
            with open(self.path, "rb") as f:
                fingerprint = _fingerprint(f, offset)
            if offset >= _FINGERPRINT_BYTES:
                self._fingerprint = fingerprint
        write_checkpoint(
            self.checkpoint,
            {
                "version": _CHECKPOINT_VERSION,
                "file": os.fspath(self.path),
                "offset": offset,
                "line": line,
                "fingerprint": fingerprint,
                "time": time.time(),
            },
        )

    async def aclose(self) -> None:
        """Close the file; idempotent."""
        f, self._file = self._file, None
        if f is not None:
            f.close()


def _fingerprint(f: IO[bytes], offset: int) -> str:
    f.seek(0)
    head = f.read(min(offset, _FINGERPRINT_BYTES))
    return hashlib.sha256(head).hexdigest()


def _strip_newline(raw: bytes) -> bytes:
    if raw.endswith(b"\r\n"):
        return raw[:-2]
    if raw.endswith(b"\n"):
        return raw[:-1]
    return raw


def _strip_newline_text(text: str) -> str:
    return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text


def _json_type(value: object) -> str:
    names = {bool: "a boolean", float: "a number", int: "an integer", str: "a string",
             list: "an array", dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


class JsonLines(_FileSource):
    """Events from a JSON Lines file: one JSON object per line.

    Each line becomes an event whose payload is the whole object, whose id is
    ``object[id_field]`` (a non-empty string, or an integer turned into its
    decimal string), whose key is ``object[key_field]`` and whose event time is
    ``object[time_field]`` (epoch seconds, or an ISO 8601 string; UTC when it
    names no zone). Without ``time_field`` the event time is when it was read.

    Lines that cannot become events are not dropped: they come back as
    rejected records that the runtime sends to the dead-letter sink, each with
    ``error_type`` ``"MalformedLine"``, the reason and line number in
    ``error``, the raw text as the event's payload and ``"<path>:<line>"`` as
    its id. Reasons: bad JSON, invalid UTF-8, NUL bytes, not an object, a
    missing, empty or non-string id, a key or time of the wrong type, a line
    longer than ``max_line_bytes``. Blank lines are skipped (they are not
    records); ``\\n`` and ``\\r\\n`` line endings are both accepted.

    A last line without its newline is read only when the file is finished:
    when not following, at the end of the file; when following, never until
    its newline arrives (a writer may still be writing it).

    Args:
        path: The file.
        checkpoint: Where the committed offset is kept (JSON, replaced
            atomically); ``open`` resumes from it. ``None``: no checkpoint,
            every run reads from the start.
        follow: Tail the file: at its end, poll every ``poll_interval`` seconds
            for more lines, until the pipeline is stopped (``tail -f``). The
            file must only grow: a truncated file fails the source, and a
            rotated (renamed and recreated) one is not followed to the new file.
        poll_interval: Seconds between polls at the end of a followed file.
        id_field, key_field, time_field: The fields holding the event's id,
            key and event time.
        max_line_bytes: Longest accepted line, in bytes without its newline.
        rate: Most records per second (``None``: as fast as the pipeline takes them).
        commit_interval: Least seconds between two checkpoint writes (each is
            fsync'd, so they are amortised over many batches).
        name: Node name (default ``"jsonlines"``).

    Raises:
        ConfigError: An argument is invalid.
    """

    _kind = "jsonlines"

    def _parse(self, content: bytes, line_no: int, offset: int) -> Event:
        text = self._decode(content, line_no, offset)
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _Reject(f"bad JSON: {exc}") from None
        except RecursionError:
            raise _Reject("bad JSON: nested too deeply") from None
        if not isinstance(value, dict):
            raise _Reject(f"expected a JSON object, got {_json_type(value)}")
        return self._event(value, value)


class CSV(_FileSource):
    """Events from a CSV file with a header row.

    Each row becomes an event whose payload is a dict ``{column: value}``
    (strings, or what ``converters[column]`` turns them into), with the id,
    key and event time taken from the named columns as for
    :class:`JsonLines`. Quoted fields may span lines. Rows that cannot become
    events (wrong number of fields, bad quoting, invalid UTF-8, a missing or
    empty id, a converter that raised, a row longer than ``max_line_bytes``)
    are dead-lettered with their reason and line number; blank lines are
    skipped.

    Args:
        path, checkpoint, follow, poll_interval, id_field, key_field,
        time_field, max_line_bytes, rate, commit_interval: As for :class:`JsonLines`.
        fieldnames: Column names; ``None`` reads them from the first row.
        delimiter: The field separator.
        quotechar: The quote character (a quote inside a field is doubled).
        converters: ``{column: function}`` applied to a column's string value;
            a failure dead-letters the row with the error.
        name: Node name (default ``"csv"``).

    Raises:
        ConfigError: An argument is invalid.
    """

    _kind = "csv"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fieldnames: Sequence[str] | None = None,
        delimiter: str = ",",
        quotechar: str = '"',
        converters: Mapping[str, Callable[[str], Any]] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(path, **options)
        if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in "\r\n":
            raise ConfigError(f"'delimiter' must be one character: {delimiter!r}")
        if not isinstance(quotechar, str) or len(quotechar) != 1 or quotechar == delimiter:
            raise ConfigError(
                f"'quotechar' must be one character other than the delimiter: {quotechar!r}"
            )
        if fieldnames is not None:
            fieldnames = list(fieldnames)
            if not fieldnames or not all(isinstance(n, str) and n for n in fieldnames):
                raise ConfigError(f"'fieldnames' must be non-empty strings: {fieldnames!r}")
            if len(set(fieldnames)) != len(fieldnames):
                raise ConfigError(f"'fieldnames' has duplicates: {fieldnames!r}")
        converters = dict(converters or {})
        for column, fn in converters.items():
            if not callable(fn):
                raise ConfigError(f"converter of column {column!r} is not callable: {fn!r}")
        self.fieldnames: list[str] | None = fieldnames
        self.delimiter = delimiter
        self.quotechar = quotechar
        self.converters = converters
        self._given_fieldnames = fieldnames
        self._quote = quotechar.encode()
        self._header_end = 0

    def _prepare(self, f: IO[bytes]) -> None:
        self.fieldnames = self._given_fieldnames
        self._header_end = 0

    def _record_complete(self, record: bytes) -> bool:
        # doubled quotes escape a quote, so a record ends where quotes balance
        return record.count(self._quote) % 2 == 0

    def _unterminated_reason(self) -> str:
        return "the file ends inside a quoted field"

    def _read_sync(self, offset: int, line: int, max_records: int, final: bool) -> _Chunk:
        if self.fieldnames is None:
            header = super()._read_sync(0, 0, 1, final)
            if header.records == 0 and not header.rejected:
                return _Chunk([], [], offset, line, 0)
            if header.rejected or self.fieldnames is None:
                reason = header.rejected[0].error if header.rejected else "no header row"
                raise SourceError(f"{os.fspath(self.path)!r}: cannot read the header: {reason}")
            self._header_end = header.offset
            if offset < header.offset:
                offset, line = header.offset, header.line
        return super()._read_sync(offset, line, max_records, final)

    def _parse(self, content: bytes, line_no: int, offset: int) -> Event:
        text = self._decode(content, line_no, offset)
        try:
            rows = list(csv.reader([text], delimiter=self.delimiter,
                                   quotechar=self.quotechar, strict=True))
        except csv.Error as exc:
            raise _Reject(f"bad CSV: {exc}") from None
        if len(rows) != 1:
            raise _Reject(f"bad CSV: {len(rows)} rows in one record")
        values = rows[0]
        if self.fieldnames is None:
            names = [v.strip() for v in values]
            if not all(names) or len(set(names)) != len(names):
                raise _Reject(f"bad header row: {values!r}")
            self.fieldnames = names
            raise _Header
        if len(values) != len(self.fieldnames):
            raise _Reject(f"expected {len(self.fieldnames)} fields, got {len(values)}")
        row: dict[str, Any] = dict(zip(self.fieldnames, values, strict=True))
        for column, convert in self.converters.items():
            if column in row:
                try:
                    row[column] = convert(row[column])
                except Exception as exc:  # noqa: BLE001 -- any converter failure rejects the row
                    raise _Reject(
                        f"column {column!r}: {type(exc).__name__}: {exc}"
                    ) from None
        return self._event(row, row)
