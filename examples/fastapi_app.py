"""A FastAPI app that embeds a pipeline: requests feed it through its handle.

The pipeline runs for the app's whole life, started in the lifespan's task
group (``serve``) and stopped gracefully (drained, flushed, committed) when the
server shuts down. Served by Hypercorn on Trio.

Run: ``python examples/fastapi_app.py [DB]``: it serves on a free port, posts a
few hundred events to itself, shuts down and prints the final report.
"""

import contextlib
import functools
import json
import socket
import sys
import tempfile
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import trio
from fastapi import FastAPI
from hypercorn.config import Config
from hypercorn.trio import serve

import trio_ingest as ti


def make_app(db: Path) -> FastAPI:
    pipeline = ti.Pipeline(
        ti.sources.from_iterable([]),  # fed only through the handle
        ti.map(lambda p: {**p, "seen": True}),
        sink=ti.sinks.SQLite(db, "events"),
        dead_letter=ti.sinks.JsonLines(db.with_suffix(".dead.jsonl")),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            app.state.handle = await tg.start(pipeline.serve)
            yield
            app.state.report = await app.state.handle.stop(timeout=10)

    app = FastAPI(lifespan=lifespan)

    @app.post("/events")
    async def post_event(event: dict) -> dict:
        # blocks while the pipeline's first edge is full: backpressure reaches the client
        await app.state.handle.send(ti.Event(id=str(event["id"]), payload=event))
        return {"accepted": event["id"]}

    @app.get("/stats")
    async def stats() -> dict:
        return app.state.handle.report().summary()

    return app


def _post(port: int, body: dict) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/events", data=json.dumps(body).encode(),
        headers={"content-type": "application/json"}, method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


async def main(db: Path, events: int = 200) -> None:
    app = make_app(db)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    done = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(serve, app, config, shutdown_trigger=done.wait))
        for i in range(events):
            await trio.to_thread.run_sync(_post, port, {"id": f"req-{i}", "n": i})
        done.set()
    report = app.state.report
    print(f"posted={events} delivered={report.delivered} balanced={report.balanced}")


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()) / "api.sqlite"
    trio.run(main, target)
