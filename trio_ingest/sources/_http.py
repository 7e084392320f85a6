"""HTTP ingest: POSTed events, answered only with the truth about them.

One endpoint, two hosts. :class:`IngestApp` is a plain ASGI application: it reads
and checks a request, makes events of it, hands them to a *gate* and answers. The
:class:`HTTP` source serves it itself (its gate is the source's own ``read()``);
``ti.http.ingest_app(handle)`` mounts the same app in an application that embeds
the pipeline with ``serve()`` (its gate is the handle). There is one implementation
of the endpoint, and each host only says how events get in.

The server is Hypercorn: an ASGI server with a Trio worker *and* an asyncio
worker, both callable as a coroutine (``hypercorn.trio.serve`` /
``hypercorn.asyncio.serve``) with a shutdown trigger. So it runs inside the
pipeline's own task group on either backend, with no thread and no process of its
own, and stops when the pipeline tells it to. (Uvicorn is asyncio only; Daphne
wants Twisted.)

Answers (the body is always JSON):

- ``ack="commit"`` (the default): ``200 {"accepted", "filtered", "dead_lettered",
  "ids", "errors"}`` only once every event of the request is finished: written by
  the sink, dead-lettered (``errors`` says why) or filtered. A 2xx means durable.
- ``ack="accept"``: ``202 {"accepted", "ids"}`` once the events are in the first edge.
- ``503`` + ``Retry-After``: the events could not enter within ``queue_timeout``
  (the pipeline is full), or the pipeline is stopping. Nothing of the request was
  taken.
- ``400`` malformed body (the reason, with line and column; for NDJSON every bad
  line), ``413`` body or event count over the limit, ``415`` an unknown
  ``Content-Encoding``, ``405`` not a POST. Nothing taken.

NDJSON with bad lines is refused whole (400 naming the lines): a request is the
unit a client retries, so it is taken whole or not at all. Well-formed events that
fail a ``validate`` stage are a different matter: they are dead-lettered and
reported in the 200.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import zlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any, Protocol

import anyio
import anyio.abc
import attrs

from .._acks import Completion
from .._errors import ConfigError, SourceError
from .._event import Event
from .._ids import IdMaker
from .._json import dumps, loads
from .._validators import check, instance_of, optional, positive, positive_int
from ._base import Read, Source

__all__ = ("HTTP", "Gate", "IngestApp", "IngestOptions")

log = logging.getLogger("trio_ingest.sources.http")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/x-jsonlines",
                 "application/json-seq", "application/ndjson")
#: A 400 names at most this many bad lines.
_MAX_LINES_SHOWN = 20
_MAX_KEY = 200
#: Seconds a request waits to enter before its client is watched for a disconnect.
WATCH_AFTER = 0.02


def _ack(_instance: object, attribute: Any, value: object) -> None:
    if value not in ("commit", "accept"):
        raise ConfigError(f"'{attribute.name}' must be 'commit' or 'accept': {value!r}")


def _route(_instance: object, attribute: Any, value: object) -> None:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ConfigError(f"'{attribute.name}' must be a path starting with '/': {value!r}")


@attrs.frozen
class IngestOptions:
    """How the endpoint reads and answers requests (shared by the source and ``ingest_app``).

    Attributes:
        path: Where events are POSTed.
        ack: ``"commit"``: answer 200 once every event is finished; ``"accept"``:
            202 once they are in the first edge.
        id_field: Take each event's id from this field of its payload (a string or
            an integer); a request with an event lacking it is refused (400).
        max_body: Most bytes of a body, after gzip decoding (413 past it).
        max_events: Most events in one request (413 past it).
        queue_timeout: Seconds a request may wait for its events to enter; then
            503 with ``Retry-After`` and nothing taken.
        retry_after: The ``Retry-After`` seconds of a 503.
        health_path: Liveness route: 200 while the server runs.
        ready_path: Readiness route: 200 while events are taken, 503 once stopping.

    Raises:
        ConfigError: ``path``, ``health_path`` or ``ready_path`` does not start
            with ``/``, ``ack`` is not ``"commit"`` or ``"accept"``, ``id_field``
            is neither None nor a str, or a count or timeout is not > 0.
    """

    path: str = attrs.field(default="/events", validator=_route)
    ack: str = attrs.field(default="commit", validator=_ack)
    id_field: str | None = attrs.field(
        default=None, validator=optional(instance_of(str, what="a field name"))
    )
    max_body: int = attrs.field(default=10 * 1024 * 1024, validator=positive_int)
    max_events: int = attrs.field(default=10_000, validator=positive_int)
    queue_timeout: float = attrs.field(default=5.0, validator=positive)
    retry_after: int = attrs.field(default=1, validator=positive_int)
    health_path: str = attrs.field(default="/healthz", validator=_route)
    ready_path: str = attrs.field(default="/readyz", validator=_route)


class Gate(Protocol):
    """How the events of a request get into the pipeline (the source's read, or a handle)."""

    @property
    def accepting(self) -> bool:
        """Whether events are taken (False once stopping)."""
        ...

    @property
    def max_events(self) -> int | None:
        """Most events one request may carry through this gate (None: no own limit)."""
        ...

    async def submit(
        self,
        events: list[Event],
        completion: Completion,
        timeout: float,
        ack: str,
        receive: Receive,
    ) -> bool | None:
        """Put all of ``events`` in, joining ``completion``; or, after ``timeout``, none.

        Returns True once they are in the first edge (or, for the source, taken by
        its read: the accept mode then waits until they are in the edge); False when
        they could not enter in time; None when the client disconnected (``receive``
        said so) while they waited to enter. With False or None nothing was taken;
        nor by a cancelled submit.

        Raises:
            anyio.ClosedResourceError: The pipeline is stopping; nothing was taken.
        """
        ...


async def watched(
    wait: Callable[[], Awaitable[Any]], receive: Receive
) -> bool:
    """Run ``wait()`` while watching the client; False (``wait`` cancelled) if it disconnects.

    Only for waits a disconnect should end: the watcher is a task, spawned per call.
    """
    gone = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_watch, receive, gone, tg.cancel_scope)
        await wait()
        tg.cancel_scope.cancel()
    return not gone.is_set()


class BadRequest(Exception):
    """A request refused whole: its status and JSON body."""

    def __init__(self, status: int, error: str, **more: Any) -> None:
        super().__init__(error)
        self.status = status
        self.body = {"error": error, **more}


# -- reading a body -----------------------------------------------------------------


def decode_body(raw: bytes, encoding: str, max_body: int) -> bytes:
    """The body as sent, with its ``Content-Encoding`` undone, at most ``max_body`` bytes.

    Raises:
        BadRequest: 413 too large once decoded, 415 an unknown encoding, 400 bad gzip.
    """
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise BadRequest(415, f"unsupported Content-Encoding {encoding!r} (gzip or none)")
    inflate = zlib.decompressobj(wbits=47 if encoding != "deflate" else 15)
    try:
        body = inflate.decompress(raw, max_body + 1)
    except zlib.error as exc:
        raise BadRequest(400, f"the body is not valid {encoding}: {exc}") from None
    if len(body) > max_body or inflate.unconsumed_tail:
        raise BadRequest(413, f"the body is over {max_body} bytes once decoded")
    if not inflate.eof:
        raise BadRequest(400, f"the {encoding} body is truncated")
    return body


def _json_reason(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"line {exc.lineno} column {exc.colno}: {exc.msg}"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 at byte {exc.start}"
    return str(exc)


def parse_body(body: bytes, content_type: str) -> list[Any]:
    """The payloads of a body: one JSON object, a JSON array of them, or NDJSON lines.

    NDJSON is read when the content type says so, or when the body is several JSON
    documents one per line.

    Raises:
        BadRequest: 400 with the reason and the line (every bad line, for NDJSON).
    """
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind in _NDJSON_TYPES:
        return _parse_lines(body)
    if not body.strip():
        raise BadRequest(400, "the body is empty (send a JSON object, an array or NDJSON)")
    try:
        value = loads(body)
    except ValueError as exc:
        if isinstance(exc, json.JSONDecodeError) and exc.msg == "Extra data" and exc.lineno > 1:
            return _parse_lines(body)  # several documents, one per line: NDJSON
        raise BadRequest(400, f"malformed JSON: {_json_reason(exc)}") from None
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return [value]
    raise BadRequest(
        400, f"the body must be a JSON object or an array of events, got {type(value).__name__}"
    )


def _parse_lines(body: bytes) -> list[Any]:
    payloads: list[Any] = []
    bad: list[dict[str, Any]] = []
    count = 0
    for number, line in enumerate(body.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            payloads.append(loads(line))
        except ValueError as exc:
            count += 1
            if len(bad) < _MAX_LINES_SHOWN:
                reason = _json_reason(exc)
                if reason.startswith("line 1 column"):
                    reason = reason.removeprefix("line 1 ")
                bad.append({"line": number, "reason": reason})
    if count:
        raise BadRequest(
            400, f"malformed NDJSON: {count} bad line(s); nothing was taken",
            lines=bad,
        )
    if not payloads:
        raise BadRequest(400, "the body is empty (send a JSON object, an array or NDJSON)")
    return payloads


def ids_of(
    payloads: list[Any], id_field: str | None, key: str | None, new_id: Callable[[], str]
) -> list[str]:
    """Each event's id: its ``id_field``, else ``<Idempotency-Key>:<index>``, else a new one.

    Raises:
        BadRequest: 400, an event lacks ``id_field`` or the key is too long.
    """
    if id_field is not None:
        ids: list[str] = []
        for i, payload in enumerate(payloads):
            value = payload.get(id_field) if isinstance(payload, dict) else None
            if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
                raise BadRequest(
                    400, f"event {i} has no {id_field!r} field (a string or an integer); "
                    "nothing was taken",
                )
            ids.append(str(value))
        return ids
    if key is not None:
        if not key or len(key) > _MAX_KEY:
            raise BadRequest(400, f"the Idempotency-Key must be 1 to {_MAX_KEY} characters")
        return [f"{key}:{i}" for i in range(len(payloads))]
    return [new_id() for _ in payloads]


# -- the ASGI application ---------------------------------------------------------------


class _Gone(Exception):
    """The client went away."""


class IngestApp:
    """The ingest endpoint as an ASGI 3 application, in front of a :class:`Gate`.

    Routes (relative to the mount point, ``root_path``): ``POST options.path``
    takes events; ``GET options.health_path`` and ``GET options.ready_path``
    answer liveness and readiness; anything else goes to ``fallback`` (an ASGI
    app, e.g. the metrics), else 404.
    """

    def __init__(
        self,
        gate: Gate,
        options: IngestOptions,
        *,
        name: str = "http",
        fallback: ASGIApp | None = None,
    ) -> None:
        self.gate = gate
        self.options = options
        self.fallback = fallback
        self._new_id = IdMaker(name)
        self.statuses: dict[int, int] = {}  # answers sent, by status (a live view)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan(receive, send)
            return
        if kind != "http":
            if self.fallback is not None:
                await self.fallback(scope, receive, send)
            return
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):] or "/"
        options = self.options
        if path == options.path:
            await self._ingest(scope, receive, send)
        elif path == options.health_path:
            await self._answer(send, 200, {"status": "ok"})
        elif path == options.ready_path:
            if self.gate.accepting:
                await self._answer(send, 200, {"status": "ready"})
            else:
                await self._answer(send, 503, {"status": "stopping"}, retry=True)
        elif self.fallback is not None:
            await self.fallback(scope, receive, send)
        else:
            await self._answer(send, 404, {"error": f"no route {path!r}"})

    async def _answer(
        self, send: Send, status: int, body: dict[str, Any], *, retry: bool = False,
        allow: bool = False,
    ) -> None:
        data = dumps(body)
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
        if retry:
            headers.append((b"retry-after", b"%d" % self.options.retry_after))
        if allow:
            headers.append((b"allow", b"POST"))
        self.statuses[status] = self.statuses.get(status, 0) + 1
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def _ingest(self, scope: Scope, receive: Receive, send: Send) -> None:
        options = self.options
        if scope["method"] != "POST":
            await self._answer(send, 405, {"error": "POST events here"}, allow=True)
            return
        if not self.gate.accepting:
            await self._answer(send, 503, {"error": "the pipeline is stopping"}, retry=True)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            events = await self._events(headers, receive)
        except BadRequest as bad:
            await self._answer(send, bad.status, bad.body)
            return
        except _Gone:
            return
        completion = Completion()
        outcome = await self._admit(events, completion, receive)
        if outcome is None:
            return  # the client went away: what was taken goes on, nobody to tell
        ids = [e.id for e in events]
        if outcome == "stopping":
            await self._answer(send, 503, {"error": "the pipeline is stopping"}, retry=True)
        elif outcome == "busy":
            await self._answer(
                send, 503,
                {"error": f"the pipeline is full: the events could not enter within "
                          f"{options.queue_timeout:g}s; nothing was taken"},
                retry=True,
            )
        elif options.ack == "accept":
            await self._answer(send, 202, {"accepted": len(events), "ids": ids})
        else:
            body: dict[str, Any] = {
                "accepted": completion.delivered,
                "filtered": completion.filtered,
                "dead_lettered": completion.dead_lettered,
                "ids": ids,
            }
            if completion.letters:
                body["errors"] = [{"id": i, "error": e} for i, e in completion.letters]
            await self._answer(send, 200, body)

    async def _events(self, headers: dict[str, str], receive: Receive) -> list[Event]:
        options = self.options
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > options.max_body:
            raise BadRequest(413, f"the body is over {options.max_body} bytes")
        raw = await _read_body(receive, options.max_body)
        body = decode_body(raw, headers.get("content-encoding", ""), options.max_body)
        payloads = parse_body(body, headers.get("content-type", ""))
        limit = options.max_events
        if self.gate.max_events is not None:
            limit = min(limit, self.gate.max_events)
        if len(payloads) > limit:
            raise BadRequest(413, f"at most {limit} events per request, got {len(payloads)}")
        ids = ids_of(payloads, options.id_field, headers.get("idempotency-key"), self._new_id)
        return [Event(i, p) for i, p in zip(ids, payloads, strict=True)]

    async def _admit(
        self, events: list[Event], completion: Completion, receive: Receive
    ) -> str | None:
        """Submit, then (ack="commit") wait until finished; None when the client went away."""
        options = self.options
        try:
            taken = await self.gate.submit(
                events, completion, options.queue_timeout, options.ack, receive
            )
        except anyio.ClosedResourceError:
            return "stopping"
        if taken is None:
            return None
        if not taken:
            return "busy"
        if options.ack == "commit":
            # a client that leaves now changes nothing: the events finish, the answer is lost
            await completion.wait()
        return "done"


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Gone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, f"the body is over {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _watch(receive: Receive, gone: anyio.Event, scope: anyio.CancelScope) -> None:
    """Cancel the request's wait when its client disconnects (nothing taken stays taken)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            scope.cancel()
            return


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


# -- the source --------------------------------------------------------------------------


class _Offer:
    """A request's events, waiting for ``read()`` to take them."""

    __slots__ = ("completion", "entered", "events", "taken", "woken")

    def __init__(self, events: list[Event], completion: Completion) -> None:
        self.events = events
        self.completion = completion
        self.taken = False
        self.woken = anyio.Event()  # taken, or refused
        self.entered = anyio.Event()  # its events are in the first edges


class HTTP(Source):
    """Events POSTed over HTTP, acknowledged truthfully (``pip install 'trio-ingest[http]'``).

    Runs a Hypercorn server inside the source's own task (on Trio or asyncio) on
    ``host:port``: ``POST path`` takes one JSON object, a JSON array or NDJSON
    (``Content-Encoding: gzip`` welcome), with the answers listed in this module's
    docstring. The requests waiting are read together, each with its own
    acknowledgement token: with ``ack="commit"`` a request is answered once each of
    its events is finished (written, dead-lettered, filtered), without waiting for
    any other request. A request that cannot enter within ``queue_timeout`` (the first edge
    stays full) gets 503 and nothing of it is taken.

    Ids come from ``id_field``, else the ``Idempotency-Key`` header (``<key>:<i>``),
    else they are made up (unique) and returned: a client that retries with the
    same ids never makes a duplicate in an idempotent sink. A client that goes
    away while its events wait to enter takes nothing; one that goes away later
    leaves them to finish as they would have.

    Stopping: the source takes no more requests (503, ``/readyz`` 503), answers
    those in flight as their events finish, and closes the server after the drain.

    Args:
        host: Interface to listen on.
        port: TCP port; 0 picks a free one (read it from ``port`` after start).
        path: Where events are POSTed.
        ack: ``"commit"`` (answer once every event is finished) or ``"accept"``
            (202 once they are in the first edge).
        id_field: Payload field holding each event's id.
        max_body: Most bytes of a body, after gzip decoding (413 past it).
        max_events: Most events in one request (413 past it).
        queue_timeout: Seconds a request may wait for its events to enter (then 503).
        retry_after: The ``Retry-After`` seconds of a 503.
        health_path: Liveness route.
        ready_path: Readiness route (503 once stopping).
        fallback: An ASGI app for any other route (the metrics, a dashboard).
        graceful_timeout: Seconds the server waits for requests still open when it closes.
        name: Node name.

    Raises:
        ConfigError: An option is invalid.
    """

    name = "http"
    commit_interval = 0.5  # nothing to commit: the offsets are request numbers

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8080,
        path: str = "/events",
        *,
        ack: str = "commit",
        id_field: str | None = None,
        max_body: int = 10 * 1024 * 1024,
        max_events: int = 10_000,
        queue_timeout: float = 5.0,
        retry_after: int = 1,
        health_path: str = "/healthz",
        ready_path: str = "/readyz",
        fallback: ASGIApp | None = None,
        graceful_timeout: float = 5.0,
        name: str | None = None,
    ) -> None:
        self.host = check(instance_of(str, what="a host name"), "host", host)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(f"'port' must be an integer from 0 to 65535: {port!r}")
        self.port = port
        self.options = IngestOptions(
            path=path, ack=ack, id_field=id_field, max_body=max_body, max_events=max_events,
            queue_timeout=queue_timeout, retry_after=retry_after, health_path=health_path,
            ready_path=ready_path,
        )
        self.graceful_timeout = check(positive, "graceful_timeout", graceful_timeout)
        if name is not None:
            self.name = name
            self.name_given = True
        self.app = IngestApp(self, self.options, name=self.name, fallback=fallback)
        self._offers: deque[_Offer] = deque()
        self._wake: anyio.Event | None = None
        self._last: list[_Offer] = []  # the offers of the last read
        self._accepting = False
        self._reads = 0
        self._socket: socket.socket | None = None
        self._shutdown: anyio.Event | None = None

    def __repr__(self) -> str:
        return f"<HTTP source {self.name!r} http://{self.host}:{self.port}{self.options.path}>"

    @property
    def url(self) -> str:
        """Where to POST events."""
        return f"http://{self.host}:{self.port}{self.options.path}"

    # -- the gate (the app's side) ----------------------------------------------------
    @property
    def accepting(self) -> bool:
        return self._accepting

    @property
    def max_events(self) -> int | None:
        return None

    async def submit(
        self,
        events: list[Event],
        completion: Completion,
        timeout: float,
        ack: str,
        receive: Receive,
    ) -> bool | None:
        """Offer the request to ``read()``; taken whole, or (timeout, gone, stop) not at all.

        The client is watched for a disconnect only once the offer has waited
        ``WATCH_AFTER`` seconds (a task per request costs about as much as the rest
        of the request): one that leaves sooner is treated as one that left after.

        Raises:
            anyio.ClosedResourceError: The source is stopping; nothing was taken.
        """
        if not self._accepting:
            raise anyio.ClosedResourceError("the source is stopping")
        offer = _Offer(events, completion)
        self._offers.append(offer)
        if self._wake is not None:
            self._wake.set()
            self._wake = None
        here = True
        try:
            first = min(WATCH_AFTER, timeout)
            with anyio.move_on_after(first):  # the common case: taken at once, one scope
                await offer.woken.wait()
            if not offer.woken.is_set():
                with anyio.move_on_after(timeout - first):
                    here = await watched(offer.woken.wait, receive)
        finally:
            if not offer.taken:  # timed out, gone, cancelled or refused: withdrawn
                with contextlib.suppress(ValueError):
                    self._offers.remove(offer)
        if not offer.taken:
            if not self._accepting:
                raise anyio.ClosedResourceError("the source is stopping")
            return False if here else None
        if ack == "accept":
            await offer.entered.wait()
        return True

    def _refuse(self) -> None:
        self._accepting = False
        offers, self._offers = self._offers, deque()
        for offer in offers:
            offer.woken.set()

    # -- the source protocol ----------------------------------------------------------
    @contextlib.asynccontextmanager
    async def open_resources(self) -> AsyncIterator[None]:
        """Bind the socket and serve Hypercorn in a task of the source's own task group.

        Raises:
            SourceError: The address cannot be bound (in use, no such interface).
        """
        try:
            from hypercorn.config import Config
        except ImportError:
            raise ImportError(
                "ti.sources.HTTP needs Hypercorn: pip install 'trio-ingest[http]'"
            ) from None
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(1024)
        except OSError as exc:
            sock.close()
            raise SourceError(
                f"{self.name!r} cannot listen on {self.host}:{self.port}: {exc}"
            ) from exc
        self.port = sock.getsockname()[1]
        config = Config()
        config.bind = [f"fd://{sock.detach()}"]
        config.accesslog = None
        config.errorlog = log
        config.graceful_timeout = self.graceful_timeout
        config.backlog = 1024
        self._shutdown = shutdown = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._serve, config, shutdown)
            try:
                yield
            finally:
                self._refuse()
                shutdown.set()

    async def _serve(self, config: Any, shutdown: anyio.Event) -> None:
        import sniffio

        if sniffio.current_async_library() == "trio":
            from hypercorn.trio import serve
        else:
            from hypercorn.asyncio import serve  # type: ignore[assignment]
        await serve(self.app, config, shutdown_trigger=shutdown.wait, mode="asgi")  # type: ignore[arg-type]

    async def open(self) -> None:
        """Start taking requests (the server listens from ``open_resources`` on).

        Raises:
            SourceError: Entered without ``open_resources`` (no server).
        """
        if self._shutdown is None:
            raise SourceError(f"{self.name!r} must be opened inside open_resources()")
        self._accepting = True
        log.info("%s: taking events at %s (ack=%s)", self.name, self.url, self.options.ack)

    async def read(self, max_events: int) -> Read | None:
        """The events of the requests waiting (at least one, else up to ``max_events``).

        Each request is one part of the read (its own token and completion), so its
        answer waits for its own events only.
        """
        # the runtime reads again only once the last read's events are in the first edges
        for offer in self._last:
            offer.entered.set()
        self._last = []
        while not self._offers:
            if not self._accepting:
                return None
            self._wake = anyio.Event()
            await self._wake.wait()
        offers = self._offers
        taken = [offers.popleft()]
        n = len(taken[0].events)
        while offers and n + len(offers[0].events) <= max_events:
            offer = offers.popleft()
            taken.append(offer)
            n += len(offer.events)
        for offer in taken:
            offer.taken = True
            offer.woken.set()
        self._last = taken
        self._reads += 1
        if len(taken) == 1:
            offer = taken[0]
            return Read(offer.events, offset=self._reads, completion=offer.completion)
        events = [e for offer in taken for e in offer.events]
        parts: list[tuple[int, Completion | None]] = [
            (len(offer.events), offer.completion) for offer in taken
        ]
        return Read(events, offset=self._reads, parts=parts)

    def stopping(self) -> None:
        """``stop()`` began: refuse new requests (503) and those still waiting to enter."""
        self._refuse()
        if self._wake is not None:
            self._wake.set()
            self._wake = None

    async def aclose(self) -> None:
        """Refuse what still comes; the last read's events are in (or finished) by now."""
        self._refuse()
        for offer in self._last:
            offer.entered.set()
        self._last = []
