"""Rolling files for data-lake sinks: content-derived names, Hive partitions, atomic commits.

Shared by the file sinks that buffer rows and write one file per partition on
``flush()`` (``sinks.Parquet``; a rolling ``sinks.JsonLines`` can use the same
pieces). The pieces, in the order a flush uses them:

- :func:`date_segment` / :func:`hive_segment`: the partition folder of a row,
  Hive style (``date=2026-11-29``, ``city=Oslo``), readable by pyarrow.dataset,
  DuckDB, Spark and Hive as a partition column.
- :func:`ids_digest` and :func:`file_name`: a file's name derives from the set
  of event ids it holds, so a replay of the same events rewrites the same file
  instead of adding a duplicate next to it.
- :func:`commit_file`: write to a hidden temporary name in the partition
  folder, fsync, ``os.replace`` onto the final name, fsync the folder: a reader
  sees the whole file or no file. Names starting with ``.`` are skipped by
  pyarrow.dataset, Spark and Hive, so even a leftover temporary file is never
  read as data.
- :func:`remove_stale_temp` (at open): delete temporary files a crash left.
- :class:`RecentIds`: the ids of the most recently committed files (loaded at
  open from the newest files), so a redelivery whose batching differs from the
  first delivery is still recognised and skipped.
- :class:`RollingBuffer` puts these together for line formats (JSON Lines,
  CSV): encoded rows per partition until ``flush()``, which commits one
  content-named file per partition. A rolling ``sinks.JsonLines`` is a
  ``buffered = True`` sink around one::

      async def open(self):
          self._buffer = RollingBuffer(self.path, suffix=".jsonl", fsync=True)
          await anyio.to_thread.run_sync(self._buffer.open, ids_of_jsonl)

      async def write_batch(self, events):
          fresh = self._buffer.fresh(events)           # drop redeliveries
          rows = [(partition_segment(e, self.partition_by), e.id,
                   (json.dumps(e.to_dict()) + "\n").encode()) for e in fresh]
          # encode every row first (raise PermanentError naming a bad event),
          # then add: a failing batch must leave nothing behind
          self._buffer.add(rows)

      async def flush(self):
          await anyio.to_thread.run_sync(self._buffer.flush)

  with ``ids_of_jsonl(path)`` yielding the ``"id"`` of each line of a file.

The functions that touch files block: call them from a worker thread.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import math
import os
import re
import secrets
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any
from urllib.parse import quote

__all__ = (
    "DEFAULT_PARTITION",
    "TEMP_SUFFIX",
    "RecentIds",
    "RollingBuffer",
    "commit_file",
    "data_files",
    "date_segment",
    "digest_joined",
    "file_name",
    "hive_segment",
    "ids_digest",
    "partition_segment",
    "remove_stale_temp",
)

log = logging.getLogger("trio_ingest.sinks.rolling")

#: Hive's folder name for a NULL partition value.
DEFAULT_PARTITION = "__HIVE_DEFAULT_PARTITION__"
#: Suffix of temporary files (which also start with ``.``: hidden from readers).
TEMP_SUFFIX = ".tmp"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.=+~-]")
_DAY = 86_400


# -- partitions ------------------------------------------------------------------------


def date_segment(event_time: float, name: str = "date") -> str:
    """The Hive folder of a row by its event time's UTC date: ``date=2026-11-29``.

    Raises:
        ValueError: ``event_time`` is not a finite number of seconds.
        OverflowError: It is out of the calendar's range.
    """
    day = datetime.date(1970, 1, 1) + datetime.timedelta(days=int(event_time // _DAY))
    return f"{name}={day.isoformat()}"


def hive_segment(name: str, value: object) -> str:
    """The Hive folder of a row by a field: ``city=Oslo`` (URI-escaped; NULL is Hive's default).

    pyarrow.dataset's Hive partitioning decodes the escapes (``segment_encoding="uri"``).
    """
    if value is None:
        return f"{name}={DEFAULT_PARTITION}"
    if isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    return f"{quote(name, safe='')}={quote(text, safe='')}"


def partition_segment(event: Any, partition_by: str | None) -> str:
    """The folder of ``event``: ``""`` (no partitioning), by ``"date"``, or by a payload field.

    Raises:
        ValueError: The event time is not a finite number (``"date"``), the
            payload is not a mapping or the field's value is not a scalar.
        OverflowError: The event time is out of the calendar's range.
    """
    if partition_by is None:
        return ""
    if partition_by == "date":
        t = event.event_time
        if not isinstance(t, int | float) or not math.isfinite(t):
            raise ValueError(f"event_time must be a finite number of seconds: {t!r}")
        return date_segment(t)
    payload = event.payload
    if not isinstance(payload, Mapping):
        raise ValueError(f"payload is a {type(payload).__name__}, not a mapping")
    value = payload.get(partition_by)
    if value is not None and not isinstance(value, str | int | float | bool):
        raise ValueError(f"partition field {partition_by!r} must be a scalar: {value!r}")
    return hive_segment(partition_by, value)


# -- names -----------------------------------------------------------------------------


def ids_digest(ids: Iterable[str]) -> str:
    """A digest of a *set* of ids: the same ids in any order give the same digest.

    Defined as BLAKE2b-64 of the sorted distinct ids joined with ``\\n``
    (UTF-8); :func:`digest_joined` takes that joined text when a caller built it
    faster (pyarrow sorts and joins in C++).
    """
    return digest_joined("\n".join(sorted(set(ids))).encode())


def digest_joined(joined: bytes | memoryview) -> str:
    """:func:`ids_digest` of ids already sorted (code point order), de-duplicated and joined."""
    return hashlib.blake2b(joined, digest_size=8).hexdigest()


def _safe(text: str, limit: int = 32) -> str:
    return _UNSAFE.sub("_", text)[:limit] or "_"


def file_name(first_id: str, last_id: str, count: int, digest: str, suffix: str) -> str:
    """``part-<first>-<last>-<count>-<digest><suffix>``: derived only from the ids held.

    ``first_id`` / ``last_id`` (the smallest and largest id, made file-name safe
    and cut to 32 characters) are there for people listing the folder; the
    digest of the whole id set makes the name unique to the content.
    """
    return f"part-{_safe(first_id)}-{_safe(last_id)}-{count}-{digest}{suffix}"


# -- committing ------------------------------------------------------------------------


def _fsync_path(path: Path, *, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ensure_dir(folder: Path, *, fsync: bool) -> None:
    if folder.is_dir():
        return
    missing = []
    probe = folder
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    folder.mkdir(parents=True, exist_ok=True)
    if fsync:
        for made in reversed(missing):
            _fsync_path(made.parent, directory=True)


def commit_file(final: Path, write: Callable[[Path], None], *, fsync: bool = True) -> None:
    """Make ``final`` appear complete or not at all.

    ``write(temp)`` writes the whole content to ``temp``, a hidden name next to
    ``final`` (``.<name>.<random>.tmp``); then the temporary file is fsynced,
    renamed onto ``final`` with ``os.replace`` (atomic on POSIX, replacing an
    existing file of the same name) and the folder fsynced so the rename
    survives a power cut. On any failure the temporary file is removed; after a
    crash it is left hidden, for :func:`remove_stale_temp`.

    Raises:
        OSError: The file system failed; ``final`` is unchanged.
        Exception: Whatever ``write`` raised; ``final`` is unchanged.
    """
    folder = final.parent
    _ensure_dir(folder, fsync=fsync)
    temp = folder / f".{final.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    try:
        write(temp)
        if fsync:
            _fsync_path(temp)
        os.replace(temp, final)
    except BaseException:
        try:
            temp.unlink(missing_ok=True)
        except OSError:  # pragma: no cover - the original error matters more
            log.warning("could not remove temporary file %s", temp, exc_info=True)
        raise
    if fsync:
        _fsync_path(folder, directory=True)


def _walk(root: Path) -> Iterator[tuple[Path, list[str]]]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
        yield Path(folder), files


def remove_stale_temp(root: Path, prefix: str = ".part-") -> list[Path]:
    """Delete temporary files (``<prefix>*.tmp``) a crashed writer left under ``root``.

    Only one writer may use ``root`` at a time: another writer's file in
    progress would be deleted too.
    """
    removed = []
    for folder, files in _walk(root):
        for name in files:
            if name.startswith(prefix) and name.endswith(TEMP_SUFFIX):
                path = folder / name
                try:
                    path.unlink()
                except FileNotFoundError:
                    continue
                removed.append(path)
                log.info("removed temporary file %s left by an interrupted write", path)
    return removed


def data_files(root: Path, suffix: str, prefix: str = "part-") -> list[Path]:
    """Committed data files under ``root`` (``<prefix>*<suffix>``), newest first."""
    found = [
        folder / name
        for folder, files in _walk(root)
        for name in files
        if name.startswith(prefix) and name.endswith(suffix)
    ]
    stamped = []
    for path in found:
        try:
            stamped.append((path.stat().st_mtime_ns, str(path), path))
        except FileNotFoundError:
            continue
    stamped.sort(reverse=True)
    return [path for _, _, path in stamped]


# -- recent ids --------------------------------------------------------------------------


class RecentIds:
    """The ids held by the most recently committed files, about ``limit`` of them.

    Ids are added a group at a time (the ids of one file, or of one flush) and
    groups are forgotten whole, oldest first; the newest group always stays.
    So membership means "this id is in one of the last few files". ``limit=0``
    keeps nothing. Lookups are a few set probes (one per group held).
    """

    __slots__ = ("_count", "_groups", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._groups: deque[AbstractSet[str]] = deque()
        self._count = 0

    def __contains__(self, ident: object) -> bool:
        return any(ident in group for group in self._groups)

    def __len__(self) -> int:
        return self._count

    def isdisjoint(self, ids: Iterable[str]) -> bool:
        """Whether none of ``ids`` is held (``ids`` is best a set)."""
        return all(group.isdisjoint(ids) for group in self._groups)

    def add(self, ids: Collection[str]) -> None:
        """Remember a group of ids just committed (newer than every group before).

        A set is kept as it is (do not change it afterwards); other collections
        are copied into one.
        """
        if self.limit <= 0 or not ids:
            return
        group = ids if isinstance(ids, set | frozenset) else set(ids)
        self._groups.append(group)
        self._count += len(group)
        while self._count > self.limit and len(self._groups) > 1:
            self._count -= len(self._groups.popleft())

    @property
    def full(self) -> bool:
        """Whether the window holds ``limit`` ids (loading older files would evict them)."""
        return self._count >= self.limit


# -- a rolling buffer for line formats -----------------------------------------------------


class RollingBuffer:
    """Encoded rows by partition folder until :meth:`flush` commits one file per folder.

    For line formats (JSON Lines, CSV): a row is its bytes, ending in a newline.
    Files are named by :func:`file_name` from the ids they hold and committed
    with :func:`commit_file`; ids already buffered or in the newest files
    (:class:`RecentIds`, ``dedupe_window`` ids) are dropped by :meth:`fresh`.
    Not thread-safe: one writer (a buffered sink has one worker) at a time.

    Args:
        root: The dataset's root directory.
        suffix: File name suffix (``".jsonl"``).
        fsync: fsync each file and folder around the rename.
        dedupe_window: Ids of the newest files to remember (0: names only).
        header: Bytes written at the start of every file (a CSV header line).
    """

    def __init__(
        self,
        root: Path,
        *,
        suffix: str,
        fsync: bool = True,
        dedupe_window: int = 100_000,
        header: bytes = b"",
    ) -> None:
        self.root = Path(root)
        self.suffix = suffix
        self.fsync = fsync
        self.header = header
        self.recent = RecentIds(dedupe_window)
        self._rows: dict[str, list[tuple[str, bytes]]] = {}
        self._ids: set[str] = set()
        #: Files committed by this buffer, oldest first.
        self.files: list[Path] = []

    def __len__(self) -> int:
        """Rows buffered."""
        return len(self._ids)

    def open(self, read_ids: Callable[[Path], Iterable[str]] | None = None) -> None:
        """Create the root, delete stale temporary files, load the newest files' ids.

        ``read_ids(path)`` yields the ids of one committed file (None: skip
        loading; only file names then protect against a replay). Blocks.

        Raises:
            OSError: The root cannot be created or listed.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        remove_stale_temp(self.root)
        if read_ids is None or self.recent.limit <= 0:
            return
        loaded: list[set[str]] = []
        held = 0
        for path in data_files(self.root, self.suffix):
            if held >= self.recent.limit:
                break
            try:
                ids = set(read_ids(path))
            except (OSError, ValueError, KeyError) as exc:
                log.warning("cannot read ids of %s (%s); not deduplicating against it", path, exc)
                continue
            loaded.append(ids)
            held += len(ids)
        for ids in reversed(loaded):
            self.recent.add(ids)

    def fresh(self, events: Sequence[Any]) -> list[Any]:
        """``events`` without those already buffered, recently committed, or repeated."""
        out = []
        seen: set[str] = set()
        for e in events:
            ident = e.id
            if ident in self._ids or ident in self.recent or ident in seen:
                continue
            seen.add(ident)
            out.append(e)
        return out

    def add(self, rows: Iterable[tuple[str, str, bytes]]) -> None:
        """Buffer ``(folder, id, encoded row)`` triples (folder ``""``: the root)."""
        for segment, ident, data in rows:
            self._rows.setdefault(segment, []).append((ident, data))
            self._ids.add(ident)

    def flush(self) -> list[Path]:
        """Commit one file per folder with the buffered rows; return the new files. Blocks.

        Rows are written in the order they were added. On failure the rows of
        folders not yet committed stay buffered.

        Raises:
            OSError: A file could not be written.
        """
        written = []
        for segment in list(self._rows):
            rows = self._rows[segment]
            ids = [ident for ident, _ in rows]
            ordered = sorted(set(ids))
            name = file_name(
                ordered[0], ordered[-1], len(ordered),
                digest_joined("\n".join(ordered).encode()), self.suffix,
            )
            final = self.root / segment / name if segment else self.root / name

            def write(temp: Path, rows: list[tuple[str, bytes]] = rows) -> None:
                with open(temp, "wb") as f:
                    f.write(self.header)
                    f.writelines(data for _, data in rows)

            commit_file(final, write, fsync=self.fsync)
            del self._rows[segment]
            written.append(final)
        flushed, self._ids = self._ids, set()
        self.recent.add(flushed)
        self.files += written
        return written

    def discard(self) -> None:
        """Forget the buffered rows (they were never acknowledged: they will be redelivered)."""
        self._rows.clear()
        self._ids.clear()
