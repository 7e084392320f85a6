"""Opening what a file source reads: a plain file, a gzip or zstd file, or stdin.

Compression is recognised by content (the magic bytes), so a ``.gz`` file
without its extension, or a compressed file with a misleading one, is still
read right. Offsets of compressed input count decompressed bytes; such a
stream seeks forward by reading and backward by reopening (rare: only a
resumed run seeks, once, at open).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Literal, TypeAlias, cast

from .._errors import SourceError

__all__ = (
    "STDIN",
    "Compression",
    "Input",
    "file_identity",
    "fingerprint",
    "open_input",
    "tail_digest",
)

#: The path that means "standard input".
STDIN = "-"
#: Bytes at the head of a file that identify its content (with its inode).
FINGERPRINT_BYTES = 4096
#: Bytes just before an offset whose digest a checkpoint keeps, to see a rewrite.
TAIL_BYTES = 64

Compression: TypeAlias = Literal["none", "gzip", "zstd"]
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class _Forward(io.RawIOBase):
    """A decompressing (or piped) stream that can seek forward, and back by reopening."""

    def __init__(self, opener: Callable[[], IO[bytes]] | None, stream: IO[bytes]) -> None:
        super().__init__()
        self._opener = opener
        self._stream = stream
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True  # forward always; back by reopening (not stdin)

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._stream.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self._pos += n
        return n

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence != 0:
            raise io.UnsupportedOperation("only absolute seeks")
        if offset < self._pos:
            if self._opener is None:
                raise io.UnsupportedOperation("standard input cannot seek back")
            self._stream.close()
            self._stream = self._opener()
            self._pos = 0
        while self._pos < offset:
            got = self._stream.read(min(1 << 20, offset - self._pos))
            if not got:
                break
            self._pos += len(got)
        return self._pos

    def close(self) -> None:
        if not self.closed and self._opener is not None:
            self._stream.close()
        super().close()


class Input:
    """One opened input: the byte stream read line by line, and what it is.

    Attributes:
        stream: Supports ``readline(limit)``, ``seek(offset)`` and ``read``.
        compression: ``"none"``, ``"gzip"`` or ``"zstd"``.
        is_stdin: Reading standard input (no checkpoint, no follow).
        device, inode: Identity of the opened file (plain files only, else None).
    """

    def __init__(self, stream: IO[bytes], compression: Compression, *, is_stdin: bool,
                 raw: IO[bytes] | None) -> None:
        self.stream = stream
        self.compression = compression
        self.is_stdin = is_stdin
        self._raw = raw
        ident = os.fstat(raw.fileno()) if raw is not None and compression == "none" else None
        self.device = ident.st_dev if ident is not None else None
        self.inode = ident.st_ino if ident is not None else None

    @property
    def plain(self) -> bool:
        """A regular, uncompressed file: its size and inode mean something."""
        return self.compression == "none" and not self.is_stdin

    def size(self) -> int | None:
        """Current size in bytes of a plain file; None for other inputs."""
        if not self.plain or self._raw is None:
            return None
        return os.fstat(self._raw.fileno()).st_size

    def close(self) -> None:
        self.stream.close()
        if self._raw is not None and self._raw is not self.stream:
            self._raw.close()


def _zstd_reader(raw: IO[bytes], path: str) -> IO[bytes]:
    try:
        import zstandard
    except ImportError:
        raise SourceError(
            f"{path!r} is zstd-compressed: reading it needs the 'zstd' extra: "
            "pip install 'trio-ingest[zstd]'"
        ) from None
    reader: IO[bytes] = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    return reader


def open_input(path: str | os.PathLike[str]) -> Input:
    """Open ``path`` (``"-"``: stdin) for reading, decompressing gzip and zstd by content.

    Blocking: call it from a worker thread.

    Raises:
        SourceError: The file cannot be opened, is not a regular file, or
            needs an extra that is not installed.
    """
    name = os.fspath(path)
    if name == STDIN:
        raw_stdin = sys.stdin.buffer
        return Input(io.BufferedReader(_Forward(None, raw_stdin)), "none", is_stdin=True,
                     raw=None)
    try:
        raw = open(name, "rb")  # closed by Input.close()
    except OSError as exc:
        raise SourceError(f"cannot open {name!r}: {exc.strerror}") from exc
    try:
        if not os.path.isfile(name):
            raise SourceError(f"{name!r} is not a regular file")
        magic = raw.read(4)
        raw.seek(0)
        if magic.startswith(_GZIP_MAGIC):

            def reopen_gzip() -> IO[bytes]:
                return cast("IO[bytes]", gzip.GzipFile(filename=name, mode="rb"))

            stream: IO[bytes] = io.BufferedReader(_Forward(reopen_gzip, reopen_gzip()))
            raw.close()
            return Input(stream, "gzip", is_stdin=False, raw=None)
        if magic == _ZSTD_MAGIC:

            def reopen_zstd() -> IO[bytes]:
                return _zstd_reader(open(name, "rb"), name)

            stream = io.BufferedReader(_Forward(reopen_zstd, reopen_zstd()))
            raw.close()
            return Input(stream, "zstd", is_stdin=False, raw=None)
    except BaseException:
        raw.close()
        raise
    return Input(raw, "none", is_stdin=False, raw=raw)


def _read_at(stream: IO[bytes], start: int, size: int) -> bytes:
    """``size`` bytes from ``start``, as the file holds them now.

    A plain file is read with ``os.pread``: its reader's buffer may still hold
    bytes from before the file was truncated and rewritten by another process,
    and digests taken through it would mix the old content with the new.
    """
    if isinstance(stream, io.BufferedReader) and isinstance(stream.raw, io.FileIO):
        parts, fd = [], stream.fileno()
        while size > 0:
            part = os.pread(fd, size, start)
            if not part:
                break
            parts.append(part)
            start += len(part)
            size -= len(part)
        return b"".join(parts)
    stream.seek(start)
    return stream.read(size)


def fingerprint(stream: IO[bytes], offset: int) -> str:
    """Digest of the first ``min(offset, FINGERPRINT_BYTES)`` bytes (as the file holds them now)."""
    return hashlib.sha256(_read_at(stream, 0, min(offset, FINGERPRINT_BYTES))).hexdigest()


def tail_digest(stream: IO[bytes], offset: int) -> str:
    """Digest of the ``TAIL_BYTES`` bytes just before ``offset`` (as the file holds them now)."""
    start = max(0, offset - TAIL_BYTES)
    return hashlib.sha256(_read_at(stream, start, offset - start)).hexdigest()


def file_identity(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """``(device, inode)`` of what ``path`` names now; None when nothing is there."""
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino
