"""The user-facing builders: the graph model plus ``run()`` / ``serve()``.

This module sits above both ``graph`` (the model) and ``runtime`` (what runs it),
as an HTTP client sits above its transports: the model never imports the runtime.
"""

from __future__ import annotations

import anyio
import anyio.abc

from ._errors import ConfigError
from .graph._graph import GraphModel, PipelineModel
from .runtime._handle import PipelineHandle
from .runtime._report import RunReport
from .runtime._runtime import Runtime

__all__ = ("Graph", "Pipeline")


class Graph(GraphModel):
    __doc__ = GraphModel.__doc__

    _runtime: Runtime | None = None

    # -- running --------------------------------------------------------------
    async def run(self) -> RunReport:
        """Run until every source is exhausted and every event is finished.

        Returns:
            The final :class:`RunReport`.

        Raises:
            GraphError: The graph is malformed (before anything starts).
            ConfigError: This graph is already running (build one graph per run).
            Exception: The first failure of a node, unwrapped, with a note naming
                the node; ``ExceptionGroup`` when several nodes failed at once.
        """
        runtime = self._start(serving=False)
        await runtime.run()
        return runtime.report()

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[PipelineHandle] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run inside the caller's task group until ``handle.stop()``; ``nursery.start`` it.

        ``task_status.started`` hands back a :class:`PipelineHandle` once every
        node is open: a producer entry (``send``/``send_batch``), ``stop``, and
        live ``report``. Keeps running after the sources are exhausted, until
        ``stop()``.

        Raises:
            GraphError: The graph is malformed (before anything starts).
            ConfigError: This graph is already running (build one graph per run).
            Exception: The first failure of a node, as for :meth:`run`.
        """
        runtime = self._start(serving=True)
        await runtime.run(task_status=task_status)

    def _start(self, *, serving: bool) -> Runtime:
        if self._runtime is not None and not self._runtime.finished:
            raise ConfigError("this graph is already running; build one graph per run")
        self.validate()
        self._runtime = Runtime(self, serving=serving)
        return self._runtime

    def report(self) -> RunReport | None:
        """The live report of the run under way (or the last one); None before any run."""
        return self._runtime.report() if self._runtime is not None else None

    def request_stop(self) -> None:
        """Begin a graceful stop of the run under way (from any task); returns at once.

        Sources stop reading, what was read drains, sinks flush, offsets commit;
        ``run()`` then returns its report. Does nothing when nothing runs.
        """
        if self._runtime is not None:
            self._runtime.request_stop()

    def abort(self) -> None:
        """Cancel the run under way now; what is in flight stays uncommitted."""
        if self._runtime is not None:
            self._runtime.abort()

    async def stop(self, timeout: float | None = None) -> RunReport | None:
        """Stop the run under way gracefully, cutting it short after ``timeout`` seconds.

        The same as ``PipelineHandle.stop`` for a graph started with ``run()``.
        ``timeout`` defaults to ``shutdown_timeout``. Returns the final report, or
        None when nothing was running.
        """
        runtime = self._runtime
        if runtime is None or runtime.done is None:
            return None
        return await runtime.stop(timeout)


class Pipeline(PipelineModel, Graph):
    __doc__ = PipelineModel.__doc__
