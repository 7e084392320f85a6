"""The JSON snapshot and ``trio-ingest top`` for a pipeline with fan-out and a failing sink."""

from __future__ import annotations

import io
import json
import logging
import re
import urllib.request
from collections.abc import Iterable
from typing import Any

import anyio
import pytest
from click.testing import CliRunner

import trio_ingest as ti
from trio_ingest.cli._top import render, snapshot_url, top

pytestmark = pytest.mark.anyio


def fan_out_graph(rate: float | None = None) -> ti.Graph:
    """A source broadcasting to two sinks; ``bad`` fails on every 5th event id."""
    graph = ti.Graph(dead_letter=ti.sinks.Memory(), capacity=100, max_batch=16)
    graph.add_source(ti.sources.synthetic(500, seed=1, rate=rate), name="orders")
    graph.add_stage(ti.map(lambda p: p["seq"], workers=2), inputs="orders", name="seq")
    graph.add_sink(ti.sinks.Memory(), inputs="seq", name="warehouse")
    graph.add_sink(
        ti.testing.PoisonSink({str(i) for i in range(0, 500, 5)}, ti.sinks.Memory()),
        inputs="seq", name="audit",
    )
    return graph


@pytest.fixture(autouse=True)
def quiet_runtime_log() -> Iterable[None]:
    logger = logging.getLogger("trio_ingest.runtime")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


def fetch_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return dict(json.loads(response.read()))


async def test_snapshot_of_fan_out_with_a_failing_sink() -> None:
    graph = fan_out_graph()
    idle = ti.observe.snapshot(graph)
    assert idle["state"] == "idle" and idle["received"] == 0 and idle["nodes"] == {}
    assert [n["name"] for n in idle["graph"]["nodes"]] == [
        "orders", "seq", "warehouse", "audit", "dead_letter"
    ]

    report = await graph.run()
    async with anyio.create_task_group() as tg:
        endpoint = await tg.start(ti.observe.serve_metrics, graph, 0)
        snap = await anyio.to_thread.run_sync(fetch_json, endpoint.url + "api/snapshot")
        tg.cancel_scope.cancel()

    assert snap["version"] == 1 and snap["state"] == "finished"
    summary = report.to_dict()
    for key in ("received", "delivered", "dead_lettered", "filtered", "expanded", "in_flight",
                "completed", "balanced", "nodes"):
        assert snap[key] == summary[key], key
    assert {name: {k: v for k, v in edge.items()
                   if k not in ("average_waiting_senders", "full_share")}
            for name, edge in snap["edges"].items()} == summary["edges"]
    for edge in snap["edges"].values():  # the snapshot adds backpressure as people read it
        assert 0 <= edge["full_share"] <= 1 and edge["average_waiting_senders"] >= 0
    assert snap["dead_lettered"] == 100 and snap["delivered"] == 900
    assert snap["nodes"]["audit"]["dead_lettered"] == 100
    assert snap["nodes"]["audit"]["events_in"] == 500
    nodes = {n["name"]: n for n in snap["graph"]["nodes"]}
    assert nodes["orders"]["role"] == "source"
    assert nodes["seq"] == {"name": "seq", "role": "stage", "kind": "map",
                            "edge": "orders->seq", "fused_into": None}
    assert nodes["audit"]["edge"] == "seq->audit"
    assert nodes["dead_letter"]["kind"] == "dead_letter"
    assert nodes["dead_letter"]["edge"] == "*->dead_letter"
    links = {(link["from"], link["to"]) for link in snap["graph"]["links"]}
    assert links == {("orders", "seq"), ("seq", "warehouse"), ("seq", "audit")}
    for link in snap["graph"]["links"]:
        assert link["edge"] in snap["edges"]
    assert snap["sources"] == {"orders": {"committed": 500, "open_reads": 0, "lag": None}}


async def test_fused_nodes_and_source_lag() -> None:
    class Lagging(ti.sources.Synthetic):
        def lag(self) -> float:
            return 42.0

    graph = ti.Pipeline(Lagging(10), ti.map(lambda p: p), sink=ti.sinks.Memory())
    await graph.run()
    snap = ti.observe.snapshot(graph)
    nodes = {n["name"]: n for n in snap["graph"]["nodes"]}
    assert nodes["map"]["fused_into"] == "synthetic" and nodes["map"]["edge"] is None
    assert snap["sources"]["synthetic"]["lag"] == 42.0
    json.dumps(snap, allow_nan=False)


async def test_top_once_renders_a_running_and_a_finished_pipeline() -> None:
    graph = fan_out_graph(rate=250)
    runner = CliRunner()
    async with anyio.create_task_group() as tg:
        endpoint = await tg.start(ti.observe.serve_metrics, graph, 0)
        reports: list[ti.RunReport] = []
        running = None
        async with anyio.create_task_group() as run_group:
            run_group.start_soon(lambda: _collect(graph, reports))
            with anyio.fail_after(10):
                while not (graph.report() or _EMPTY).received:  # noqa: ASYNC110 -- polls a counter
                    await anyio.sleep(0.01)
            running = await anyio.to_thread.run_sync(
                runner.invoke, top, ["--url", endpoint.url, "--once"]
            )
        report = reports[0]
        result = await anyio.to_thread.run_sync(
            runner.invoke, top, ["--url", endpoint.url, "--once"]
        )
        tg.cancel_scope.cancel()
    assert running.exit_code == 0, running.output
    assert "state running" in running.output  # the run takes 2 s; top asked at its start
    orders = next(ln for ln in running.output.splitlines() if ln.strip().startswith("orders"))
    assert re.search(r"[1-9][\d,.]*k?/s", orders), orders  # a non-zero rate
    assert result.exit_code == 0, result.output
    text = result.output
    for name in ("orders", "seq", "warehouse", "audit", "dead_letter", "seq->audit",
                 "*->dead_letter"):
        assert name in text, name
    assert "finished" in text
    assert f"delivered {report.delivered:,}" in text
    assert f"dead-lettered {report.dead_lettered:,}" in text
    audit = next(line for line in text.splitlines() if line.strip().startswith("audit"))
    # in, out, errors, retries, dead: 500 in, 400 written, 100 dead-lettered
    numbers = [token for token in audit.split() if re.fullmatch(r"[\d,]+", token)]
    assert ["500", "400"] == numbers[:2]
    assert "100" in numbers[2:]


class _NoReport:
    received = 0


_EMPTY = _NoReport()


async def _collect(graph: ti.Graph, reports: list[ti.RunReport]) -> None:
    reports.append(await graph.run())


def test_render_rates_from_two_snapshots() -> None:
    def snap(t: float, out: int, blocked: float) -> dict[str, Any]:
        return {
            "time": t, "elapsed": t - 100.0, "state": "running", "received": out,
            "delivered": out, "dead_lettered": 0, "filtered": 0, "in_flight": 0, "retries": 0,
            "balanced": True, "latency": {"p50": 0.002, "p99": 0.05},
            "nodes": {"src": {"kind": "source", "events_in": out, "events_out": out,
                              "errors": 0, "retries": 0, "dead_lettered": 0, "filtered": 0,
                              "latency": {"p50": 0.0, "p99": 0.0}}},
            "edges": {"src->db": {"capacity": 100, "depth": 50, "peak_depth": 90,
                                  "events_through": out, "blocked_seconds": blocked,
                                  "waiting_senders": 1}},
            "graph": {"nodes": [{"name": "src"}], "links": []},
        }

    from rich.console import Console

    console = Console(width=160, record=True, file=io.StringIO())
    console.print(render(snap(102.0, 3_000, 1.5), snap(100.0 + 1.0, 1_000, 1.0)))
    text = console.export_text()
    assert "2,000/s" in text  # 2000 events in 1 s
    assert "rates: last interval" in text
    assert "50%" in text  # 0.5 s blocked per second
    assert "██████████░░░░░░░░░░ 50/100" in text
    assert "2.0ms / 50.0ms" in text

    console = Console(width=160, record=True, file=io.StringIO())
    console.print(render(snap(104.0, 8_000, 0.0)))  # no previous: run averages
    text = console.export_text()
    assert "rates: run average" in text
    assert "2,000/s" in text  # 8000 events in 4 s


def test_top_reports_an_unreachable_endpoint() -> None:
    import socket

    with socket.socket() as s:  # a port just released: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = CliRunner().invoke(top, ["--url", f"127.0.0.1:{port}", "--once"])
    assert result.exit_code == 1
    assert f"cannot reach http://127.0.0.1:{port}/api/snapshot" in result.output


def test_snapshot_url_forms() -> None:
    assert snapshot_url("127.0.0.1:9464") == "http://127.0.0.1:9464/api/snapshot"
    assert snapshot_url("http://h:1/") == "http://h:1/api/snapshot"
    assert snapshot_url("http://h:1/api/snapshot") == "http://h:1/api/snapshot"
