"""ti.sources.HTTP and ti.http.ingest_app: a real Hypercorn server, real httpx clients.

Every test runs on Trio and on asyncio. Waits are on conditions (a gate the test opens,
a counter), never on hoped-for timing; the only timeouts are the server's own
``queue_timeout`` (what a 503 means) and a client's read timeout (how a client leaves).
"""

from __future__ import annotations

import contextlib
import gzip
import sqlite3
import zlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import pytest

import trio_ingest as ti
from trio_ingest.testing import assert_accounted

pytestmark = pytest.mark.anyio


class Price(msgspec.Struct):
    price: float


class GatedMemory(ti.sinks.Memory):
    """An idempotent memory sink whose writes wait while ``gate`` is closed."""

    def __init__(self) -> None:
        super().__init__(idempotent=True)
        self.gate = anyio.Event()
        self.gate.set()

    def close_gate(self) -> None:
        self.gate = anyio.Event()

    async def write_batch(self, events: Sequence[ti.Event]) -> None:
        await self.gate.wait()
        await super().write_batch(events)


class SlowSQLite(ti.sinks.SQLite):
    """SQLite (idempotent on the id), a little slow per batch, held while the gate is closed."""

    def __init__(self, path: Path, table: str) -> None:
        super().__init__(path, table, synchronous="OFF", max_batch=8)
        self.gate = anyio.Event()

    async def write_batch(self, events: Any) -> None:
        await self.gate.wait()
        await anyio.sleep(0.002)
        await super().write_batch(events)


async def wait_until(condition: Any) -> None:
    with anyio.fail_after(10):
        while not condition():  # noqa: ASYNC110 -- polling the server's state
            await anyio.sleep(0.002)


@contextlib.asynccontextmanager
async def serving(
    pipeline: ti.Pipeline, source: ti.sources.HTTP
) -> AsyncIterator[tuple[ti.PipelineHandle, httpx.AsyncClient]]:
    async with anyio.create_task_group() as tg:
        handle = await tg.start(pipeline.serve)
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{source.port}", limits=limits, timeout=30
        ) as client:
            yield handle, client
        if not handle.stopped:
            await handle.stop()


def stored_ids(path: Path, table: str) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [row[0] for row in db.execute(f"SELECT id FROM {table}")]


async def test_concurrent_posters_into_a_slow_sqlite_sink(tmp_path: Path) -> None:
    path, table = tmp_path / "events.db", "http_posters"
    sink = SlowSQLite(path, table)
    source = ti.sources.HTTP(port=0, queue_timeout=0.05)
    pipeline = ti.Pipeline(source, sink=sink, capacity=8, max_batch=8)
    answers: dict[str, tuple[int, list[str]]] = {}  # Idempotency-Key -> (status, ids)

    async def post(client: httpx.AsyncClient, key: str, n: int) -> int:
        body = [{"poster": key, "i": i} for i in range(n)]
        r = await client.post("/events", json=body, headers={"Idempotency-Key": key})
        assert r.status_code in (200, 503), r.text
        ids = r.json()["ids"] if r.status_code == 200 else [f"{key}:{i}" for i in range(n)]
        if r.status_code == 200:
            assert r.json()["accepted"] == n and ids == [f"{key}:{i}" for i in range(n)]
        else:
            assert r.headers["retry-after"] == "1"
        answers[key] = (r.status_code, ids)
        return r.status_code

    async with serving(pipeline, source) as (handle, client):
        # the sink is held: the edge fills, the source waits on it, the next request gets 503
        async with anyio.create_task_group() as tg:
            for k in range(8):  # more than the edge, the sink and the source hold
                tg.start_soon(post, client, f"held-{k}", 5)
            await wait_until(lambda: any(s == 503 for s, _ in answers.values()))
            sink.gate.set()
        async with anyio.create_task_group() as tg:
            for poster in range(12):

                async def many(poster: int = poster) -> None:
                    for r in range(6):
                        await post(client, f"p{poster}-r{r}", 1 + (poster + r) % 7)

                tg.start_soon(many)
        ok = {i for s, ids in answers.values() if s == 200 for i in ids}
        refused = {i for s, ids in answers.values() if s == 503 for i in ids}
        rows = stored_ids(path, table)
        assert sorted(rows) == sorted(ok)  # every 2xx id once; nothing of a 503 request
        assert refused and not refused & set(rows)
        # retries with the same keys: the refused ones go in, the answered ones stay single
        for key, (status, _) in list(answers.items()):
            if status == 503 or key.endswith("-r0"):
                n = len(answers[key][1])
                while await post(client, key, n) != 200:
                    pass
        report = await handle.stop()
    rows = stored_ids(path, table)
    every = {i for _, ids in answers.values() for i in ids}
    assert len(rows) == len(set(rows)) and set(rows) == every
    assert_accounted(report)


BAD_BODIES: list[tuple[str, bytes, dict[str, str], int, str]] = [
    ("broken JSON", b'{"a": 1,\n "b": }', {}, 400, "malformed JSON: line 2 column 7"),
    ("a scalar", b"12", {}, 400, "must be a JSON object or an array"),
    ("empty", b"", {}, 400, "the body is empty"),
    ("not UTF-8", b'{"a": "\xff"}', {}, 400, "malformed JSON"),
    ("over max_body", b"[" + b"1," * 600 + b"1]", {}, 413, "over 1000 bytes"),
    ("gzip bomb", gzip.compress(b"[" + b" " * 100_000 + b"]"), {"content-encoding": "gzip"}, 413,
     "over 1000 bytes once decoded"),
    ("bad gzip", b"not gzip at all", {"content-encoding": "gzip"}, 400, "not valid gzip"),
    ("truncated gzip", gzip.compress(b'{"a": 1}')[:-6], {"content-encoding": "gzip"}, 400,
     "truncated"),
    ("brotli", b"{}", {"content-encoding": "br"}, 415, "unsupported Content-Encoding"),
    ("too many events", b"[" + b"{}," * 20 + b"{}]", {}, 413, "at most 10 events per request"),
    ("no id field", b'[{"id": "a"}, {"x": 1}]', {}, 400, "event 1 has no 'id' field"),
]


@pytest.mark.parametrize(
    ("body", "headers", "status", "error"),
    [case[1:] for case in BAD_BODIES],
    ids=[case[0] for case in BAD_BODIES],
)
async def test_bad_requests_are_refused_whole(
    body: bytes, headers: dict[str, str], status: int, error: str
) -> None:
    sink, dead = ti.sinks.Memory(), ti.sinks.Memory()
    source = ti.sources.HTTP(port=0, id_field="id", max_body=1000, max_events=10)
    pipeline = ti.Pipeline(source, sink=sink, dead_letter=dead)
    async with serving(pipeline, source) as (handle, client):
        r = await client.post("/events", content=body, headers=headers)
        assert r.status_code == status, r.text
        assert error in r.json()["error"]
        report = await handle.stop()
    assert report.received == 0 and sink.events == [] and dead.events == []


async def test_ndjson_with_bad_lines_names_every_bad_line_and_takes_nothing() -> None:
    sink = ti.sinks.Memory()
    source = ti.sources.HTTP(port=0)
    pipeline = ti.Pipeline(source, sink=sink)
    body = b'{"a": 1}\n{"a": \n\n{"a": 3}\n[1, 2\n'
    async with serving(pipeline, source) as (handle, client):
        r = await client.post(
            "/events", content=body, headers={"content-type": "application/x-ndjson"}
        )
        assert r.status_code == 400
        assert r.json() == {
            "error": "malformed NDJSON: 2 bad line(s); nothing was taken",
            "lines": [
                {"line": 2, "reason": "column 7: Expecting value"},
                {"line": 5, "reason": "column 6: Expecting ',' delimiter"},
            ],
        }
        report = await handle.stop()
    assert report.received == 0 and sink.events == []


async def test_gzip_ndjson_with_invalid_events_reports_their_dead_letters() -> None:
    sink, dead = ti.sinks.Memory(), ti.sinks.Memory()
    source = ti.sources.HTTP(port=0, id_field="id")
    pipeline = ti.Pipeline(source, ti.validate(Price, convert=False), sink=sink, dead_letter=dead)
    lines = b'{"id": "a", "price": 1.5}\n{"id": "b", "price": "12,5"}\n{"id": "c", "price": 2}\n'
    async with serving(pipeline, source) as (handle, client):
        # several JSON documents, one per line, are NDJSON whatever the content type says
        r = await client.post(
            "/events", content=gzip.compress(lines), headers={"content-encoding": "gzip"}
        )
        assert r.status_code == 200, r.text
        assert r.json() == {
            "accepted": 2, "filtered": 0, "dead_lettered": 1, "ids": ["a", "b", "c"],
            "errors": [{"id": "b", "error": '$.price: expected float, got "12,5"'}],
        }
        deflated = zlib.compress(b'{"id": "d", "price": 3}')
        r = await client.post("/events", content=deflated, headers={"content-encoding": "deflate"})
        assert r.status_code == 200 and r.json()["accepted"] == 1
        report = await handle.stop()
    assert sorted(e.id for e in sink.events) == ["a", "c", "d"]
    assert [lt["event"]["id"] for lt in dead.dead_letters] == ["b"]
    assert_accounted(report)


async def test_ack_accept_answers_202_once_the_events_are_in() -> None:
    sink = GatedMemory()
    sink.close_gate()
    source = ti.sources.HTTP(port=0, ack="accept")
    pipeline = ti.Pipeline(source, sink=sink)
    async with serving(pipeline, source) as (handle, client):
        r = await client.post("/events", json=[{"n": 1}, {"n": 2}])
        assert r.status_code == 202
        assert r.json()["accepted"] == 2 and len(r.json()["ids"]) == 2
        assert sink.events == []  # accepted, not yet written: that is what 202 says
        sink.gate.set()
        await wait_until(lambda: len(sink.events) == 2)
        assert [e.id for e in sink.events] == r.json()["ids"]
        await handle.stop()


async def test_graceful_stop_answers_in_flight_then_refuses_then_drains() -> None:
    sink = GatedMemory()
    sink.close_gate()
    source = ti.sources.HTTP(port=0)
    pipeline = ti.Pipeline(source, sink=sink)
    async with serving(pipeline, source) as (handle, client):
        assert (await client.get("/readyz")).status_code == 200
        results: dict[str, httpx.Response] = {}

        async def in_flight() -> None:
            results["held"] = await client.post("/events", json={"n": 1})

        async with anyio.create_task_group() as tg:
            tg.start_soon(in_flight)
            await wait_until(lambda: handle.report().received == 1)
            tg.start_soon(handle.stop)
            await wait_until(lambda: not source.accepting)
            ready = await client.get("/readyz")
            assert ready.status_code == 503 and ready.headers["retry-after"] == "1"
            late = await client.post("/events", json={"n": 2})
            assert late.status_code == 503 and "stopping" in late.json()["error"]
            assert "held" not in results  # still waiting for its event to be written
            sink.gate.set()
        assert results["held"].status_code == 200 and results["held"].json()["accepted"] == 1
    assert [e.payload for e in sink.events] == [{"n": 1}]


# a poster whose connection the server closes after the drain leaves httpx's request-body
# generator unfinished (a client-side artifact of the TransportError the test expects)
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in.*ByteStream:pytest.PytestUnraisableExceptionWarning"
)
async def test_graceful_stop_under_load_loses_no_accepted_event() -> None:
    sink = GatedMemory()
    source = ti.sources.HTTP(port=0, queue_timeout=0.05)
    pipeline = ti.Pipeline(source, sink=sink, capacity=8, max_batch=8)
    accepted: set[str] = set()
    answered = 0
    async with serving(pipeline, source) as (handle, client):

        async def poster(k: int) -> None:
            nonlocal answered
            for r in range(1_000):
                try:
                    resp = await client.post("/events", json=[{"k": k, "r": r}] * 3)
                except httpx.TransportError:
                    return  # the server closed after the drain
                answered += 1
                if resp.status_code == 200:
                    accepted.update(resp.json()["ids"])
                elif "stopping" in resp.text:
                    return

        async with anyio.create_task_group() as tg:
            for k in range(8):
                tg.start_soon(poster, k)
            await wait_until(lambda: answered >= 40)
            report = await handle.stop()
    stored = {e.id for e in sink.events}
    assert accepted and stored == accepted  # every 200 stored; nothing unanswered stored
    assert report.delivered == len(stored)
    assert_accounted(report)


async def test_a_client_that_leaves_loses_nothing_and_duplicates_nothing() -> None:
    sink = GatedMemory()
    sink.close_gate()
    source = ti.sources.HTTP(port=0, queue_timeout=30, id_field="id")
    pipeline = ti.Pipeline(source, sink=sink, capacity=2, max_batch=2)
    async with serving(pipeline, source) as (handle, client):
        # taken, then the client gives up waiting for the commit: the events go on
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/events", json=[{"id": "a"}, {"id": "b"}], timeout=0.2)
        # the edge is full now; this one waits to enter, and its client leaves: withdrawn
        await wait_until(lambda: handle.report().received == 2)
        async with anyio.create_task_group() as tg:

            async def fill(ids: list[str]) -> None:
                r = await client.post("/events", json=[{"id": i} for i in ids])
                assert r.status_code == 200

            tg.start_soon(fill, ["c", "d"])  # in the edge behind a and b
            await wait_until(lambda: handle.report().received == 4)
            tg.start_soon(fill, ["e", "f"])  # read: the source now waits for room to send it
            await wait_until(lambda: handle.report().received == 6)
            with pytest.raises(httpx.ReadTimeout):
                await client.post("/events", json=[{"id": "gone"}], timeout=0.2)
            await wait_until(lambda: not source._offers)
            sink.gate.set()
        assert handle.report().received == 6
        r = await client.post("/events", json=[{"id": "a"}, {"id": "b"}])  # the retry
        assert r.status_code == 200 and r.json()["accepted"] == 2
        report = await handle.stop()
    # no "gone" (it never entered), no duplicate of the retried a and b
    assert sorted(e.id for e in sink.events) == ["a", "b", "c", "d", "e", "f"]
    assert report.received == 8 and report.delivered == 8
    assert_accounted(report)


async def test_routes() -> None:
    source = ti.sources.HTTP(port=0)
    pipeline = ti.Pipeline(source, sink=ti.sinks.Memory())
    async with serving(pipeline, source) as (_handle, client):
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/readyz")).json() == {"status": "ready"}
        wrong = await client.get("/events")
        assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
        assert (await client.get("/nowhere")).status_code == 404


def test_options_are_checked() -> None:
    with pytest.raises(ti.ConfigError, match="'ack' must be 'commit' or 'accept'"):
        ti.sources.HTTP(ack="later")
    with pytest.raises(ti.ConfigError, match="'port' must be an integer"):
        ti.sources.HTTP(port=70_000)
    with pytest.raises(ti.ConfigError, match="'path' must be a path"):
        ti.sources.HTTP(path="events")
    with pytest.raises(ti.ConfigError, match="'queue_timeout' must be"):
        ti.sources.HTTP(queue_timeout=0)


async def test_a_port_in_use_is_a_source_error() -> None:
    first = ti.sources.HTTP(port=0)
    pipeline = ti.Pipeline(first, sink=ti.sinks.Memory())
    async with serving(pipeline, first):
        second = ti.Pipeline(ti.sources.HTTP(port=first.port), sink=ti.sinks.Memory())
        with pytest.raises(ti.SourceError, match="cannot listen"):
            await second.run()


# -- ingest_app, mounted in a Starlette app that embeds the pipeline -------------------------


async def test_ingest_app_mounted_in_starlette() -> None:
    from hypercorn.config import Config
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    sink, dead = ti.sinks.Memory(), ti.sinks.Memory()
    pipeline = ti.Pipeline(
        ti.sources.from_iterable([]), ti.validate(Price, convert=False), sink=sink,
        dead_letter=dead, capacity=4,
    )
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    shutdown = anyio.Event()
    import sniffio

    if sniffio.current_async_library() == "trio":
        from hypercorn.trio import serve
    else:
        from hypercorn.asyncio import serve  # type: ignore[assignment]

    async with anyio.create_task_group() as tg:
        handle = await tg.start(pipeline.serve)

        async def home(_request: Any) -> PlainTextResponse:
            return PlainTextResponse("the app's own page")

        app = Starlette(routes=[
            Route("/", home),
            Mount("/ingest", ti.http.ingest_app(handle, id_field="id")),
        ])
        tg.start_soon(lambda: serve(app, config, shutdown_trigger=shutdown.wait, mode="asgi"))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/")).text == "the app's own page"
            r = await client.post(
                "/ingest/events", json=[{"id": "x", "price": 1}, {"id": "y", "price": "no"}]
            )
            assert r.status_code == 200, r.text
            assert r.json()["accepted"] == 1 and r.json()["dead_lettered"] == 1
            assert r.json()["errors"] == [{"id": "y", "error": '$.price: expected float, got "no"'}]
            five = [{"id": str(i), "price": i} for i in range(5)]
            big = await client.post("/ingest/events", json=five)
            assert big.status_code == 413 and "at most 4 events" in big.json()["error"]
            assert (await client.get("/ingest/readyz")).status_code == 200
            await handle.stop()
            assert (await client.get("/ingest/readyz")).status_code == 503
            late = await client.post("/ingest/events", json={"id": "z", "price": 1})
            assert late.status_code == 503
        shutdown.set()
    assert [e.id for e in sink.events] == ["x"]


async def test_run_with_validate_fused_into_the_source_task() -> None:
    sink, dead = ti.sinks.Memory(), ti.sinks.Memory()
    source = ti.sources.HTTP(port=0, id_field="id")
    pipeline = ti.Pipeline(source, ti.validate(Price), sink=sink, dead_letter=dead)
    async with anyio.create_task_group() as tg:
        tg.start_soon(pipeline.run)  # run(): validate runs fused in the source's own task
        await wait_until(lambda: source.accepting)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{source.port}") as client:
            r = await client.post("/events", json=[{"id": "a", "price": 1}, {"id": "b"}])
            assert r.status_code == 200
            assert r.json() == {
                "accepted": 1, "filtered": 0, "dead_lettered": 1, "ids": ["a", "b"],
                "errors": [{"id": "b", "error": "$.price: required field missing"}],
            }
        pipeline.request_stop()
    assert sink.events[0].payload == Price(1.0)
    report = pipeline.report()
    assert report is not None
    assert_accounted(report)


async def test_other_routes_go_to_the_fallback_app() -> None:
    async def metrics(scope: Any, receive: Any, send: Any) -> None:
        body = f"# the fallback saw {scope['path']}\n".encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body})

    source = ti.sources.HTTP(port=0, fallback=metrics)
    pipeline = ti.Pipeline(source, sink=ti.sinks.Memory())
    async with serving(pipeline, source) as (_handle, client):
        assert (await client.get("/metrics")).text == "# the fallback saw /metrics\n"
        assert (await client.post("/events", json={"n": 1})).status_code == 200
        assert source.app.statuses == {200: 1}


async def test_ingest_app_tells_the_truth_when_stop_comes_while_a_request_waits() -> None:
    import socket

    import sniffio
    from hypercorn.config import Config

    if sniffio.current_async_library() == "trio":
        from hypercorn.trio import serve
    else:
        from hypercorn.asyncio import serve  # type: ignore[assignment]
    sink = GatedMemory()
    sink.close_gate()
    pipeline = ti.Pipeline(ti.sources.from_iterable([]), sink=sink, capacity=2, max_batch=2)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    shutdown = anyio.Event()
    answers: dict[str, httpx.Response] = {}
    async with anyio.create_task_group() as tg:
        handle = await tg.start(pipeline.serve)
        app = ti.http.ingest_app(handle, queue_timeout=30)
        tg.start_soon(lambda: serve(app, config, shutdown_trigger=shutdown.wait, mode="asgi"))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

            async def post(name: str, n: int) -> None:
                answers[name] = await client.post("/events", json=[{"n": i} for i in range(n)])

            async with anyio.create_task_group() as posters:
                posters.start_soon(post, "held", 2)  # taken by the sink, which waits
                await wait_until(lambda: handle.report().received == 2)
                posters.start_soon(post, "queued", 2)  # fills the edge
                await wait_until(lambda: handle.report().received == 4)
                posters.start_soon(post, "waiting", 2)  # waits for room (or meets the stop)
                posters.start_soon(handle.stop)
                await wait_until(lambda: handle.closed)
                late = await client.post("/events", json={"n": 9})
                assert late.status_code == 503 and "stopping" in late.json()["error"]
                sink.gate.set()
        shutdown.set()
    assert answers["held"].status_code == answers["queued"].status_code == 200
    # the waiting request is answered truthfully either way: taken (200) or not at all (503)
    waiting = answers["waiting"].status_code
    assert waiting in (200, 503)
    assert len(sink.events) == (6 if waiting == 200 else 4)


async def test_requests_read_together_are_answered_each_with_its_own_outcome() -> None:
    sink, dead = GatedMemory(), ti.sinks.Memory()
    sink.close_gate()
    source = ti.sources.HTTP(port=0, id_field="id", queue_timeout=30)
    pipeline = ti.Pipeline(
        source, ti.validate(Price, convert=False), sink=sink, dead_letter=dead,
        capacity=2, max_batch=2,
    )
    answers: dict[str, Any] = {}

    def received() -> int:
        report = pipeline.report()
        return report.received if report is not None else 0

    async with anyio.create_task_group() as tg:
        tg.start_soon(pipeline.run)  # validate fused into the source's task: one edge to the sink
        await wait_until(lambda: source.accepting)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{source.port}") as client:

            async def post(name: str, *events: dict[str, Any]) -> None:
                r = await client.post("/events", json=list(events))
                answers[name] = (r.status_code, r.json())

            async with anyio.create_task_group() as posters:
                posters.start_soon(post, "a", {"id": "a1", "price": 1}, {"id": "a2", "price": 2})
                await wait_until(lambda: received() == 2)  # the sink holds them
                posters.start_soon(post, "b", {"id": "b1", "price": 1}, {"id": "b2", "price": 2})
                await wait_until(lambda: received() == 4)  # in the edge
                posters.start_soon(post, "c", {"id": "c1", "price": 1})
                await wait_until(lambda: received() == 5)  # read: the source waits for room
                posters.start_soon(post, "d", {"id": "d1", "price": "x"})
                posters.start_soon(post, "e", {"id": "e1", "price": 3})
                await wait_until(lambda: len(source._offers) == 2)
                reads = source._reads
                sink.gate.set()
            assert source._reads == reads + 1  # d and e went in as one read, two parts
        pipeline.request_stop()
    assert answers["d"] == (200, {
        "accepted": 0, "filtered": 0, "dead_lettered": 1, "ids": ["d1"],
        "errors": [{"id": "d1", "error": '$.price: expected float, got "x"'}],
    })
    assert answers["e"] == (200, {"accepted": 1, "filtered": 0, "dead_lettered": 0, "ids": ["e1"]})
    assert all(answers[k][1]["accepted"] == len(answers[k][1]["ids"]) for k in "abc")
    report = pipeline.report()
    assert report is not None
    assert_accounted(report)
