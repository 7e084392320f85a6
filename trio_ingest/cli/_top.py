"""``trio-ingest top``: a live terminal view of a running pipeline, like ``vector top``.

It polls the pipeline's ``/api/snapshot`` (served by ``observe.serve_metrics``
or ``--metrics-port``) and shows per node the event rates, errors, dead letters
and batch latency, and per edge how full it is and how long senders waited.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import click
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ._common import EXIT_FAILED, CliError, Command

__all__ = ("fetch_snapshot", "render", "top")

BAR_WIDTH = 20


def snapshot_url(url: str) -> str:
    """The snapshot address for a base URL (``http://host:port``, with or without a path)."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    if url.rstrip("/").endswith("/api/snapshot"):
        return url.rstrip("/")
    return url.rstrip("/") + "/api/snapshot"


def fetch_snapshot(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """GET the JSON snapshot.

    Raises:
        click.ClickException: The endpoint cannot be reached or answers garbage.
    """
    target = snapshot_url(url)
    try:
        with urllib.request.urlopen(target, timeout=timeout) as response:
            data = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        raise click.ClickException(f"{target} answered {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise click.ClickException(f"cannot reach {target}: {reason}") from exc
    except ValueError as exc:
        raise click.ClickException(f"{target} did not answer a JSON snapshot: {exc}") from exc
    if not isinstance(data, dict) or "nodes" not in data:
        raise click.ClickException(f"{target} did not answer a trio-ingest snapshot")
    return data


# -- formatting -------------------------------------------------------------------


def _count(n: float) -> str:
    return f"{int(n):,}"


def _rate(r: float) -> str:
    if r >= 1e6:
        return f"{r / 1e6:.2f}M/s"
    if r >= 1e4:
        return f"{r / 1e3:.1f}k/s"
    return f"{r:,.0f}/s" if r >= 10 else f"{r:.1f}/s"


def _seconds(s: float) -> str:
    if s <= 0:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.0f}µs"
    if s < 1:
        return f"{s * 1e3:.1f}ms"
    return f"{s:.2f}s"


def _elapsed(s: float) -> str:
    s = int(s)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def _bar(depth: int, capacity: int) -> Text:
    ratio = min(depth / capacity, 1.0) if capacity > 0 else 0.0
    filled = round(ratio * BAR_WIDTH)
    if depth and not filled:
        filled = 1
    style = "green" if ratio < 0.5 else "yellow" if ratio < 0.9 else "red"
    bar = Text("█" * filled, style=style)
    bar.append("░" * (BAR_WIDTH - filled), style="bright_black")
    bar.append(f" {_count(depth)}/{_count(capacity)}")
    return bar


class Rates:
    """Per-second rates from two successive snapshots (run averages for the first)."""

    def __init__(self, current: dict[str, Any], previous: dict[str, Any] | None) -> None:
        self.current = current
        self.previous = previous
        self.span = 0.0
        if previous is not None:
            span = float(current.get("time", 0.0)) - float(previous.get("time", 0.0))
            same_run = float(current.get("elapsed", 0.0)) >= float(previous.get("elapsed", 0.0))
            if span > 0 and same_run:
                self.span = span
        self.windowed = self.span > 0

    def of(self, now: float, before: float | None) -> float:
        if self.windowed and before is not None:
            return max(now - before, 0.0) / self.span
        elapsed = float(self.current.get("elapsed", 0.0))
        return now / elapsed if elapsed > 0 else 0.0

    def node(self, name: str, field: str) -> float:
        now = self.current["nodes"][name][field]
        before = None
        if self.previous is not None and name in self.previous.get("nodes", {}):
            before = self.previous["nodes"][name][field]
        return self.of(now, before)

    def edge(self, name: str, field: str) -> float:
        now = self.current["edges"][name][field]
        before = None
        if self.previous is not None and name in self.previous.get("edges", {}):
            before = self.previous["edges"][name][field]
        return self.of(now, before)

    def total(self, field: str) -> float:
        before = self.previous.get(field) if self.previous is not None else None
        return self.of(float(self.current.get(field, 0)), before)


def _node_order(snap: dict[str, Any]) -> list[str]:
    nodes = snap.get("nodes", {})
    order = [n["name"] for n in snap.get("graph", {}).get("nodes", []) if n["name"] in nodes]
    order += [name for name in nodes if name not in order]
    return order


def render(
    snap: dict[str, Any], previous: dict[str, Any] | None = None, *, url: str = ""
) -> RenderableType:
    """The frame for ``snap`` (rates against ``previous`` when given)."""
    rates = Rates(snap, previous)
    window = "last interval" if rates.windowed else "run average"
    finished = snap.get("delivered", 0) + snap.get("dead_lettered", 0) + snap.get("filtered", 0)
    throughput = (
        rates.total("delivered") + rates.total("dead_lettered") + rates.total("filtered")
        if rates.windowed else (finished / snap["elapsed"] if snap.get("elapsed") else 0.0)
    )
    latency = snap.get("latency", {})
    state = snap.get("state", "?")
    state_style = {"running": "bold green", "finished": "bold blue"}.get(state, "bold yellow")
    header = Table.grid(padding=(0, 3))
    for _ in range(4):
        header.add_column()
    header.add_row(
        Text.assemble(("state ", "dim"), (state, state_style)),
        Text.assemble(("elapsed ", "dim"), _elapsed(snap.get("elapsed", 0.0))),
        Text.assemble(("throughput ", "dim"), (_rate(throughput), "bold")),
        Text.assemble(("e2e latency p50/p99 ", "dim"),
                      f"{_seconds(latency.get('p50', 0.0))} / {_seconds(latency.get('p99', 0.0))}"),
    )
    header.add_row(
        Text.assemble(("received ", "dim"), _count(snap.get("received", 0))),
        Text.assemble(("delivered ", "dim"), _count(snap.get("delivered", 0))),
        Text.assemble(("dead-lettered ", "dim"),
                      (_count(snap.get("dead_lettered", 0)),
                       "bold red" if snap.get("dead_lettered") else "")),
        Text.assemble(("in flight ", "dim"), _count(snap.get("in_flight", 0)),
                      ("  filtered ", "dim"), _count(snap.get("filtered", 0)),
                      ("  retries ", "dim"), _count(snap.get("retries", 0))),
    )
    title = "trio-ingest top" + (f"  {url}" if url else "")

    fused = {
        n["name"]: n.get("fused_into")
        for n in snap.get("graph", {}).get("nodes", []) if n.get("fused_into")
    }
    nodes = Table(box=box.SIMPLE_HEAD, expand=False, title=f"nodes (rates: {window})",
                  title_justify="left", title_style="bold",
                  caption="(fused): runs inside the task of the node before it, no edge between"
                  if fused else None, caption_justify="left", caption_style="dim")
    order = _node_order(snap)
    nodes.add_column("node", style="bold cyan", no_wrap=True,
                     min_width=max((len(name) for name in order), default=4))
    nodes.add_column("kind", style="dim", no_wrap=True, max_width=16, overflow="ellipsis")
    # rates and latencies change at every refresh: fixed widths keep the columns still
    for heading, width in (("in/s", 7), ("out/s", 7), ("in", 0), ("out", 0), ("errors", 0),
                           ("retries", 0), ("dead", 0), ("filtered", 0), ("p50", 6),
                           ("p99", 6)):
        nodes.add_column(heading, justify="right", no_wrap=True, min_width=width or None)
    for name in order:
        node = snap["nodes"][name]
        kind = node.get("kind", "")
        if name in fused:
            kind += " (fused)"
        lat = node.get("latency", {})
        nodes.add_row(
            name,
            kind,
            _rate(rates.node(name, "events_in")),
            _rate(rates.node(name, "events_out")),
            _count(node["events_in"]),
            _count(node["events_out"]),
            Text(_count(node["errors"]), style="red" if node["errors"] else ""),
            Text(_count(node["retries"]), style="yellow" if node["retries"] else ""),
            Text(_count(node["dead_lettered"]), style="bold red" if node["dead_lettered"] else ""),
            _count(node["filtered"]),
            _seconds(lat.get("p50", 0.0)),
            _seconds(lat.get("p99", 0.0)),
        )

    edges = Table(box=box.SIMPLE_HEAD, expand=False, title="edges", title_justify="left",
                  title_style="bold")
    edges.add_column("edge", style="bold cyan", no_wrap=True)
    edges.add_column("depth / capacity", no_wrap=True)
    edges.add_column("peak", justify="right", no_wrap=True)
    edges.add_column("through/s", justify="right", no_wrap=True)
    edges.add_column("backpressure", justify="right", no_wrap=True)
    edges.add_column("blocked", justify="right", no_wrap=True)
    edges.add_column("waiting", justify="right", no_wrap=True)
    for name, edge in snap.get("edges", {}).items():
        blocked_share = rates.edge(name, "blocked_seconds")
        edges.add_row(
            name,
            _bar(edge["depth"], edge["capacity"]),
            _count(edge["peak_depth"]),
            _rate(rates.edge(name, "events_through")),
            Text(f"{edge['blocked_seconds']:.2f}s",
                 style="yellow" if edge["blocked_seconds"] > 0 else ""),
            Text(f"{blocked_share * 100:.0f}%", style="red" if blocked_share > 0.5 else ""),
            _count(edge["waiting_senders"]),
        )
    parts: list[RenderableType] = [
        Panel(header, title=title, title_align="left", expand=False), nodes
    ]
    if snap.get("edges"):
        parts += [Text(), edges]
    if not snap.get("balanced", True):
        parts.append(Text("accounting is NOT balanced: events are missing", style="bold red"))
    return Group(*parts)


def _error_frame(message: str, url: str) -> RenderableType:
    return Panel(Text(message, style="bold red"), title=f"trio-ingest top  {url}",
                 title_align="left")


@click.command(cls=Command)
@click.option("--url", default="http://127.0.0.1:9464", show_default=True,
              help="Where the pipeline serves its metrics (its --metrics-port).")
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("--once", is_flag=True, help="Print one frame and exit (for scripts and tests).")
def top(url: str, interval: float, once: bool) -> None:
    """Watch a running pipeline: node rates, errors, latency, edge depth and backpressure.

    The pipeline must serve its metrics: `trio-ingest run ... --metrics-port 9464`
    or `ti.observe.serve_metrics(pipeline, 9464)` in your program.
    """
    console = Console()
    try:
        first = fetch_snapshot(url)
    except click.ClickException as exc:
        raise CliError(f"{exc.format_message()}; is a pipeline running with --metrics-port?",
                       EXIT_FAILED) from None
    if once:
        snap = first
        if not console.is_terminal:
            console = Console(width=max(console.width, 140))
        console.print(render(snap, url=url))
        return
    previous: dict[str, Any] | None = None
    try:
        frame: RenderableType = _error_frame("connecting...", url)
        with Live(frame, console=console, auto_refresh=False, screen=False) as live:
            while True:
                try:
                    snap = fetch_snapshot(url)
                except click.ClickException as exc:
                    live.update(_error_frame(exc.message + " (retrying)", url), refresh=True)
                    previous = None
                else:
                    live.update(render(snap, previous, url=url), refresh=True)
                    previous = snap
                time.sleep(interval)
    except KeyboardInterrupt:
        pass
