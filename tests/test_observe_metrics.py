"""Prometheus exposition and the HTTP server: scraped for real over TCP, parsed with
prometheus_client's own parser, and checked against the run's report."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from typing import Any

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

import trio_ingest as ti
from trio_ingest.observe._prometheus import cumulative_buckets
from trio_ingest.runtime._stats import Histogram
from trio_ingest.testing import run_with_mock_clock

pytestmark = pytest.mark.anyio


async def http(port: int, request: bytes) -> bytes:
    """Send raw ``request`` bytes to 127.0.0.1:``port``; return everything until close."""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(request)
        chunks = []
        with anyio.fail_after(10):
            while True:
                try:
                    chunks.append(await stream.receive())
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    break
    return b"".join(chunks)


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


async def get(port: int, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    extra = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n"
    return parse_response(await http(port, request.encode()))


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text exposition, by (name, labels)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def fan_out_graph(count: int, rate: float | None) -> ti.Graph:
    """Broadcast to two sinks, one failing on every 10th id; a filter; a dead-letter sink."""
    graph = ti.Graph(dead_letter=ti.sinks.Memory(), capacity=64, max_batch=32)
    graph.add_source(ti.sources.synthetic(count, rate=rate, seed=3), name="gen")
    graph.add_stage(ti.filter(lambda p: p["seq"] % 7 != 0), inputs="gen", name="keep")
    graph.add_stage(ti.map(lambda p: p, workers=2), inputs="keep", name="fanout")
    graph.add_sink(ti.sinks.Memory(), inputs="fanout", name="good")
    graph.add_sink(
        ti.testing.PoisonSink({str(i) for i in range(0, count, 10)}, ti.sinks.Memory()),
        inputs="fanout", name="bad",
    )
    return graph


@pytest.fixture
def quiet_runtime_log() -> Iterable[None]:
    import logging

    logger = logging.getLogger("trio_ingest.runtime")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


async def test_scrape_during_run_and_counters_match_the_report(quiet_runtime_log: None) -> None:
    graph = fan_out_graph(3_000, rate=6_000)
    async with anyio.create_task_group() as tg:
        endpoint = await tg.start(ti.observe.serve_metrics, graph, 0)
        status, _, body = await get(endpoint.port, "/metrics")
        assert status == 200
        assert value(samples(body.decode()), "trio_ingest_running") == 0.0  # not started yet

        done = anyio.Event()
        result: list[ti.RunReport] = []

        async def run() -> None:
            result.append(await graph.run())
            done.set()

        tg.start_soon(run)
        with anyio.fail_after(10):
            while True:
                await anyio.sleep(0.05)
                status, headers, body = await get(endpoint.port, "/metrics")
                live = samples(body.decode())
                if value(live, "trio_ingest_received_total") > 0:
                    break
        assert status == 200
        assert headers["content-type"].startswith("text/plain")
        if not done.is_set():
            assert value(live, "trio_ingest_running") == 1.0
        assert value(live, "trio_ingest_events_total", node="gen", outcome="out") > 0

        await done.wait()
        report = result[0]
        status, _, body = await get(endpoint.port, "/metrics")
        tg.cancel_scope.cancel()

    final = samples(body.decode())
    assert value(final, "trio_ingest_running") == 0.0
    assert value(final, "trio_ingest_received_total") == report.received == 3_000
    assert value(final, "trio_ingest_delivered_total") == report.delivered
    assert value(final, "trio_ingest_dead_lettered_total") == report.dead_lettered > 0
    assert value(final, "trio_ingest_filtered_total") == report.filtered > 0
    assert value(final, "trio_ingest_expanded_total") == report.expanded
    assert value(final, "trio_ingest_in_flight") == report.in_flight == 0
    assert value(final, "trio_ingest_retries_total") == report.retries
    assert value(final, "trio_ingest_elapsed_seconds") == pytest.approx(report.elapsed)
    outcomes = {"in": "events_in", "out": "events_out", "error": "errors", "retry": "retries",
                "dead_letter": "dead_lettered", "filtered": "filtered"}
    assert set(report.nodes) == {"gen", "keep", "fanout", "good", "bad", "dead_letter"}
    for name, node in report.nodes.items():
        assert value(final, "trio_ingest_node_info", node=name, kind=node.kind) == 1.0
        for outcome, field in outcomes.items():
            assert value(final, "trio_ingest_events_total", node=name, outcome=outcome) == (
                getattr(node, field)
            ), (name, outcome)
        assert value(final, "trio_ingest_batches_total", node=name) == node.batches
        assert value(final, "trio_ingest_busy_seconds_total", node=name) == pytest.approx(
            node.busy_seconds
        )
        count = value(final, "trio_ingest_batch_latency_seconds_count", node=name)
        assert count == node.latency.count
        assert value(final, "trio_ingest_batch_latency_seconds_bucket", node=name,
                     le="+Inf") == count
        assert value(final, "trio_ingest_batch_latency_seconds_sum", node=name) == (
            pytest.approx(node.latency.sum)
        )
    # the failing sink: every event it got is either written or dead-lettered
    bad = report.nodes["bad"]
    assert bad.events_in == bad.events_out + bad.dead_lettered
    assert bad.dead_lettered == report.dead_lettered > 0
    for name, edge in report.edges.items():
        assert value(final, "trio_ingest_edge_depth", edge=name) == edge.depth == 0
        assert value(final, "trio_ingest_edge_capacity", edge=name) == edge.capacity
        assert value(final, "trio_ingest_edge_peak_depth", edge=name) == edge.peak_depth
        assert value(final, "trio_ingest_edge_events_total", edge=name) == edge.events_through
        assert value(final, "trio_ingest_edge_backpressure_seconds_total", edge=name) == (
            pytest.approx(edge.blocked_seconds)
        )
        assert value(final, "trio_ingest_edge_waiting_senders", edge=name) == 0
    assert value(final, "trio_ingest_end_to_end_latency_seconds_count") == report.latency.count
    assert report.committed["gen"] == 3_000
    assert value(final, "trio_ingest_source_committed_offset", source="gen") == 3_000
    assert value(final, "trio_ingest_source_open_reads", source="gen") == 0


def test_histogram_buckets_are_cumulative_and_exact() -> None:
    h = Histogram()
    for v in (0.0, 1e-6, 2e-6, 0.0019, 0.002, 0.004, 0.006, 1.0, 5e3):
        h.observe(v)
    buckets = cumulative_buckets(h)
    bounds = [b for b, _ in buckets]
    counts = [c for _, c in buckets]
    assert bounds == sorted(bounds) and math.isinf(bounds[-1])
    assert counts == sorted(counts) and counts[-1] == h.count == 9
    by_bound = dict(buckets)
    assert by_bound[1e-06] == 2  # 0 and 1 µs: "le" is inclusive
    assert by_bound[0.002] == 5  # 1.9 ms and 2 ms are at or under 2 ms
    assert by_bound[0.005] == 6
    assert 2e-06 in by_bound and 0.0002 in by_bound
    assert by_bound[1.0] == 8
    assert by_bound[1000.0] == 8  # 5000 s only in +Inf
    # 3 bounds per decade from 1 µs to 1000 s, then +Inf
    assert len(buckets) == 9 * 3 + 1 + 1
    # every bound is round: 1, 2 or 5 times a power of ten, printed as such
    from prometheus_client.utils import floatToGoString

    for bound in bounds[:-1]:
        label = floatToGoString(bound)
        assert label.split("e")[0] in ("1.0", "2.0", "5.0", "1", "2", "5") or float(
            label
        ) in {m * 10.0**e for m in (1, 2, 5) for e in range(-6, 4)}, label
        assert len(label) <= 6, label


async def test_openmetrics_on_request() -> None:
    graph = fan_out_graph(100, rate=None)
    report = await graph.run()
    async with anyio.create_task_group() as tg:
        endpoint = await tg.start(ti.observe.serve_metrics, graph, 0)
        status, headers, body = await get(
            endpoint.port, "/metrics", accept="application/openmetrics-text; version=1.0.0"
        )
        tg.cancel_scope.cancel()
    assert status == 200
    assert headers["content-type"].startswith("application/openmetrics-text")
    text = body.decode()
    assert text.rstrip().endswith("# EOF")
    assert "# UNIT trio_ingest_batch_latency_seconds seconds" in text
    assert f"trio_ingest_received_total {report.received}.0" in text


async def test_routes_and_protocol() -> None:
    graph = fan_out_graph(50, rate=None)
    async with anyio.create_task_group() as tg:
        endpoint = await tg.start(ti.observe.serve_metrics, graph, 0)
        assert endpoint.url == f"http://127.0.0.1:{endpoint.port}/"
        port = endpoint.port

        status, headers, body = await get(port, "/")
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert b"/static/dashboard.js" in body
        for asset, kind in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
            status, headers, body = await get(port, f"/static/{asset}")
            assert status == 200 and headers["content-type"].startswith(kind) and body
        status, headers, body = await get(port, "/api/snapshot?x=1")
        assert status == 200 and headers["content-type"] == "application/json"

        assert (await get(port, "/nope"))[0] == 404
        assert (await get(port, "/static/../_server.py"))[0] == 404
        raw = await http(port, b"POST /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, headers, _ = parse_response(raw)
        assert status == 405 and headers["allow"] == "GET, HEAD"
        assert parse_response(await http(port, b"garbage\r\n\r\n"))[0] == 400
        raw = await http(port, b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
        assert parse_response(raw)[0] == 400
        raw = await http(port, b"GET / HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n")
        assert parse_response(raw)[0] == 431

        # HEAD: the headers of GET, no body
        raw = await http(port, b"HEAD / HTTP/1.1\r\nConnection: close\r\n\r\n")
        status, headers, body = parse_response(raw)
        assert status == 200 and int(headers["content-length"]) > 0 and body == b""

        # keep-alive: two requests on one connection, then the client closes
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            answers = []
            for _ in range(2):
                await stream.send(b"GET /api/snapshot HTTP/1.1\r\nHost: x\r\n\r\n")
                data = b""
                with anyio.fail_after(10):
                    while b"\r\n\r\n" not in data:
                        data += await stream.receive()
                    _, headers, body = parse_response(data)
                    while len(body) < int(headers["content-length"]):
                        body += await stream.receive()
                answers.append(headers["connection"])
            assert answers == ["keep-alive", "keep-alive"]
        tg.cancel_scope.cancel()


async def test_metrics_without_prometheus_client(monkeypatch: pytest.MonkeyPatch) -> None:
    # what a machine without the 'metrics' extra sees: the import fails
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    graph = fan_out_graph(20, rate=None)
    async with anyio.create_task_group() as tg:
        endpoint = await tg.start(ti.observe.serve_metrics, graph, 0)
        status, _, body = await get(endpoint.port, "/metrics")
        assert status == 501
        assert b"pip install 'trio-ingest[metrics]'" in body
        assert (await get(endpoint.port, "/api/snapshot"))[0] == 200
        assert (await get(endpoint.port, "/"))[0] == 200
        tg.cancel_scope.cancel()


async def test_bad_port_fails_before_listening() -> None:
    graph = fan_out_graph(1, rate=None)
    async with anyio.create_task_group() as tg:
        with pytest.raises(ti.ConfigError, match=r"'port' must be an int in 0\.\.65535: 70000"):
            await tg.start(ti.observe.serve_metrics, graph, 70_000)
        with pytest.raises(ti.ConfigError, match="'pipeline' must be a Graph"):
            await tg.start(ti.observe.serve_metrics, object(), 0)
        endpoint = await tg.start(ti.observe.serve_metrics, graph, 0)
        with pytest.raises(OSError) as caught:
            await tg.start(ti.observe.serve_metrics, graph, endpoint.port)
        assert any("could not listen" in note for note in caught.value.__notes__)
        tg.cancel_scope.cancel()


async def test_serving_pipeline_through_its_handle() -> None:
    sink = ti.sinks.Memory()
    pipeline = ti.Pipeline(ti.sources.from_iterable([]), ti.map(lambda p: p * 2), sink=sink)
    async with anyio.create_task_group() as tg:
        handle = await tg.start(pipeline.serve)
        endpoint = await tg.start(ti.observe.serve_metrics, handle, 0)
        await handle.send_batch(list(range(10)))
        with anyio.fail_after(10):
            while len(sink.events) < 10:  # noqa: ASYNC110 -- polls what the pipeline does
                await anyio.sleep(0.01)
        status, _, body = await get(endpoint.port, "/metrics")
        assert status == 200
        found = samples(body.decode())
        assert value(found, "trio_ingest_events_total", node="handle", outcome="out") == 10
        assert value(found, "trio_ingest_delivered_total") == 10
        await handle.stop()
        tg.cancel_scope.cancel()


def test_collector_registers_in_a_user_registry() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    graph = fan_out_graph(10, rate=None)
    registry = CollectorRegistry()
    registry.register(ti.observe.PrometheusCollector(graph))
    text = generate_latest(registry).decode()
    assert "trio_ingest_running 0.0" in text  # before the run: only the state
    assert "trio_ingest_received_total" not in text


async def test_process_metrics_and_gzip() -> None:
    import gzip

    graph = fan_out_graph(50, rate=None)
    await graph.run()
    async with anyio.create_task_group() as tg:
        endpoint = await tg.start(ti.observe.serve_metrics, graph, 0)
        status, headers, plain = await get(endpoint.port, "/metrics")
        assert status == 200 and "content-encoding" not in headers
        found = samples(plain.decode())
        assert value(found, "process_resident_memory_bytes") > 0
        assert value(found, "process_open_fds") > 0
        assert ("process_cpu_seconds_total", frozenset()) in found
        assert any(name == "python_info" for name, _ in found)
        assert any(name == "python_gc_collections_total" for name, _ in found)
        status, headers, zipped = await get(endpoint.port, "/metrics", accept_encoding="gzip")
        assert status == 200 and headers["content-encoding"] == "gzip"
        assert int(headers["content-length"]) == len(zipped) < len(plain)
        unzipped = samples(gzip.decompress(zipped).decode())
        assert value(unzipped, "trio_ingest_delivered_total") == value(
            found, "trio_ingest_delivered_total")
        status, headers, _ = await get(endpoint.port, "/metrics", accept_encoding="gzip;q=0")
        assert "content-encoding" not in headers
        tg.cancel_scope.cancel()


async def test_idle_keep_alive_connections_do_not_lock_out_scrapes() -> None:
    from trio_ingest.observe._server import MAX_CONNECTIONS

    graph = fan_out_graph(10, rate=None)
    async with anyio.create_task_group() as tg:
        endpoint = await tg.start(ti.observe.serve_metrics, graph, 0)
        idle = []
        try:
            for _ in range(MAX_CONNECTIONS):
                stream = await anyio.connect_tcp("127.0.0.1", endpoint.port)
                idle.append(stream)
                await stream.send(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                with anyio.fail_after(10):
                    head = await stream.receive()
                assert head.startswith(b"HTTP/1.1 200"), head  # kept alive: now idle
            for _ in range(3):
                status, _, body = await get(endpoint.port, "/metrics")
                assert status == 200 and b"trio_ingest_running" in body
            # the longest-idle connection was closed to make room
            with anyio.fail_after(10):
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    await idle[0].receive()
        finally:
            for stream in idle:
                await stream.aclose()
        tg.cancel_scope.cancel()


def test_backpressure_is_waiting_senders_and_share_of_time_full() -> None:
    import trio
    import trio.testing
    from prometheus_client import CollectorRegistry, generate_latest

    async def main() -> None:
        pipeline = ti.Pipeline(ti.sources.from_iterable([]), sink=ti.testing.HangingSink(),
                               capacity=1, max_batch=1)
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(pipeline.serve)
            for i in range(4):  # one in the sink's hands, one in the edge, two waiting
                nursery.start_soon(handle.send, i)
            (edge_name,) = handle.report().edges
            while handle.report().edges[edge_name].waiting_senders < 2:
                await trio.lowlevel.checkpoint()
            await trio.sleep(10)  # virtual time: two senders wait for 10 s
            snap = ti.observe.snapshot(handle)
            edge = snap["edges"][edge_name]
            elapsed = snap["elapsed"]
            assert edge["full_seconds"] == pytest.approx(10, abs=0.01)
            assert edge["blocked_seconds"] == pytest.approx(20, abs=0.02)
            assert edge["average_waiting_senders"] == pytest.approx(20 / elapsed)
            assert edge["full_share"] == pytest.approx(10 / elapsed)
            assert 0 < edge["full_share"] <= 1
            registry = CollectorRegistry()
            registry.register(ti.observe.PrometheusCollector(handle))
            found = samples(generate_latest(registry).decode())
            assert value(found, "trio_ingest_edge_full_seconds_total", edge=edge_name) == (
                pytest.approx(edge["full_seconds"], abs=0.01))
            nursery.cancel_scope.cancel()

    run_with_mock_clock(main)


async def test_history_keeps_the_last_minutes_on_the_server() -> None:
    import json

    from trio_ingest.observe._server import HISTORY_INTERVAL, HISTORY_SECONDS, _Server
    from trio_ingest.observe._snapshot import PipelineView

    graph = fan_out_graph(100, rate=None)
    server = _Server(PipelineView(graph))
    assert server.history.maxlen == HISTORY_SECONDS / HISTORY_INTERVAL + 1
    await graph.run()
    async with anyio.create_task_group() as tg:
        endpoint = await tg.start(ti.observe.serve_metrics, graph, 0)
        with anyio.fail_after(10):
            while True:  # the sampler runs from the start, without any page open
                status, _, body = await get(endpoint.port, "/api/history")
                points = json.loads(body)
                if points:
                    break
                await anyio.sleep(0.05)
        assert status == 200
        point = points[-1]
        assert point["delivered"] == graph.report().delivered  # type: ignore[union-attr]
        assert set(point["edges"]) == set(graph.report().edges)  # type: ignore[union-attr]
        assert {"blocked_seconds", "full_seconds"} <= set(next(iter(point["edges"].values())))
        tg.cancel_scope.cancel()


async def test_the_handle_names_its_edge_and_no_placeholder_source_shows() -> None:
    sink = ti.sinks.Memory()
    pipeline = ti.Pipeline(ti.sources.from_iterable([]), ti.map(lambda p: p), sink=sink)
    async with anyio.create_task_group() as tg:
        handle = await tg.start(pipeline.serve)
        await handle.send_batch(list(range(5)))
        with anyio.fail_after(10):
            while len(sink.events) < 5:  # noqa: ASYNC110 -- polls what the pipeline does
                await anyio.sleep(0.01)
        assert set(handle.report().edges) == {"handle->map", "map->memory"}
        snap = ti.observe.snapshot(handle)
        assert [n["name"] for n in snap["graph"]["nodes"]] == ["handle", "map", "memory"]
        assert {(link["from"], link["to"], link["edge"]) for link in snap["graph"]["links"]} == {
            ("handle", "map", "handle->map"), ("map", "memory", "map->memory")}
        assert set(snap["nodes"]) == {"handle", "map", "memory"}
        assert "source" not in snap["sources"]
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry()
        registry.register(ti.observe.PrometheusCollector(handle))
        text = generate_latest(registry).decode()
        assert 'node="source"' not in text and 'source="source"' not in text
        assert 'edge="handle->map"' in text
        await handle.stop()
        tg.cancel_scope.cancel()


async def test_a_real_source_next_to_the_handle_stays_visible() -> None:
    sink = ti.sinks.Memory()
    pipeline = ti.Pipeline(ti.sources.from_iterable(range(3), name="numbers"),
                           ti.map(lambda p: p), sink=sink)
    async with anyio.create_task_group() as tg:
        handle = await tg.start(pipeline.serve)
        assert "numbers->map" in handle.report().edges
        names = [n["name"] for n in ti.observe.snapshot(handle)["graph"]["nodes"]]
        assert names == ["handle", "numbers", "map", "memory"]
        await handle.stop()
        tg.cancel_scope.cancel()
    # run, not served: an empty source is just an empty source
    empty = ti.Pipeline(ti.sources.from_iterable([]), sink=ti.sinks.Memory())
    await empty.run()
    assert [n["name"] for n in ti.observe.snapshot(empty)["graph"]["nodes"]] == [
        "source", "memory"]


async def test_promtool_accepts_the_exposition() -> None:
    import shutil
    import subprocess

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (it ships with Prometheus)")
    graph = fan_out_graph(50, rate=None)
    await graph.run()
    async with anyio.create_task_group() as tg:
        endpoint = await tg.start(ti.observe.serve_metrics, graph, 0)
        status, _, body = await get(endpoint.port, "/metrics")
        tg.cancel_scope.cancel()
    assert status == 200
    checked = await anyio.to_thread.run_sync(
        lambda: subprocess.run([promtool, "check", "metrics"], input=body,
                               capture_output=True, timeout=60, check=False)
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
