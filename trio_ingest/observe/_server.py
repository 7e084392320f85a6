"""A tiny HTTP/1.1 server on the pipeline's own event loop: metrics, snapshot, dashboard.

No threads and no web framework: AnyIO sockets and a request parser that
knows GET and HEAD, so it runs wherever the pipeline runs (Trio or asyncio)
and reads the live counters without locks.
"""

from __future__ import annotations

import gzip
import importlib.resources
import json
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import attrs
from anyio.streams.buffered import BufferedByteReceiveStream

from .._errors import ConfigError
from ._prometheus import MISSING_MESSAGE, exposition
from ._snapshot import PipelineView, history_sample, snapshot

if TYPE_CHECKING:
    from .._pipeline import Graph
    from ..runtime._handle import PipelineHandle

__all__ = ("MetricsEndpoint", "serve_metrics")

log = logging.getLogger("trio_ingest.observe")

MAX_HEAD = 16 * 1024  # request line plus headers
MAX_CONNECTIONS = 64  # at the limit, a new connection closes the longest-idle one
FIRST_REQUEST_TIMEOUT = 10.0
KEEP_ALIVE_TIMEOUT = 15.0
GZIP_MIN_BYTES = 1024  # smaller bodies are not worth compressing
HISTORY_SECONDS = 300  # the dashboard's charts: the last five minutes, one sample a second
HISTORY_INTERVAL = 1.0

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
_REASONS = {
    200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
    431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented", 503: "Service Unavailable",
}


@attrs.frozen
class MetricsEndpoint:
    """Where :func:`serve_metrics` listens (``port`` is the real one when 0 was asked)."""

    host: str
    port: int

    @property
    def url(self) -> str:
        """``http://host:port/``: the dashboard; ``/metrics`` and ``/api/snapshot`` below it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"


async def serve_metrics(
    pipeline: Graph | PipelineHandle,
    port: int = 9464,
    host: str = "127.0.0.1",
    *,
    task_status: anyio.abc.TaskStatus[MetricsEndpoint] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``pipeline``'s metrics over HTTP until cancelled; ``nursery.start`` it.

    Routes: ``/metrics`` (Prometheus text or OpenMetrics, by ``Accept``, with
    the standard process, platform and GC metrics), ``/api/snapshot`` (JSON:
    the live ``RunReport.to_dict()`` plus the graph's nodes and links),
    ``/api/history`` (JSON: the totals sampled every second over the last five
    minutes, so a dashboard opened during an incident shows what led to it) and
    ``/`` (the live dashboard). Answers gzip when the client accepts it. Runs on
    the caller's event loop and reads the counters only when asked (and once a
    second for the history): no cost per event. Idle keep-alive connections
    are bounded: at :data:`MAX_CONNECTIONS`, a new one closes the longest-idle
    one instead of being refused.
    Without ``prometheus_client`` (the ``metrics`` extra) ``/metrics``
    answers 501 and the rest works::

        async with trio.open_nursery() as nursery:
            endpoint = await nursery.start(ti.observe.serve_metrics, pipeline, 9464)
            report = await pipeline.run()
            nursery.cancel_scope.cancel()

    ``task_status.started`` hands back a :class:`MetricsEndpoint` (``port=0``
    picks a free port). Listen on loopback (the default) unless the network
    in between is trusted: there is no authentication.

    Args:
        pipeline: A ``Graph``/``Pipeline`` (it may start running later) or
            the ``PipelineHandle`` of a serving one.
        port: TCP port; 0 for any free one.
        host: Address to bind.

    Raises:
        ConfigError: ``pipeline`` or ``port`` is invalid (before listening).
        OSError: The address cannot be bound (in use, not local).
    """
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ConfigError(f"'port' must be an int in 0..65535: {port!r}")
    server = _Server(PipelineView(pipeline))
    try:
        listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    except OSError as exc:
        exc.add_note(f"the metrics server could not listen on {host}:{port}")
        raise
    async with listener:
        bound = listener.extra(anyio.abc.SocketAttribute.local_port)
        endpoint = MetricsEndpoint(host, bound)
        log.info("metrics on %smetrics, dashboard on %s", endpoint.url, endpoint.url)
        task_status.started(endpoint)
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.sample_history)
            await listener.serve(server.handle)


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@attrs.frozen
class _Request:
    method: str
    path: str
    version: str
    headers: dict[str, str]

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return connection == "keep-alive"
        return connection != "close"


@attrs.frozen
class _Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    cache: str = "no-store"

    def encode(self, *, head_only: bool, keep_alive: bool, gzipped: bool = False) -> bytes:
        body = self.body
        zipped = gzipped and len(body) >= GZIP_MIN_BYTES
        if zipped:
            body = gzip.compress(body, compresslevel=6, mtime=0)
        lines = [
            f"HTTP/1.1 {self.status} {_REASONS.get(self.status, 'Unknown')}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(body)}",
            f"Cache-Control: {self.cache}",
            "X-Content-Type-Options: nosniff",
            f"Connection: {'keep-alive' if keep_alive else 'close'}",
            "Vary: Accept-Encoding",
        ]
        if zipped:
            lines.append("Content-Encoding: gzip")
        if self.status == 405:
            lines.append("Allow: GET, HEAD")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + body


def _accepts_gzip(headers: dict[str, str]) -> bool:
    """Whether ``Accept-Encoding`` allows gzip (``gzip;q=0`` refuses it)."""
    for item in headers.get("accept-encoding", "").split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            q = params.strip().lower()
            return not (q.startswith("q=") and q[2:].strip() in ("0", "0.0", "0.00", "0.000"))
    return False


def _text(status: int, message: str) -> _Response:
    return _Response(status, (message + "\n").encode())


def _parse(head: bytes) -> _Request:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError as exc:  # pragma: no cover -- latin-1 decodes every byte
        raise _BadRequest(400, "undecodable request") from exc
    request_line, *header_lines = text.split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(400, f"bad request line: {request_line[:100]!r}")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in header_lines:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _BadRequest(400, f"bad header line: {line[:100]!r}")
        headers[name.lower()] = value.strip()
    if "transfer-encoding" in headers or int(headers.get("content-length", "0") or 0) > 0:
        raise _BadRequest(400, "request bodies are not accepted")
    path = target.split("?", 1)[0].split("#", 1)[0]
    return _Request(method, path, version, headers)


class _Connection:
    """One open connection; ``idle`` holds the scope of its wait for a request."""

    __slots__ = ("idle",)

    def __init__(self) -> None:
        self.idle: anyio.CancelScope | None = None


class _Server:
    """Answers requests about one pipeline; one task per connection, a few at most."""

    def __init__(self, view: PipelineView) -> None:
        self.view = view
        self.static = _load_static()
        self.open: dict[_Connection, None] = {}  # in the order they went idle (oldest first)
        self.history: deque[dict[str, Any]] = deque(
            maxlen=int(HISTORY_SECONDS / HISTORY_INTERVAL) + 1
        )

    @property
    def connections(self) -> int:
        return len(self.open)

    def _make_room(self) -> bool:
        """Close the longest-idle connection if at the limit; False if all are busy."""
        if len(self.open) < MAX_CONNECTIONS:
            return True
        for conn in self.open:
            if conn.idle is not None:
                conn.idle.cancel()  # its wait ends at once and it closes
                del self.open[conn]
                return True
        return False

    async def handle(self, stream: anyio.abc.ByteStream) -> None:
        async with stream:
            if not self._make_room():
                await _send_quietly(stream, _text(503, "too many busy connections").encode(
                    head_only=False, keep_alive=False))
                return
            conn = _Connection()
            self.open[conn] = None
            try:
                await self._converse(stream, conn)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream,
                    anyio.IncompleteRead, OSError):
                pass  # the client went away: nothing to answer
            finally:
                self.open.pop(conn, None)

    async def _converse(self, stream: anyio.abc.ByteStream, conn: _Connection) -> None:
        buffered = BufferedByteReceiveStream(stream)
        timeout = FIRST_REQUEST_TIMEOUT
        while True:
            head = None
            too_large = False
            with anyio.move_on_after(timeout) as waiting:
                conn.idle = waiting
                if conn in self.open:  # idle from now: last in the eviction order
                    del self.open[conn]
                    self.open[conn] = None
                try:
                    head = await buffered.receive_until(b"\r\n\r\n", MAX_HEAD)
                except anyio.DelimiterNotFound:
                    too_large = True
                finally:
                    conn.idle = None
            # a head that arrived whole in one read is found before the size check
            if too_large or (head is not None and len(head) > MAX_HEAD):
                await stream.send(_text(431, "request head too large").encode(
                    head_only=False, keep_alive=False))
                return
            if head is None:
                return  # idle connection: close it
            try:
                request = _parse(head)
            except (_BadRequest, ValueError) as exc:
                status = exc.status if isinstance(exc, _BadRequest) else 400
                await stream.send(_text(status, str(exc)).encode(head_only=False,
                                                                keep_alive=False))
                return
            response = self.respond(request)
            keep_alive = request.keep_alive
            await stream.send(response.encode(head_only=request.method == "HEAD",
                                              keep_alive=keep_alive,
                                              gzipped=_accepts_gzip(request.headers)))
            if not keep_alive:
                return
            timeout = KEEP_ALIVE_TIMEOUT

    def respond(self, request: _Request) -> _Response:
        if request.method not in ("GET", "HEAD"):
            return _text(405, f"method {request.method} not allowed")
        path = request.path
        try:
            if path == "/metrics":
                return self._metrics(request.headers.get("accept", ""))
            if path == "/api/snapshot":
                body = json.dumps(snapshot(self.view), separators=(",", ":"), default=repr)
                return _Response(200, body.encode(), "application/json")
            if path == "/api/history":
                body = json.dumps(list(self.history), separators=(",", ":"), default=repr)
                return _Response(200, body.encode(), "application/json")
            static = self.static.get("/index.html" if path == "/" else path)
            if static is not None:
                return static
        except Exception:
            log.exception("the metrics server failed to answer %s", path)
            return _text(500, "internal error (see the pipeline's log)")
        return _text(404, f"not found: {path}; try /, /metrics or /api/snapshot")

    async def sample_history(self) -> None:
        """Keep the last minutes of totals for the dashboard (one sample a second)."""
        while True:
            try:
                sample = history_sample(self.view)
            except Exception:  # a failed sample must not stop the server; the next may work
                log.warning("the dashboard's history sample failed", exc_info=True)
                sample = None
            if sample is not None:
                if self.history and sample["elapsed"] < self.history[-1]["elapsed"]:
                    self.history.clear()  # a new run of the same graph
                self.history.append(sample)
            await anyio.sleep(HISTORY_INTERVAL)

    def _metrics(self, accept: str) -> _Response:
        try:
            body, content_type = exposition(self.view, accept)
        except ImportError:
            return _text(501, MISSING_MESSAGE)
        return _Response(200, body, content_type)


def _load_static() -> dict[str, _Response]:
    """The dashboard's files, read once, by URL path (``/index.html``, ``/static/x.js``)."""
    files: dict[str, _Response] = {}
    root = importlib.resources.files(__package__ or "trio_ingest.observe").joinpath("static")
    if not root.is_dir():
        return files
    for entry in root.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if not entry.is_file() or suffix not in _CONTENT_TYPES:
            continue
        response = _Response(200, entry.read_bytes(), _CONTENT_TYPES[suffix], "no-cache")
        files[f"/static/{entry.name}"] = response
        if entry.name == "index.html":
            files["/index.html"] = response
    return files


async def _send_quietly(stream: anyio.abc.ByteStream, data: bytes) -> None:
    try:
        await stream.send(data)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass
