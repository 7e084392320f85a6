"""The HTTP ingest endpoint as an ASGI app, for applications that embed a pipeline.

An application that runs the pipeline with ``serve()`` mounts the endpoint of
:class:`trio_ingest.sources.HTTP` (the same code: :class:`~trio_ingest.sources._http.IngestApp`)
in its own ASGI app; events go in through the handle::

    async with anyio.create_task_group() as tg:
        handle = await tg.start(pipeline.serve)
        app = Starlette(routes=[Mount("/ingest", ti.http.ingest_app(handle))])
        ...  # serve app with Hypercorn (trio or asyncio) in the same task group

``POST /ingest/events`` then answers exactly as the source does (see that module).
One difference: a request carries at most as many events as the first edge holds
(the handle takes a batch that size whole or not at all), 413 past it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from ._acks import Completion
from ._event import Event
from .sources._http import ASGIApp, IngestApp, IngestOptions, Receive, watched

if TYPE_CHECKING:
    from .runtime._handle import PipelineHandle

__all__ = ("IngestApp", "IngestOptions", "ingest_app")


class HandleGate:
    """Events of a request into a serving pipeline, through its handle."""

    def __init__(self, handle: PipelineHandle) -> None:
        self.handle = handle

    @property
    def accepting(self) -> bool:
        return not self.handle.closed and not self.handle.stopped

    @property
    def max_events(self) -> int | None:
        return self.handle.capacity

    async def submit(
        self,
        events: list[Event],
        completion: Completion,
        timeout: float,
        ack: str,
        receive: Receive,
    ) -> bool | None:
        """All of ``events`` (at most the edge capacity: in whole) or, after ``timeout``
        or a disconnect of the client, none.

        Raises:
            anyio.ClosedResourceError: The pipeline is stopping; nothing was taken.
        """
        taken = closed = False

        async def send() -> None:
            nonlocal taken, closed
            with anyio.move_on_after(timeout):
                try:
                    await self.handle.send_batch(events, completion=completion)
                except anyio.ClosedResourceError:
                    closed = True  # raised below, not through the watcher's task group
                    return
                taken = True

        here = await watched(send, receive)
        if closed:
            raise anyio.ClosedResourceError("the pipeline is stopping")
        return taken if here or taken else None


def ingest_app(
    handle: PipelineHandle,
    *,
    path: str = "/events",
    ack: str = "commit",
    id_field: str | None = None,
    max_body: int = 10 * 1024 * 1024,
    max_events: int = 10_000,
    queue_timeout: float = 5.0,
    retry_after: int = 1,
    health_path: str = "/healthz",
    ready_path: str = "/readyz",
    fallback: ASGIApp | None = None,
) -> IngestApp:
    """The ingest endpoint of ``ti.sources.HTTP`` as an ASGI app feeding ``handle``.

    The options are those of :class:`trio_ingest.sources.HTTP`; paths are relative
    to where the app is mounted.

    Raises:
        ConfigError: An option is invalid.
    """
    options = IngestOptions(
        path=path, ack=ack, id_field=id_field, max_body=max_body, max_events=max_events,
        queue_timeout=queue_timeout, retry_after=retry_after, health_path=health_path,
        ready_path=ready_path,
    )
    return IngestApp(HandleGate(handle), options, name=handle.name, fallback=fallback)
