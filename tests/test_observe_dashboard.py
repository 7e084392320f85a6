"""The dashboard in a real browser: headless Chromium driven over the DevTools protocol.

Needs Debian's ``chromium`` (``apt-get install -y chromium``) and the
``websockets`` package. Without Chromium the test skips, except under
``CI=true`` where it fails. Screenshots land in ``tests/artifacts/``; with
``TRIO_INGEST_DOCS_SCREENSHOTS=1`` they are also copied to ``docs/`` (the
docs' pictures).
"""

from __future__ import annotations

import base64
import contextlib
import io
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import anyio
import pytest

import trio_ingest as ti

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
)


def find_chromium() -> str:
    """Path of the Chromium binary; skip (fail under CI=true) when there is none."""
    for name in CHROMIUM_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    message = "Chromium is not installed (apt-get install -y chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI requires it", pytrace=False)
    pytest.skip(message)


class Chromium:
    """A headless Chromium with a fresh profile, driven through one page's DevTools socket."""

    def __init__(self, binary: str, width: int = 1400, height: int = 900) -> None:
        from websockets.sync.client import connect

        self.profile = tempfile.mkdtemp(prefix="trio-ingest-chromium-")
        self.process = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self._ids = itertools.count(1)
        self._stack = contextlib.ExitStack()
        try:
            port = self._devtools_port()
            page = self._page_socket(port)
            self.socket = self._stack.enter_context(connect(page, max_size=None, open_timeout=10))
            self.call("Page.enable")
            self.call("Runtime.enable")
            self.resize(width, height)
        except BaseException:
            self.close()
            raise

    def _devtools_port(self) -> int:
        marker = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.process.returncode}")
            if marker.exists():
                text = marker.read_text().split()
                if text:
                    return int(text[0])
            time.sleep(0.05)
        raise TimeoutError("chromium did not open its DevTools port in 20 s")

    @staticmethod
    def _page_socket(port: int) -> str:
        deadline = time.monotonic() + 10
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                targets = json.loads(r.read())
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                return str(pages[0]["webSocketDebuggerUrl"])
            if time.monotonic() > deadline:
                raise TimeoutError("chromium shows no page target")
            time.sleep(0.05)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and wait for its answer (events are skipped)."""
        ident = next(self._ids)
        self.socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=30))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))

    def resize(self, width: int, height: int) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} raised: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {timeout} s: {expression}")
            time.sleep(0.1)

    def screenshot(self, path: Path, *, full_page: bool = True) -> None:
        if full_page:
            width = int(self.evaluate("document.documentElement.scrollWidth"))
            height = int(self.evaluate("document.documentElement.scrollHeight"))
            self.resize(width, height)
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        self._stack.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


def _publish(path: Path) -> None:
    """Copy an artifact to docs/ when asked to refresh the docs' pictures."""
    if os.environ.get("TRIO_INGEST_DOCS_SCREENSHOTS") == "1":
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copy(path, ROOT / "docs" / path.name)


def demo_graph() -> ti.Graph:
    """Fan-out to three sinks, one slow (backpressure) and one failing (dead letters)."""
    graph = ti.Graph(dead_letter=ti.sinks.Memory(), capacity=2_000, max_batch=128)
    graph.add_source(ti.sources.synthetic(None, rate=4_000, seed=7), name="orders")
    graph.add_stage(ti.map(lambda p: {**p, "amount": round(p["value"] * 100, 2)}),
                    inputs="orders", name="parse")
    graph.add_stage(ti.filter(lambda p: p["value"] > 0.05), inputs="parse", name="valid")
    graph.add_sink(
        ti.testing.FlakySink(ti.sinks.Memory(), latency=(0.02, 0.03), seed=1, max_batch=64),
        inputs="valid", name="warehouse",
    )
    graph.add_sink(ti.sinks.Null(), inputs="valid", name="archive")
    graph.add_sink(
        ti.testing.PoisonSink({str(i) for i in range(0, 10_000_000, 50)}, ti.sinks.Null()),
        inputs="valid", name="audit",
    )
    return graph


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_dashboard_in_chromium(anyio_backend: str) -> None:
    binary = find_chromium()
    pytest.importorskip("websockets", reason="the DevTools client needs websockets")
    graph = demo_graph()
    shot = ARTIFACTS / "dashboard.png"
    seen: dict[str, Any] = {}

    def drive(url: str) -> None:
        # the server samples from the start: wait until it holds a few seconds of history
        deadline = time.monotonic() + 30
        while len(json.loads(urllib.request.urlopen(url + "api/history").read())) < 3:
            assert time.monotonic() < deadline, "the server kept no history"
            time.sleep(0.2)  # a thread polling a real server: no event to wait on
        browser = Chromium(binary)
        try:
            browser.navigate(url)
            # four polls: rates come from successive snapshots, charts have lines
            # (a longer run for the docs' picture, so the charts show a history)
            polls = 40 if os.environ.get("TRIO_INGEST_DOCS_SCREENSHOTS") == "1" else 4
            browser.wait_for(
                f"!!document.body && Number(document.body.getAttribute('data-updates')) >= {polls}",
                timeout=polls * 1.5 + 15,
            )
            seen["text"] = browser.evaluate("document.body.textContent")
            seen["rates"] = browser.evaluate(
                "Array.from(document.querySelectorAll('[data-node-rate]'))"
                ".map(e => [e.parentNode.getAttribute('data-node'),"
                " parseFloat(e.getAttribute('data-node-rate'))])"
            )
            seen["state"] = browser.evaluate("document.getElementById('state').textContent")
            # the charts start with what the server kept before the page opened
            seen["history"] = browser.evaluate("Number(document.body.getAttribute('data-history'))")
            # every edge label is on top: the topmost element at its centre is the label
            seen["hidden_labels"] = browser.evaluate(
                "Array.from(document.querySelectorAll('svg .depth-label')).filter(t => {"
                " const r = t.getBoundingClientRect();"
                " const hit = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);"
                " return hit !== t; }).map(t => t.textContent)"
            )
            seen["backpressure"] = browser.evaluate(
                "Array.from(document.querySelectorAll('[data-edge-full]'))"
                ".map(e => [parseFloat(e.getAttribute('data-edge-full')),"
                " parseFloat(e.getAttribute('data-edge-waiting'))])"
            )
            browser.screenshot(shot)
        finally:
            browser.close()

    with ti_logging_quiet():
        async with anyio.create_task_group() as tg:
            endpoint = await tg.start(ti.observe.serve_metrics, graph, 0)
            tg.start_soon(graph.run)
            await anyio.to_thread.run_sync(drive, endpoint.url)
            tg.cancel_scope.cancel()

    for name in ("orders", "parse", "valid", "warehouse", "archive", "audit", "dead_letter"):
        assert name in seen["text"], name
    rates = dict(seen["rates"])
    assert rates["orders"] > 0
    assert rates["warehouse"] > 0
    assert seen["state"] == "running"
    assert seen["history"] >= 2
    assert seen["hidden_labels"] == []
    # the slow warehouse sink fills its edge: shown as a share of time (<= 100%)
    assert seen["backpressure"]
    assert all(0 < full <= 1 and waiting >= 0 for full, waiting in seen["backpressure"])
    assert shot.stat().st_size > 10_000
    _publish(shot)


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_top_screenshot(anyio_backend: str) -> None:
    """``top``'s frame exported by rich as SVG, photographed by Chromium (docs/top.png)."""
    binary = find_chromium()
    pytest.importorskip("websockets", reason="the DevTools client needs websockets")
    from rich.console import Console

    from trio_ingest.cli._top import render

    graph = demo_graph()
    with ti_logging_quiet():
        async with anyio.create_task_group() as tg:
            tg.start_soon(graph.run)
            await anyio.sleep(2.0)
            first = ti.observe.snapshot(graph)
            await anyio.sleep(1.0)
            second = ti.observe.snapshot(graph)
            tg.cancel_scope.cancel()

    console = Console(record=True, width=132, file=io.StringIO())
    console.print(render(second, first, url="http://127.0.0.1:9464/"))
    text = console.export_text(clear=False)
    svg = console.export_svg(title="trio-ingest top")
    svg = re.sub(r"url\([^)]*\)\s*format\([^)]*\),?", "", svg)  # no web fonts: offline
    for name in ("orders", "warehouse", "audit", "dead_letter ", "valid->warehouse", "p99"):
        assert name in text, name  # nothing cropped
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    svg_path = ARTIFACTS / "top.svg"
    svg_path.write_text(svg, encoding="utf-8")
    html = ARTIFACTS / "top.html"
    html.write_text(
        "<!doctype html><html><body style='margin:0;background:#fff'>"
        f"<img id='top' src='{svg_path.name}' style='display:block;width:1200px'></body></html>",
        encoding="utf-8",
    )
    shot = ARTIFACTS / "top.png"

    def photograph() -> None:
        browser = Chromium(binary, width=1200, height=700)
        try:
            browser.navigate(html.as_uri())
            browser.wait_for("document.getElementById('top') && document.getElementById('top')"
                             ".complete && document.getElementById('top').naturalWidth > 0")
            height = int(browser.evaluate("document.getElementById('top').height"))
            browser.resize(1200, height)
            browser.screenshot(shot, full_page=False)
        finally:
            browser.close()

    await anyio.to_thread.run_sync(photograph)
    assert shot.stat().st_size > 10_000
    _publish(shot)


class ti_logging_quiet:
    """Keep the dead-letter warnings of the failing demo sink out of the test output."""

    def __enter__(self) -> None:
        import logging

        self.logger = logging.getLogger("trio_ingest")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc_info: object) -> None:
        self.logger.setLevel(self.level)
