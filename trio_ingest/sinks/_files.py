"""The JSON Lines sink: one JSON object per line, appended and flushed per batch."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import IO, Any, Literal

import anyio

from .._errors import ConfigError, NotJsonError, SinkError
from .._event import DeadLetter, Event
from .._json import dumps, dumps_record, loads
from ._base import Sink, columns

log = logging.getLogger("trio_ingest.sinks")

_TAIL_CHUNK = 64 * 1024

__all__ = ("JsonLines",)


class JsonLines(Sink):
    """Appends each event to a file as one line of JSON.

    A line is ``event.to_dict()`` (``id``, ``key``, ``event_time``,
    ``headers``, ``payload``), except for dead letters (events whose payload
    is a :class:`~trio_ingest.DeadLetter`), which are written as the record
    itself: ``node``, ``error_type``, ``error``, ``attempts``, ``time`` and
    the failed ``event``. That makes it the natural dead-letter sink; a part
    of a dead letter that JSON cannot hold (NaN, an unknown object) is written
    as text (``"nan"``, its ``repr``), so recording a failure never fails.
    A plain event whose payload is not JSON (NaN or infinity anywhere in it, or
    a type JSON has no form for) fails with
    :class:`~trio_ingest.NotJsonError` naming the field, and is dead-lettered.
    Lines are compact UTF-8 JSON (one encoder for every sink, orjson).

    Every batch is written with one ``write``, then flushed; with
    ``fsync="batch"`` (the default) it is also fsync'd before ``write_batch``
    returns, so an acknowledged event survives a power loss. With
    ``fsync="never"`` it survives a crash of the process but not of the
    machine, and writes are much cheaper. If a crash tore the last line (a
    ``kill -9`` in the middle of a write), the next open cuts that partial line
    off: its events were never acknowledged, so they are written again, and
    readers only ever see whole lines. A last line that lacks only its newline
    but is whole JSON (a file written by something else) is kept and ended.

    Args:
        path: The file (created if missing, appended to otherwise).
        fsync: ``"batch"`` or ``"never"``, see above.
        default: Called with an object of a type JSON has no form for, in a
            plain event; returns something JSON-ready (as ``json.dumps``'s
            ``default``). ``None``: such an event fails and is dead-lettered.
        **options: ``name``, ``retry``, ``workers``, ``max_batch``, ...: see
            :class:`~trio_ingest.Sink`.

    Attributes:
        lines: Lines written by this sink.

    Raises:
        ConfigError: An argument is invalid.
    """

    name = "jsonlines"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync: Literal["batch", "never"] = "batch",
        default: Callable[[Any], Any] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if not isinstance(path, str | os.PathLike) or not os.fspath(path):
            raise ConfigError(f"'path' must be a file path: {path!r}")
        if fsync not in ("batch", "never"):
            raise ConfigError(f"'fsync' must be 'batch' or 'never': {fsync!r}")
        if default is not None and not callable(default):
            raise ConfigError(f"'default' must be callable or None: {default!r}")
        self.path = os.fspath(path)
        self.fsync = fsync
        self.default = default
        self.lines = 0
        self._file: IO[bytes] | None = None
        self._limiter: anyio.CapacityLimiter | None = None

    def __repr__(self) -> str:
        return f"<JsonLines {self.name!r} {self.path!r}>"

    async def open(self) -> None:
        """Open the file for appending.

        Raises:
            SinkError: The file cannot be created or written.
        """
        self._limiter = anyio.CapacityLimiter(1)
        await anyio.to_thread.run_sync(self._open_sync, limiter=self._limiter)

    def _open_sync(self) -> None:
        try:
            f = open(self.path, "a+b")  # closed by aclose()
        except OSError as exc:
            raise SinkError(f"cannot open {self.path!r} for appending: {exc.strerror}") from exc
        try:
            _mend_tail(f, self.path)
        except OSError as exc:
            f.close()
            raise SinkError(f"cannot write {self.path!r}: {exc.strerror}") from exc
        self._file = f

    async def write_batch(self, events: Sequence[Event]) -> None:
        """Append one line per event, flush (and fsync, by default).

        Raises:
            PermanentError: A plain event's payload is not JSON-serialisable.
            OSError: The file could not be written (disk full...).
        """
        if self._limiter is None:
            raise SinkError(f"{self.name!r}: write_batch() before open()")
        written = await anyio.to_thread.run_sync(
            self._write_sync, events, limiter=self._limiter, abandon_on_cancel=True
        )
        self.lines += written

    def _write_sync(self, events: Sequence[Event]) -> int:
        f = self._file
        if f is None:
            raise SinkError(f"{self.name!r} is closed")
        cols = columns(events)
        default = self.default
        lines = []
        for ident, payload, key, event_time, headers in zip(
            cols.ids, cols.payloads, cols.keys, cols.event_times, cols.headers, strict=True
        ):
            if payload.__class__ is DeadLetter:
                lines.append(dumps_record(payload))
                continue
            line = {
                "id": ident,
                "key": key,
                "event_time": event_time,
                "headers": headers if headers.__class__ is dict else dict(headers),
                "payload": payload,
            }
            try:
                lines.append(dumps(line, default=default))
            except NotJsonError:
                dumps(payload, what=f"payload of event {ident!r}", default=default)
                raise  # the key or a header, not the payload
        lines.append(b"")
        f.write(b"\n".join(lines))
        f.flush()
        if self.fsync == "batch":
            os.fsync(f.fileno())
        return len(cols.ids)

    async def aclose(self) -> None:
        """Close the file (after the write under way, if any); idempotent."""
        f, self._file = self._file, None
        if f is None:
            return
        if self._limiter is not None:
            await anyio.to_thread.run_sync(f.close, limiter=self._limiter)
        else:
            f.close()


def _mend_tail(f: IO[bytes], path: str) -> None:
    """End the file on a whole line: cut a torn last line off, or end a whole one."""
    size = f.seek(0, os.SEEK_END)
    if not size:
        return
    f.seek(size - 1)
    if f.read(1) == b"\n":
        return
    start = size  # where the last line begins: after the last newline before the end
    while start > 0:
        lo = max(0, start - _TAIL_CHUNK)
        f.seek(lo)
        at = f.read(start - lo).rfind(b"\n")
        if at >= 0:
            start = lo + at + 1
            break
        start = lo
    f.seek(start)
    tail = f.read(size - start)
    try:
        loads(tail)
    except ValueError:
        f.truncate(start)  # torn by a crash mid-write: never acknowledged, written again
        log.warning("%s: cut off a torn last line (%d bytes) left by a crash", path, len(tail))
    else:
        f.seek(size)
        f.write(b"\n")  # whole, only unterminated: keep it, start on a fresh line
    f.flush()
