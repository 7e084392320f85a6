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
import io
import json
import logging
import math
import os
import re
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

import anyio
import attrs

from .._errors import ConfigError, SourceError
from .._event import DeadLetter, Event
from ._base import Read, Source
from ._input import (
    FINGERPRINT_BYTES,
    STDIN,
    Input,
    file_identity,
    fingerprint,
    open_input,
    tail_digest,
)

__all__ = ("CSV", "JsonLines", "checkpoint_of", "read_checkpoint", "write_checkpoint")

log = logging.getLogger("trio_ingest.sources.files")

#: ``DeadLetter.error_type`` of every line a file source rejects.
MALFORMED = "MalformedLine"
_CHECKPOINT_VERSION = 2
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


class _Position(int):
    """A byte offset that knows the file it belongs to: what a commit stores.

    An ``int`` (the offset), so the runtime and reports treat it as one, with
    the file's identity at the moment it was read: inode, a digest of its
    first bytes and of the bytes just before the offset. A position read from
    a file that was rotated away commits under *that* file's identity, never
    under the new file's.
    """

    line: int
    file: str
    device: int | None
    inode: int | None
    fingerprint: str
    tail: str | None
    generation: int

    def __new__(cls, offset: int, *, line: int, file: str, device: int | None,
                inode: int | None, fingerprint: str, tail: str | None,
                generation: int) -> _Position:
        self = super().__new__(cls, offset)
        self.line = line
        self.file = file
        self.device = device
        self.inode = inode
        self.fingerprint = fingerprint
        self.tail = tail
        self.generation = generation
        return self

    def checkpoint(self, destination: str | None) -> dict[str, Any]:
        return {
            "version": _CHECKPOINT_VERSION,
            "file": self.file,
            "destination": destination,
            "offset": int(self),
            "line": self.line,
            "fingerprint": self.fingerprint,
            "tail": self.tail,
            "device": self.device,
            "inode": self.inode,
            "time": time.time(),
        }


@attrs.define(slots=True)
class _Chunk:
    events: list[Event]
    rejected: list[DeadLetter]
    offset: int  # byte offset after the last consumed line
    line: int  # physical lines consumed so far
    records: int  # records consumed (events + rejected)
    restarted: bool = False  # the file was truncated or rewritten: read again from 0
    position: _Position | None = None
    copy: Input | None = None  # where the lines not yet read went (copy-truncate)


class _Reject(Exception):
    """A record that cannot become an event; the message is the reason."""


class _Header(_Reject):
    """The CSV header row was read: a record, but not an event."""


class _FileSource(Source):
    """Reads records, line by line, from a file; subclasses parse one record."""

    _kind = "file"
    #: Whether a record may span lines (CSV quotes): then a record that does not
    #: parse as a whole spoils only its first line, and reading goes on after it.
    _multiline = False

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        checkpoint: str | os.PathLike[str] | None = None,
        destination: str | None = None,
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
            raise ConfigError(f"'path' must be a file path or '-' (stdin): {path!r}")
        if checkpoint is not None and (
            not isinstance(checkpoint, str | os.PathLike) or not os.fspath(checkpoint)
        ):
            raise ConfigError(f"'checkpoint' must be a file path or None: {checkpoint!r}")
        if destination is not None and (not isinstance(destination, str) or not destination):
            raise ConfigError(f"'destination' must be a non-empty str or None: {destination!r}")
        stdin = os.fspath(path) == STDIN
        if stdin and checkpoint is not None:
            raise ConfigError("'checkpoint' must be None when reading stdin ('-'): "
                              "a pipe cannot be resumed")
        if stdin and follow:
            raise ConfigError("'follow' must be False when reading stdin ('-'): "
                              "stdin is read to its end")
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
        self.is_stdin = stdin
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.destination = destination
        self.follow = bool(follow)
        self.poll_interval = float(poll_interval)
        self.id_field = id_field
        self.key_field = key_field
        self.time_field = time_field
        self.max_line_bytes = max_line_bytes
        self.rate = rate
        self.commit_interval = float(commit_interval)
        self.name = name or ("stdin" if stdin else self._kind)
        self.name_given = name is not None
        #: Byte offset just past the last line read (what a read has reached).
        self.position = 0
        #: The last offset committed (persisted when there is a checkpoint file).
        self.committed: int | None = None
        self._line = 0
        self._input: Input | None = None
        self._compression = "none"
        self._at: _Position | None = None  # where the next read starts, with its identity
        self._generation = 0
        self._rotation_seen = False
        self._limiter: anyio.CapacityLimiter | None = None
        self._next_due: float | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {os.fspath(self.path)!r}>"

    @property
    def line(self) -> int:
        """Physical lines read so far (counting from the start of the file)."""
        return self._line

    @property
    def compression(self) -> str:
        """How the open input is compressed: ``"none"``, ``"gzip"`` or ``"zstd"``."""
        return self._compression

    @property
    def _display(self) -> str:
        return "<stdin>" if self.is_stdin else os.fspath(self.path)

    # -- opening ------------------------------------------------------------------
    async def open(self) -> None:
        """Open the file and seek to the checkpointed offset.

        Raises:
            SourceError: The file cannot be opened; the checkpoint is unreadable,
                belongs to another file or destination, has no fingerprint, or
                does not match the file (it was truncated or replaced); or a
                compressed file is to be followed.
        """
        self._limiter = anyio.CapacityLimiter(1)
        self._next_due = None
        await anyio.to_thread.run_sync(self._open_sync, limiter=self._limiter)

    def _open_sync(self) -> None:
        inp = open_input(self.path)
        try:
            if self.follow and not inp.plain:
                raise SourceError(f"{self._display!r} is {inp.compression}-compressed: "
                                  "only a plain file can be followed")
            self._generation = 0
            self._rotation_seen = False
            at = self._position(inp, 0, 0)
            if self.checkpoint is not None:
                data = read_checkpoint(self.checkpoint)
                if data is not None:
                    inp, at = self._resume(inp, data)
            self._prepare(inp)
        except BaseException:
            inp.close()
            raise
        self._input = inp
        self._compression = inp.compression
        self._at = at
        self.position, self._line = int(at), at.line
        self.committed = int(at) if int(at) else None
        if at:
            log.info("%s: resuming %s at byte %d (line %d)", self.name, at.file, int(at),
                     at.line)

    def _position(self, inp: Input, offset: int, line: int,
                  known: _Position | None = None) -> _Position:
        """The identity of ``offset`` in ``inp`` (reads the file's head and tail bytes)."""
        if (known is not None and int(known) >= FINGERPRINT_BYTES
                and known.generation == self._generation):
            head = known.fingerprint  # the first bytes cannot have changed unnoticed
        elif inp.is_stdin:
            head = _EMPTY_DIGEST  # a pipe is read once: nothing to recognise it by
        else:
            head = fingerprint(inp.stream, offset)
        tail = tail_digest(inp.stream, offset) if inp.plain else None
        file = STDIN if inp.is_stdin else os.path.abspath(self.path)
        return _Position(offset, line=line, file=file, device=inp.device, inode=inp.inode,
                         fingerprint=head, tail=tail, generation=self._generation)

    def _refuse(self, problem: str) -> NoReturn:
        raise SourceError(
            f"checkpoint {os.fspath(self.checkpoint or '')!r} {problem}; reset it to start "
            "from the beginning (trio-ingest ingest --reset, trio-ingest checkpoint reset, or "
            "delete the file)"
        )

    def _resume(self, inp: Input, data: Mapping[str, Any]) -> tuple[Input, _Position]:
        stored_dest = data.get("destination")
        if stored_dest != self.destination:
            self._refuse(f"belongs to destination {stored_dest or '(none named)'!r}, not "
                         f"{self.destination or '(none named)'!r}: give each (file, "
                         "destination) pair its own checkpoint")
        stored_file = data.get("file")
        if isinstance(stored_file, str) and os.path.isabs(stored_file) and (
                stored_file != os.path.abspath(self.path)):
            self._refuse(f"belongs to file {stored_file!r}, not {os.path.abspath(self.path)!r}")
        offset, line = data["offset"], data.get("line", 0)
        expected = data.get("fingerprint")
        if offset == 0:
            return inp, self._position(inp, 0, 0)  # the start needs no proof
        if not isinstance(expected, str):
            self._refuse("holds no fingerprint of the file, so it cannot be trusted to "
                         "resume it")
        match = self._matches(inp, offset, expected, data.get("tail"))
        if match is None:
            return inp, self._position(inp, offset, line)
        if self.follow:
            old = self._find_previous(offset, expected, data.get("tail"), data.get("device"),
                                      data.get("inode"))
            if old is not None:
                log.warning("%s: %s was rotated while stopped; finishing the old file from "
                            "byte %d first", self.name, self.path, offset)
                inp.close()
                self._rotation_seen = True
                return old, self._position(old, offset, line)
            log.warning("%s: %s does not match checkpoint %s (%s); reading it from the start",
                        self.name, self.path, self.checkpoint, match)
            return inp, self._position(inp, 0, 0)
        size = inp.size()
        if size is not None and offset > size:
            self._refuse(f"is at byte {offset} but {self._display!r} has {size} bytes: the "
                         "file was truncated or replaced")
        self._refuse(f"does not match {self._display!r}: the file changed since checkpoint "
                     f"was written ({match})")

    def _matches(self, inp: Input, offset: int, expected: str, tail: object) -> str | None:
        """None when ``inp`` holds what the checkpoint saw; else what differs."""
        size = inp.size()
        if size is not None and offset > size:
            return f"it has {size} bytes, fewer than the checkpoint's {offset}"
        if fingerprint(inp.stream, offset) != expected:
            return "its first bytes differ"
        if isinstance(tail, str) and inp.plain and tail_digest(inp.stream, offset) != tail:
            return f"the bytes before byte {offset} differ"
        return None

    def _find_previous(self, offset: int, expected: str, tail: object, device: object,
                       inode: object) -> Input | None:
        """The rotated-away file a position was read from: renamed (same inode) or copied.

        Looks among the files next to ``path`` whose name starts with its name
        (``in.log.1``, ``in.log-20261201``), for one holding the position's
        content: the same first bytes and the same bytes before ``offset``.
        """
        candidates: list[tuple[bool, str]] = []
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.path.parent or "."):
                if not entry.name.startswith(self.path.name) or entry.name == self.path.name:
                    continue
                st = entry.stat(follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode) or st.st_size < offset:
                    continue
                same = st.st_ino == inode and st.st_dev == device
                candidates.append((not same, entry.path))  # the renamed file first
        for _rank, candidate in sorted(candidates):
            try:
                old = open_input(candidate)
            except SourceError:
                continue
            if old.plain and self._matches(old, offset, expected, tail) is None:
                return old
            old.close()
        return None

    def _prepare(self, inp: Input) -> None:
        """Subclass hook run when a file is opened (at open, and after a rotation)."""

    # -- reading ------------------------------------------------------------------
    async def read(self, max_events: int) -> Read | None:
        """Read up to ``max_events`` lines; in ``follow`` mode wait for more at the end.

        Returns ``None`` at the end of the file (never, when following).
        Malformed lines come back in ``Read.rejected`` with their reason.
        When following, a file renamed away (rotated) is read to its end, and
        given one more poll for a writer that still appends to it, before the
        new file at ``path`` is read from its start; a file truncated or
        rewritten in place (copy-truncate) is read again from its start. Both
        are recognised by content (inode, first bytes, the bytes before the
        read position), not only by size.
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
                self._read_sync, self._at, max_events, not self.follow, limiter=limiter,
                # a read of stdin may wait for a writer forever: a stop must not wait with it
                # (stdin cannot be resumed anyway, so what that thread reads goes with it)
                abandon_on_cancel=self.is_stdin,
            )
            if chunk.restarted:
                self._restart(chunk.copy)
                continue
            if chunk.records or chunk.offset != self.position:
                return self._take(chunk)
            if not self.follow:
                return None
            # at the end of a followed file: was it renamed away (rotated)?
            fresh = await anyio.to_thread.run_sync(self._rotated_sync, limiter=limiter)
            if fresh is not None:
                if not self._rotation_seen:
                    # a writer may still append to the renamed file: give it one more poll
                    fresh.close()
                    self._rotation_seen = True
                else:
                    last = await anyio.to_thread.run_sync(
                        self._read_sync, self._at, max_events, True, limiter=limiter,
                    )
                    if last.records or last.offset != self.position:
                        fresh.close()
                        return self._take(last)
                    self._switch(fresh)
                    continue
            await anyio.sleep(self.poll_interval)

    def _take(self, chunk: _Chunk) -> Read:
        assert chunk.position is not None
        self._at = chunk.position
        self.position, self._line = chunk.offset, chunk.line
        if self.rate is not None and self._next_due is not None:
            self._next_due += chunk.records / self.rate
        return Read(chunk.events, chunk.position, chunk.rejected)

    def _restart(self, copy: Input | None) -> None:
        # truncated (copy-truncate rotation) or rewritten in place: the same file, anew
        assert self._input is not None
        if copy is not None:
            log.warning("%s: %s was truncated; its copy is read to its end first",
                        self.name, self.path)
            # the copy goes on from the same position; at its end the file at path (a
            # different inode) counts as its successor, read from its start
            self._input.close()
            self._input = copy
            self._rotation_seen = True
            return
        log.warning("%s: %s was truncated or rewritten; reading it again from the start",
                    self.name, self.path)
        self._begin(self._input)

    def _switch(self, fresh: Input) -> None:
        log.info("%s: %s was rotated; the old file was read to its end, now reading the "
                 "new one", self.name, self.path)
        old, self._input = self._input, fresh
        if old is not None:
            old.close()
        self._begin(fresh)

    def _begin(self, inp: Input) -> None:
        self._generation += 1
        self._rotation_seen = False
        self._prepare(inp)
        self._at = _Position(0, line=0, file=os.path.abspath(self.path), device=inp.device,
                             inode=inp.inode, fingerprint=_EMPTY_DIGEST, tail=_EMPTY_DIGEST,
                             generation=self._generation)
        self.position, self._line = 0, 0

    def _rotated_sync(self) -> Input | None:
        """A new file now at ``path`` when the open one was renamed away; else None."""
        inp = self._input
        if inp is None or not inp.plain:
            return None
        now = file_identity(self.path)
        if now is None or now == (inp.device, inp.inode):
            return None
        try:
            fresh = open_input(self.path)
        except SourceError:
            return None  # being recreated: try again at the next poll
        if (fresh.device, fresh.inode) == (inp.device, inp.inode):
            fresh.close()
            return None
        return fresh

    async def _pace(self, max_events: int) -> int:
        assert self.rate is not None
        now = anyio.current_time()
        if self._next_due is None or self._next_due < now - 1.0:
            self._next_due = now  # an idle spell earns at most a second of catching up
        if self._next_due > now:
            await anyio.sleep_until(self._next_due)
        # about ten reads a second, so a low rate does not come in bursts
        return max(1, min(max_events, int(self.rate / 10)))

    def _changed(self, inp: Input, at: _Position) -> str | None:
        """Whether the file under ``at`` was truncated or rewritten since it was read."""
        if not inp.plain or not at:
            return None
        size = inp.size()
        if size is not None and size < at:
            return f"it shrank to {size} bytes below the read position {int(at)}"
        if at.tail is not None and tail_digest(inp.stream, at) != at.tail:
            return f"the bytes before the read position {int(at)} changed"
        if fingerprint(inp.stream, at) != at.fingerprint:
            return "its first bytes changed"
        return None

    def _read_sync(self, at: _Position | None, max_records: int, final: bool) -> _Chunk:
        inp = self._input
        if inp is None or at is None:
            raise SourceError(f"{self.name!r} is closed")
        offset, line = int(at), at.line
        changed = self._changed(inp, at)
        if changed is not None:
            if self.follow:
                return self._restarted(at)  # copy-truncate: the unread lines are in the copy
            raise SourceError(
                f"{self._display!r} was truncated or replaced while being read: {changed}"
            )
        chunk = self._scan(inp.stream, offset, line, max_records, final)
        position = self._position(inp, chunk.offset, chunk.line, at)
        # checked after the new position's digests are taken, not before: a file rewritten
        # while they were read gives a position whose head and tail belong to different
        # contents, which no copy matches later (its unread lines would be skipped). At byte
        # 0 nothing was read before to check: the new position is checked instead
        if self.follow and self._changed(inp, at if at else position) is not None:
            if not at:
                return _Chunk([], [], offset, line, 0)  # read the file again
            return self._restarted(at)  # rewritten while this scan ran
        chunk.position = position
        return chunk

    def _restarted(self, at: _Position) -> _Chunk:
        """The file under ``at`` was truncated or rewritten: go on in its copy, if one exists."""
        copy = self._find_previous(int(at), at.fingerprint, at.tail, None, None)
        return _Chunk([], [], int(at), at.line, 0, restarted=True, copy=copy)

    def _scan(self, f: IO[bytes], offset: int, line: int, max_records: int,
              final: bool) -> _Chunk:
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
            first_end = -1  # offset after the record's first physical line
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
                        if first_end < 0:
                            first_end = offset
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
                    if first_end < 0:
                        first_end = offset
                    # an oversize record ends with the line where it passed the limit
                    if oversize or self._record_complete(record):
                        complete = True
                        break
            multiline = self._multiline and 0 <= first_end < offset
            if not complete:
                if multiline and (final or self._rest_is_whole(record[first_end - start_offset:])):
                    # a quote that never closes spoils its own line only; read on after it
                    offset, line = first_end, start_line + 1
                    first = record[: first_end - start_offset]
                    rejected.append(self._reject(first, line, start_offset,
                                                 self._unterminated_reason(first)))
                    records += 1
                    f.seek(offset)
                    continue
                if final and record:
                    reason = self._unterminated_reason(record)
                    rejected.append(self._reject(record, start_line + 1, start_offset, reason))
                    records += 1
                else:
                    offset, line = start_offset, start_line  # read it again once it is whole
                break
            if oversize and not multiline:
                reason = f"line longer than max_line_bytes={limit}"
                rejected.append(self._reject(record, start_line + 1, start_offset, reason))
                records += 1
                continue
            content = _strip_newline(record)
            if not content.strip():
                continue  # blank lines are not records
            try:
                if oversize:
                    raise _Reject(f"record longer than max_line_bytes={limit}")
                event = self._parse(content, start_line + 1, start_offset)
            except _Header:
                records += 1
                continue
            except _Reject as why:
                if multiline:
                    # the lines after the first may be records of their own: spoil only the
                    # first one (where the quote opened) and read on from the next
                    offset, line = first_end, start_line + 1
                    first = record[: first_end - start_offset]
                    reason = f"{self._unterminated_reason(first)} ({why})"
                    rejected.append(self._reject(first, line, start_offset, reason))
                    records += 1
                    f.seek(offset)
                    continue
                rejected.append(self._reject(record, start_line + 1, start_offset, str(why)))
            else:
                events.append(event)
            records += 1
        return _Chunk(events, rejected, offset, line, records)

    def _record_complete(self, record: bytes) -> bool:
        """Whether ``record`` (whole lines) is a full record; CSV quotes span lines."""
        return True

    def _rest_is_whole(self, rest: bytes) -> bool:
        """Whether the lines after an open record's first parse as records of their own."""
        return False

    def _unterminated_reason(self, record: bytes) -> str:
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
        if self.id_field not in record:
            raise _Reject(f"missing id field {self.id_field!r}")
        ident = record[self.id_field]
        if ident is None:
            raise _Reject(f"id field {self.id_field!r} is null")
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
        if self.time_field not in record:
            raise _Reject(f"missing time field {self.time_field!r}")
        value = record[self.time_field]
        if value is None:
            raise _Reject(f"time field {self.time_field!r} is null")
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise _Reject(f"time field {self.time_field!r} is not finite: {value!r}")
            return float(value)
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
            else:
                if math.isfinite(number):
                    return number
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
        where = f"{self._display}:{line_no}"
        event = Event(
            id=where,
            payload=text,
            headers={"file": self._display, "line": str(line_no), "offset": str(offset)},
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

        The checkpoint names the file that offset was read from (its inode and
        content digests) and the destination, so a position read before a
        rotation never resumes inside the file that replaced it.

        Raises:
            SourceError: The checkpoint could not be written; the previous one
                is intact.
        """
        if not offsets:
            return
        at = offsets[-1]
        self.committed = int(at)
        if self.checkpoint is None or not isinstance(at, _Position):
            return
        try:
            await anyio.to_thread.run_sync(write_checkpoint, self.checkpoint,
                                           at.checkpoint(self.destination))
        except OSError as exc:
            raise SourceError(
                f"cannot write checkpoint {os.fspath(self.checkpoint)!r}: {exc}"
            ) from exc

    # -- a durable state store ---------------------------------------------------
    @property
    def seekable(self) -> bool:  # type: ignore[override]  # a pipe cannot be resumed
        return not self.is_stdin

    def offset_state(self, offset: Any) -> Any:
        """The position with the file's identity, as the checkpoint file would hold it."""
        if not isinstance(offset, _Position):
            return {"offset": int(offset), "line": 0}
        data = offset.checkpoint(self.destination)
        del data["time"]  # the store says when it was written
        return data

    async def seek(self, state: Any) -> None:
        """Resume at a position a state store kept (it overrides the checkpoint file).

        Raises:
            SourceError: The position is not one of this file (or the file changed).
        """
        limiter = self._limiter
        if limiter is None:
            raise SourceError(f"{self.name!r}: seek() before open()")
        await anyio.to_thread.run_sync(self._seek_sync, state, limiter=limiter)

    def _seek_sync(self, state: Any) -> None:
        inp = self._input
        if inp is None:
            raise SourceError(f"{self.name!r} is closed")
        if (not isinstance(state, Mapping) or type(state.get("offset")) is not int
                or type(state.get("line", 0)) is not int):
            raise SourceError(f"{self.name!r}: the state store's offset is not a file "
                              f"position: {state!r}")
        try:
            inp, at = self._resume(inp, state)
        except SourceError as exc:
            raise SourceError(f"{self.name!r}: cannot resume at the state store's offset: "
                              f"{exc}") from None
        if inp is not self._input:
            self._input = inp
            self._compression = inp.compression
        self._at = at
        self.position, self._line = int(at), at.line
        self.committed = int(at) if int(at) else None
        log.info("%s: resuming %s at byte %d (line %d) from the state store", self.name,
                 at.file, int(at), at.line)

    async def aclose(self) -> None:
        """Close the file; idempotent."""
        inp, self._input = self._input, None
        if inp is not None:
            inp.close()


_EMPTY_DIGEST = hashlib.sha256(b"").hexdigest()


def checkpoint_of(
    path: str | os.PathLike[str], offset: int, line: int, *, destination: str | None = None
) -> dict[str, Any]:
    """The checkpoint a file source would write at ``offset`` (line ``line``) of ``path``.

    For tools and tests that position a source by hand. Blocking.

    Raises:
        SourceError: The file cannot be opened.
    """
    inp = open_input(path)
    try:
        position = _Position(
            offset, line=line, file=os.path.abspath(path), device=inp.device, inode=inp.inode,
            fingerprint=fingerprint(inp.stream, offset),
            tail=tail_digest(inp.stream, offset) if inp.plain else None, generation=0,
        )
    finally:
        inp.close()
    return position.checkpoint(destination)


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
        id_field: The field holding the event's id.
        key_field: The field holding the event's key.
        time_field: The field holding the event's time.
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


#: The column types a CSV schema may name, and how an empty value reads (null).
COLUMN_TYPES = ("str", "int", "float", "bool", "json")
_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})
_INT = re.compile(r"-?(0|[1-9][0-9]*)")
_FLOAT = re.compile(r"-?([0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)([eE][-+]?[0-9]+)?")


def _convert(kind: str, value: str) -> Any:
    if kind == "str":
        return value
    if value == "":
        return None
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    if kind == "bool":
        low = value.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"not a boolean: {value[:40]!r}")
    return json.loads(value)


def infer_value(value: str) -> Any:
    """What a CSV value looks like: an int, a float, a boolean, or the string itself.

    Only plain forms count: ``"007"`` stays a string (a code, not a number),
    ``""`` stays ``""``.
    """
    if _INT.fullmatch(value):
        return int(value)
    if _FLOAT.fullmatch(value):
        return float(value)
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    return value


def parse_schema(text: str) -> dict[str, str]:
    """Read ``name:type,name:type`` (types: str, int, float, bool, json).

    Raises:
        ConfigError: An entry is not ``name:type`` or names an unknown type.
    """
    schema: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, kind = part.rpartition(":")
        name, kind = name.strip(), kind.strip().lower()
        if not sep or not name:
            raise ConfigError(f"'schema' entries must be NAME:TYPE: {part!r}")
        if kind not in COLUMN_TYPES:
            raise ConfigError(f"'schema' type of column {name!r} must be one of "
                              f"{', '.join(COLUMN_TYPES)}: {kind!r}")
        schema[name] = kind
    if not schema:
        raise ConfigError(f"'schema' must name at least one column: {text!r}")
    return schema


def _ends_in_quote(data: bytes, quote: bytes, delimiter: bytes) -> bool:
    """Whether ``data`` ends inside a quoted field, read as Python's ``csv`` module does.

    A quote opens a quoted field only at the start of a field; anywhere else
    (``5" screen``) it is data. Inside a quoted field a doubled quote is a
    quote; a single one closes the field.
    """
    i = 0
    width = len(delimiter)
    while True:
        p = data.find(quote, i)
        if p < 0:
            return False
        before = data[p - width:p] if p >= width else b""
        if p == 0 or before == delimiter or data[p - 1:p] in (b"\n", b"\r"):
            j = p + len(quote)
            while True:
                c = data.find(quote, j)
                if c < 0:
                    return True
                if data[c + len(quote):c + 2 * len(quote)] == quote:
                    j = c + 2 * len(quote)
                    continue
                i = c + len(quote)
                break
        else:
            i = p + len(quote)


class CSV(_FileSource):
    """Events from a CSV file with a header row.

    Each row becomes an event whose payload is a dict ``{column: value}``
    (strings, or typed by ``schema`` or ``converters``), with the id, key and
    event time taken from the named columns as for :class:`JsonLines`. Quoted
    fields may span lines. A quote inside an unquoted field (``5" screen``) is
    data, as Python's ``csv`` module reads it. A quoted field that never closes
    spoils only the line where it opened (dead-lettered with that line's
    number); reading goes on with the next line. Rows that cannot become
    events (wrong number of fields, bad quoting, invalid UTF-8, a missing or
    empty id, a value of the wrong type, a converter that raised, a row longer
    than ``max_line_bytes``) are dead-lettered with their reason and line
    number; blank lines are skipped.

    The arguments ``path``, ``checkpoint``, ``destination``, ``follow``,
    ``poll_interval``, ``id_field``, ``key_field``, ``time_field``,
    ``max_line_bytes``, ``rate`` and ``commit_interval`` are as for :class:`JsonLines`.

    Args:
        fieldnames: Column names; ``None`` reads them from the first row.
        delimiter: The field separator.
        quotechar: The quote character (a quote inside a quoted field is doubled).
        schema: ``{column: type}`` with types ``str``, ``int``, ``float``,
            ``bool``, ``json`` (an empty value is null), or ``"infer"``: every
            value that looks like an integer, a float or a boolean becomes one.
        converters: ``{column: function}`` applied to a column's string value
            (after ``schema``); a failure dead-letters the row with the error.
        **options: The arguments shared with :class:`JsonLines` (above), and
            ``name``: the node name (default ``"csv"``).

    Raises:
        ConfigError: An argument is invalid.
    """

    _kind = "csv"
    _multiline = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fieldnames: Sequence[str] | None = None,
        delimiter: str = ",",
        quotechar: str = '"',
        schema: Mapping[str, str] | str | None = None,
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
        infer = False
        types: dict[str, str] = {}
        if isinstance(schema, str):
            if schema == "infer":
                infer = True
            else:
                types = parse_schema(schema)
        elif schema is not None:
            for column, kind in dict(schema).items():
                if kind not in COLUMN_TYPES:
                    raise ConfigError(f"'schema' type of column {column!r} must be one of "
                                      f"{', '.join(COLUMN_TYPES)}: {kind!r}")
                types[column] = kind
        converters = dict(converters or {})
        for column, fn in converters.items():
            if not callable(fn):
                raise ConfigError(f"converter of column {column!r} is not callable: {fn!r}")
        self.fieldnames: list[str] | None = fieldnames
        self.delimiter = delimiter
        self.quotechar = quotechar
        self.schema: dict[str, str] | str | None = "infer" if infer else (types or None)
        self.converters = converters
        self._types = types
        self._infer = infer
        self._given_fieldnames = fieldnames
        self._quote = quotechar.encode()
        self._delim = delimiter.encode()
        self._header_end = 0

    def _prepare(self, inp: Input) -> None:
        self.fieldnames = self._given_fieldnames
        self._header_end = 0

    def _record_complete(self, record: bytes) -> bool:
        return self._quote not in record or not _ends_in_quote(record, self._quote, self._delim)

    def _rest_is_whole(self, rest: bytes) -> bool:
        # an open record's later lines that read as whole rows of the right width mean the
        # quote in its first line is the mistake, not a field that spans lines
        if not rest.strip() or _ends_in_quote(rest, self._quote, self._delim):
            return False
        try:
            rows = list(csv.reader(io.StringIO(rest.decode("utf-8", errors="replace")),
                                   delimiter=self.delimiter, quotechar=self.quotechar,
                                   strict=True))
        except csv.Error:
            return False
        width = len(self.fieldnames) if self.fieldnames else None
        return all(len(r) == width for r in rows if r) if width else bool(rows)

    def _unterminated_reason(self, record: bytes) -> str:
        column = _open_quote_column(record, self._quote, self._delim)
        where = f" opened at column {column}" if column else ""
        return f"unterminated quoted field{where}"

    def _scan(self, f: IO[bytes], offset: int, line: int, max_records: int,
              final: bool) -> _Chunk:
        if self.fieldnames is None:
            header = super()._scan(f, 0, 0, 1, final)
            if header.records == 0 and not header.rejected:
                return _Chunk([], [], offset, line, 0)
            if header.rejected or self.fieldnames is None:
                reason = header.rejected[0].error if header.rejected else "no header row"
                raise SourceError(f"{self._display!r}: cannot read the header: {reason}")
            self._header_end = header.offset
            if offset < header.offset:
                offset, line = header.offset, header.line
        return super()._scan(f, offset, line, max_records, final)

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
        if self._infer:
            row = {k: infer_value(v) for k, v in row.items()}
        for column, kind in self._types.items():
            if column in row:
                try:
                    row[column] = _convert(kind, row[column])
                except ValueError:
                    raise _Reject(f"column {column!r}: expected {kind}, got "
                                  f"{row[column][:40]!r}") from None
        for column, convert in self.converters.items():
            if column in row:
                try:
                    row[column] = convert(row[column])
                except Exception as exc:  # noqa: BLE001 -- any converter failure rejects the row
                    raise _Reject(
                        f"column {column!r}: {type(exc).__name__}: {exc}"
                    ) from None
        return self._event(row, row)


def _open_quote_column(record: bytes, quote: bytes, delimiter: bytes) -> int | None:
    """1-based column of the quote that leaves the first line of ``record`` open."""
    first = record.split(b"\n", 1)[0]
    for column in range(len(first)):
        if first[column:column + len(quote)] == quote and (
                column == 0 or first[column - len(delimiter):column] == delimiter) and \
                _ends_in_quote(first[column:], quote, delimiter):
            return len(first[:column].decode("utf-8", errors="replace")) + 1
    return None
