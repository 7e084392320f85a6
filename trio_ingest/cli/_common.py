"""What every ``trio-ingest`` command shares: errors, output, the live view, signals.

Terminal output belongs to the CLI: progress and logs go to stderr, the
summary (a table, or JSON with ``--json``) to stdout, and every error is one
line ``error: ...`` on stderr with a non-zero exit code, never a traceback.

Exit codes:

- 0: the run completed (events that were dead-lettered included; the
  summary counts them), or a SIGINT/SIGTERM stopped it gracefully: what was
  read was drained, written and committed, and a rerun resumes after it.
- 1: the pipeline failed (a node raised, a sink could not open...).
- 2: bad usage or configuration (a flag value, a missing file...).
- 128 + signal (130 for SIGINT, 143 for SIGTERM): the stop was forced (a
  second signal) or cut short by the shutdown deadline: events were left in
  flight, uncommitted, to be delivered again by the next run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, NoReturn, TypeVar

import attrs
import click
import trio
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from .._pipeline import Graph
from ..runtime._report import RunReport

__all__ = (
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliError",
    "Command",
    "Group",
    "Output",
    "ProgressView",
    "RunOutcome",
    "describe_error",
    "fail",
    "finish",
    "output_options",
    "parse_options",
    "run_command",
    "run_graph",
    "run_trio",
)

log = logging.getLogger("trio_ingest.cli")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

F = TypeVar("F", bound=Callable[..., Any])


# -- one-line errors ----------------------------------------------------------------


class CliError(click.ClickException):
    """An error shown as one line ``error: <message>`` on stderr."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = exit_code
        # click reads exit_code from the instance; its stub declares a class variable
        self.exit_code = exit_code  # type: ignore[misc]

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def fail(message: str, exit_code: int = EXIT_USAGE) -> NoReturn:
    """Stop the command with ``error: message`` and ``exit_code``.

    Raises:
        CliError: Always.
    """
    raise CliError(message, exit_code)


class _OneLineUsage(click.Command):
    """Usage errors as one line, like every other error of the command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            message = exc.format_message()
            raise CliError(message[:1].lower() + message[1:], EXIT_USAGE) from None


class Command(_OneLineUsage):
    """A click command whose usage errors are one line, like every other error."""


class Group(_OneLineUsage, click.Group):
    """A click group whose usage errors are one line too."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            message = exc.format_message()
            raise CliError(message[:1].lower() + message[1:], EXIT_USAGE) from None


def describe_error(error: BaseException) -> str:
    """One line saying what failed and where (the runtime's note names the node)."""
    if isinstance(error, BaseExceptionGroup):
        leaves = list(_leaves(error))
        first = describe_error(leaves[0])
        return first if len(leaves) == 1 else f"{first} (and {len(leaves) - 1} more failure(s))"
    where = [n[len("raised in "):] for n in getattr(error, "__notes__", ())
             if n.startswith("raised in ")]
    message = str(error) or type(error).__name__
    if not isinstance(error, click.ClickException) and type(error).__module__ == "builtins":
        message = f"{type(error).__name__}: {message}"
    if where:
        node = where[0].removesuffix(" of the pipeline")
        name = node.rpartition(" ")[2]
        # a message that already starts with the node's name says where: not twice
        message = message.removeprefix(f"{name}: ").removeprefix(f"{name} ")
        line = f"{node}: {message}"
    else:
        line = message
    return " ".join(line.split())


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


def parse_options(pairs: tuple[str, ...]) -> dict[str, str]:
    """``-o KEY=VALUE`` pairs as a dict of strings, for ``factory(source, **options)``.

    Raises:
        CliError: A pair is not KEY=VALUE with KEY a Python name.
    """
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            fail(f"-o/--option must be KEY=VALUE with KEY a Python name, got {pair!r}")
        options[key] = value
    return options


# -- output options -----------------------------------------------------------------


@attrs.frozen
class Output:
    """How a command reports: ``--quiet``, ``--json``, ``--log-level``."""

    quiet: bool = False
    json: bool = False
    log_level: str = "error"
    log_format: str = "text"
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"

    @property
    def metrics(self) -> tuple[str, int] | None:
        """``(host, port)`` to serve metrics on, from ``--metrics-port``."""
        return None if self.metrics_port is None else (self.metrics_host, self.metrics_port)

    def stderr(self) -> Console:
        return Console(file=sys.stderr, stderr=True, highlight=False)

    def stdout(self) -> Console:
        return Console(file=sys.stdout, highlight=False)

    @contextlib.contextmanager
    def logging(self, console: Console) -> Iterator[None]:
        """Send the ``trio_ingest`` loggers to ``console`` at the chosen level, for a run."""
        logger = logging.getLogger("trio_ingest")
        level = getattr(logging, self.log_level.upper())
        handler: logging.Handler
        if self.log_format == "json":
            from ..observe._logging import JsonFormatter

            handler = logging.StreamHandler(console.file)
            handler.setFormatter(JsonFormatter())
        else:
            handler = RichHandler(console=console, show_path=False, markup=False,
                                  rich_tracebacks=False)
        handler.setLevel(level)
        previous = logger.level
        logger.addHandler(handler)
        logger.setLevel(level)
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.setLevel(previous)


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    ctx.meta[f"trio_ingest.{param.name}"] = value
    return value


def output_options(fn: F) -> F:
    """Add ``--quiet``, ``--json``, ``--log-level``, ``--log-format`` and ``--metrics-port``.

    The last three reach :func:`make_output` through the click context.
    """
    fn = click.option(
        "--metrics-host", default="127.0.0.1", show_default=True, expose_value=False,
        callback=_remember, help="Interface for --metrics-port.",
    )(fn)
    fn = click.option(
        "--metrics-port", type=click.IntRange(0, 65535), default=None, expose_value=False,
        callback=_remember,
        help="Serve /metrics (Prometheus), /api/snapshot and the live dashboard on this port "
             "while the pipeline runs (0: any free port).",
    )(fn)
    fn = click.option(
        "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
        expose_value=False, callback=_remember,
        help="Log lines for people (text) or as JSON objects, one per line.",
    )(fn)
    fn = click.option(
        "--log-level",
        type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
        default="error",
        show_default=True,
        help="Log level of trio_ingest's messages (retries, dead letters...) on stderr.",
    )(fn)
    fn = click.option("--json", "as_json", is_flag=True,
                      help="Print the summary as JSON on stdout (for scripts).")(fn)
    fn = click.option("-q", "--quiet", is_flag=True,
                      help="No progress and no summary; only errors (and --json).")(fn)
    return fn


def make_output(quiet: bool, as_json: bool, log_level: str) -> Output:
    meta = click.get_current_context().meta
    return Output(
        quiet=quiet,
        json=as_json,
        log_level=log_level.lower(),
        log_format=meta.get("trio_ingest.log_format", "text"),
        metrics_port=meta.get("trio_ingest.metrics_port"),
        metrics_host=meta.get("trio_ingest.metrics_host", "127.0.0.1"),
    )


# -- the live progress view ---------------------------------------------------------


class _FieldColumn(ProgressColumn):
    """Shows one of the task's fields, already rendered as rich Text."""

    def __init__(self, field: str) -> None:
        super().__init__()
        self.field = field

    def render(self, task: Task) -> Text:
        value = task.fields.get(self.field)
        return value if isinstance(value, Text) else Text(str(value or ""))


class _TwoLineProgress(Progress):
    """The bar on one line, the pipeline's state (queues, backpressure...) below it."""

    status: Text = Text()

    def get_renderables(self) -> Iterator[Any]:
        yield self.make_tasks_table(self.tasks)
        yield self.status


class ProgressView:
    """A progress bar on stderr fed by the pipeline's live report every ``interval`` s.

    First line: what is done (against ``total`` when known) and the
    throughput over the last seconds. Second line: the events queued in the
    edges against their capacity, the seconds producers spent blocked by
    backpressure (with a mark while a producer is blocked), retries and dead
    letters.

    Args:
        console: Where to draw (stderr).
        title: The bar's label.
        total: The amount ``completed(report)`` reaches at the end; ``None``
            for an open-ended run (no bar).
        completed: What the bar shows as done (default: finished events).
        unit: How ``completed`` is counted: ``"events"`` or ``"bytes"``.
        interval: Seconds between redraws.
    """

    def __init__(
        self,
        console: Console,
        *,
        title: str,
        total: float | None = None,
        completed: Callable[[RunReport], float] | None = None,
        unit: str = "events",
        interval: float = 0.25,
    ) -> None:
        self.console = console
        self.title = title
        self.total = total
        self.completed = completed or _finished
        self.unit = unit
        self.interval = interval
        self.stopping = False
        self._samples: deque[tuple[float, int]] = deque()

    async def run(self, graph: Graph) -> None:
        """Redraw until cancelled; the last frame stays on the screen."""
        columns: list[ProgressColumn] = [TextColumn("[bold]{task.description}")]
        if self.total is not None:
            columns += [BarColumn(bar_width=24), TextColumn("{task.percentage:>3.0f}%")]
        columns += [_FieldColumn("done"), _FieldColumn("rate"), TimeElapsedColumn()]
        progress = _TwoLineProgress(*columns, console=self.console, auto_refresh=False,
                                    transient=False, expand=False)
        with progress:
            task = progress.add_task(self.title, total=self.total)
            try:
                while True:
                    self._draw(progress, task, graph.report())
                    await trio.sleep(self.interval)
            finally:
                self._draw(progress, task, graph.report())

    def _draw(self, progress: _TwoLineProgress, task: Any, report: RunReport | None) -> None:
        if report is None:
            return
        done = _finished(report)
        now = trio.current_time()
        samples = self._samples
        samples.append((now, done))
        while len(samples) > 2 and now - samples[0][0] > 3.0:
            samples.popleft()
        t0, d0 = samples[0]
        rate = (done - d0) / (now - t0) if now > t0 else 0.0
        # the data path's queues; the dead-letter edge is idle in a healthy run
        edges = [e for e in report.edges.values() if not e.name.endswith("->dead_letter")]
        depth = sum(e.depth for e in edges)
        capacity = sum(e.capacity for e in edges) or 1
        waiting = sum(e.waiting_senders for e in report.edges.values())
        fill = depth / capacity
        status = Text("  ")
        status.append(f"queue {depth:,}/{capacity:,}",
                      style="red" if fill > 0.8 else "yellow" if fill > 0.5 else "green")
        status.append("  producers blocked ", style="dim")
        status.append(f"{report.blocked_seconds:.1f}s", style="red" if waiting else "")
        status.append(" (now)" if waiting else "", style="red")
        status.append("  retries ", style="dim")
        status.append(f"{report.retries:,}", style="yellow" if report.retries else "")
        status.append("  dead letters ", style="dim")
        status.append(f"{report.dead_lettered:,}", style="yellow" if report.dead_lettered else "")
        if self.unit == "bytes":
            total = f"/{_bytes(self.total)}" if self.total is not None else ""
            label = f"{_bytes(self.completed(report))}{total}  {done:,} events"
        else:
            total = f"/{int(self.total):,}" if self.total is not None else ""
            label = f"{done:,}{total} events"
        description = self.title + (" [yellow](stopping)[/]" if self.stopping else "")
        progress.status = status
        progress.update(
            task,
            description=description,
            completed=min(self.completed(report), self.total or math.inf),
            done=Text(label),
            rate=Text(f"{rate:,.0f} ev/s", style="cyan"),
        )
        progress.refresh()


def _finished(report: RunReport) -> int:
    return report.delivered + report.dead_lettered + report.filtered


def _bytes(n: float | None) -> str:
    value = float(n or 0)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"  # pragma: no cover -- the loop always returns


# -- running a graph under signals --------------------------------------------------


@attrs.define
class RunOutcome:
    """How a run ended: its report, the failure, the signal that stopped it."""

    report: RunReport | None = None
    error: BaseException | None = None
    signal: int | None = None
    forced: bool = False

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return EXIT_FAILED
        if self.signal is not None:
            # a stop that drained and committed everything it read did what was asked:
            # 0, as a service stopped by SIGTERM; forced or cut short: 128+signal
            clean = self.report is not None and self.report.completed and not self.forced
            return EXIT_OK if clean else 128 + self.signal
        if self.report is None or not self.report.completed:
            return EXIT_FAILED
        return EXIT_OK


async def run_graph(
    graph: Graph,
    *,
    shutdown_timeout: float | None = None,
    view: ProgressView | None = None,
    notice: Callable[[str], None] | None = None,
    metrics: tuple[str, int] | None = None,
    linger: bool = False,
) -> RunOutcome:
    """Run ``graph`` to its end; SIGINT/SIGTERM stop it gracefully, a second one forces.

    ``metrics=(host, port)`` serves ``/metrics``, ``/api/snapshot`` and the
    dashboard while it runs; with ``linger`` the endpoint stays up after the
    run until a signal, so the final figures can be looked at.

    A graceful stop ends intake, drains what is in flight, flushes the sinks
    and commits the sources' offsets; past ``shutdown_timeout`` seconds
    (default: the graph's) what is left is cancelled and will be delivered
    again by the next run. Must run under Trio, in the main thread.
    """
    outcome = RunOutcome()
    timeout = shutdown_timeout if shutdown_timeout is not None else graph.shutdown_timeout
    say = notice or (lambda _message: None)

    async def watch_signals(*, task_status: trio.TaskStatus[None]) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async with trio.open_nursery() as deadline:
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if outcome.signal is None:
                        outcome.signal = signum
                        if view is not None:
                            view.stopping = True
                        say(f"{name}: stopping gracefully (up to {timeout:g}s); "
                            "send it again to force")
                        graph.request_stop()
                        deadline.start_soon(force_after, timeout)
                    else:
                        say(f"{name} again: forcing the stop; unfinished events stay "
                            "uncommitted")
                        outcome.forced = True
                        graph.abort()

    async def force_after(seconds: float) -> None:
        await trio.sleep(seconds)
        say(f"the shutdown deadline ({seconds:g}s) passed: cancelling what is in flight")
        outcome.forced = True
        graph.abort()

    try:
        await _supervise(graph, outcome, watch_signals, metrics, view, say, linger)
    except BaseExceptionGroup as group:
        # a usage problem found while starting (a busy --metrics-port): one line, exit 2
        usage = [e for e in _leaves(group) if isinstance(e, click.ClickException)]
        if usage:
            raise CliError(usage[0].format_message(), EXIT_USAGE) from None
        raise
    return outcome


async def _supervise(
    graph: Graph,
    outcome: RunOutcome,
    watch_signals: Callable[..., Awaitable[None]],
    metrics: tuple[str, int] | None,
    view: ProgressView | None,
    say: Callable[[str], None],
    linger: bool,
) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(watch_signals)
        if metrics is not None:
            from ..observe import serve_metrics

            try:
                endpoint = await nursery.start(serve_metrics, graph, metrics[1], metrics[0])
            except OSError as exc:
                raise click.ClickException(
                    f"cannot serve metrics on {metrics[0]}:{metrics[1]}: {exc.strerror or exc}"
                ) from None
            say(f"metrics {endpoint.url}metrics · dashboard {endpoint.url} · "
                f"trio-ingest top --url {endpoint.url}")
        if view is not None:
            nursery.start_soon(view.run, graph)
        try:
            outcome.report = await graph.run()
        except Exception as exc:  # noqa: BLE001 -- reported as one line with its exit code
            outcome.error = exc
            outcome.report = graph.report()
        if linger and metrics is not None and outcome.signal is None:
            say("run finished; the dashboard stays up until Ctrl-C")
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _signum in signals:
                    break
        nursery.cancel_scope.cancel()


def run_command(
    output: Output,
    graph: Graph,
    *,
    view: ProgressView | None = None,
    shutdown_timeout: float | None = None,
    notice: Callable[[str], None] | None = None,
    linger: bool = False,
) -> RunOutcome:
    """What every command does to run its graph: logs to stderr, signals, metrics, Trio.

    Notices (stopping, the metrics URL) go to stderr in yellow unless ``--quiet``.
    """
    err = output.stderr()
    if notice is None and not output.quiet:

        def notice(message: str) -> None:
            err.print(f"[yellow]{message}[/]")

    async def main() -> RunOutcome:
        with output.logging(err):
            return await run_graph(
                graph, shutdown_timeout=shutdown_timeout, view=view, notice=notice,
                metrics=output.metrics, linger=linger,
            )

    return run_trio(main)


def run_trio(main: Callable[[], Awaitable[RunOutcome]]) -> RunOutcome:
    """``trio.run(main)``, with a Ctrl-C that came before the signal watcher as exit 130.

    Once a signal stopped the run, further SIGINT/SIGTERM are ignored: the
    command is only printing its summary and exiting, and an impatient second
    Ctrl-C must not turn that into a traceback.

    Raises:
        CliError: Interrupted before the run started.
    """
    try:
        outcome = trio.run(main)
    except KeyboardInterrupt:
        fail("interrupted", 128 + signal.SIGINT)
    if outcome.signal is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return outcome


# -- the summary --------------------------------------------------------------------


def summary_table(report: RunReport, title: str,
                  extra: list[tuple[str, str, str]] | None = None) -> list[Table]:
    """The run's figures as rich tables: headline counters, then one row per edge."""
    main = Table(title=title, title_justify="left", show_header=False, box=None,
                 pad_edge=False, padding=(0, 2))
    main.add_column(style="bold")
    main.add_column(justify="right")
    main.add_column(style="dim")
    lat = report.latency
    rows: list[tuple[str, str, str]] = [
        ("received", f"{report.received:,}", "read from the sources"),
        ("delivered", f"{report.delivered:,}", "written by the sinks"),
        ("retried", f"{report.retries:,}", "calls repeated after a failure"),
        ("dead-lettered", f"{report.dead_lettered:,}", "kept with their reason"),
        ("filtered", f"{report.filtered:,}", "dropped on purpose"),
    ]
    if report.in_flight:
        rows.append(("in flight", f"{report.in_flight:,}", "uncommitted: read again next run"))
    rows += [
        ("elapsed", f"{report.elapsed:,.2f} s", ""),
        ("throughput", f"{report.throughput:,.0f} events/s", ""),
        ("latency p50 / p99", f"{_ms(lat.p50)} / {_ms(lat.p99)}", "event time -> sink write"),
        ("producers blocked", f"{report.blocked_seconds:,.2f} s", "waiting on full edges"),
    ]
    rows += extra or []
    for row in rows:
        main.add_row(*row)
    edges = Table(show_edge=False, box=None, pad_edge=False, padding=(0, 2))
    for header, justify in (("edge", "left"), ("capacity", "right"), ("peak depth", "right"),
                            ("events through", "right"), ("blocked s", "right")):
        edges.add_column(header, justify=justify, header_style="bold")  # type: ignore[arg-type]
    for e in report.edges.values():
        edges.add_row(e.name, f"{e.capacity:,}", f"{e.peak_depth:,}", f"{e.events_through:,}",
                      f"{e.blocked_seconds:,.2f}")
    return [main, edges]


def accounting_line(report: RunReport) -> Text:
    """The invariant, with the figures, marked as holding or broken."""
    left = f"received {report.received:,}"
    if report.expanded:
        left += f" + expanded {report.expanded:,}"
    right = (f"delivered {report.delivered:,} + dead-lettered {report.dead_lettered:,} "
             f"+ filtered {report.filtered:,} + in flight {report.in_flight:,}")
    if report.balanced:
        return Text(f"accounting ✓ {left} = {right}", style="green")
    return Text(f"accounting ✗ BROKEN: {left} != {right}", style="bold red")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:,.2f} ms"


def finish(
    output: Output,
    outcome: RunOutcome,
    *,
    title: str,
    extra: list[tuple[str, str, str]] | None = None,
    data: dict[str, Any] | None = None,
) -> NoReturn:
    """Print the summary (table, or JSON), then exit with the outcome's code.

    Raises:
        click.exceptions.Exit: Always, with the exit code.
    """
    code = outcome.exit_code
    report = outcome.report
    if output.json:
        payload: dict[str, Any] = {"exit_code": code}
        if report is not None:
            payload.update(report.to_dict())
        if outcome.error is not None:
            payload["error"] = describe_error(outcome.error)
        if outcome.signal is not None:
            payload["signal"] = signal.Signals(outcome.signal).name
        payload.update(data or {})
        click.echo(json.dumps(payload, indent=2, default=repr))
    elif not output.quiet and report is not None and (outcome.error is None or report.received):
        console = output.stdout()
        status = _status(outcome)
        for table in summary_table(report, f"{title}: {status}", extra):
            console.print(table)
        console.print(accounting_line(report))
    if outcome.error is not None:
        click.echo(f"error: {describe_error(outcome.error)}", err=True)
    elif outcome.signal is not None and not output.quiet:
        name = signal.Signals(outcome.signal).name
        click.echo(f"interrupted by {name} before the run finished (exit code {code})",
                   err=True)
    raise click.exceptions.Exit(code)


def _status(outcome: RunOutcome) -> str:
    if outcome.error is not None:
        return "FAILED"
    if outcome.signal is not None:
        return "interrupted, forced" if outcome.forced else "interrupted, drained"
    if outcome.report is not None and outcome.report.completed:
        return "completed"
    return "did not complete"
